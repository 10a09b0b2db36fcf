"""Augmentation from the spec: layers, shapes, value ranges and determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from aimass.spec import Augmentation
from aimass_trainer.augment import Augmenter, build_layers, geometric_transforms, value_range

EVERYTHING = Augmentation(
    rotation_range=30,
    width_shift_range=0.1,
    height_shift_range=0.1,
    zoom_range=0.2,
    shear_range=15,
    horizontal_flip=True,
    vertical_flip=True,
    brightness_range=0.2,
    contrast_range=0.3,
)


def _images(batch: int = 6, size: int = 16, channels: int = 3) -> tf.Tensor:
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(0, 255, size=(batch, size, size, channels)), tf.float32)


def _seed(a: int, b: int = 0) -> tf.Tensor:
    return tf.constant([a, b], tf.int64)


IMPLEMENTATIONS = pytest.mark.parametrize("implementation", Augmenter.IMPLEMENTATIONS)


def test_no_transform_is_configured_by_default() -> None:
    assert build_layers(Augmentation()) == []
    assert Augmenter(Augmentation()).is_identity
    assert not Augmenter(Augmentation(contrast_range=0.1)).is_identity


def test_without_geometric_transforms_every_matrix_is_the_identity() -> None:
    matrices = geometric_transforms(Augmentation(brightness_range=0.5), 4, 16, 16, _seed(1))

    np.testing.assert_allclose(matrices.numpy(), [[1, 0, 0, 0, 1, 0, 0, 0]] * 4, atol=1e-6)


def test_a_vertical_flip_maps_each_row_to_its_mirror_row() -> None:
    matrices = geometric_transforms(Augmentation(vertical_flip=True), 32, 10, 8, _seed(2))

    rows = {tuple(np.round(m, 4)) for m in matrices.numpy()}
    # Flipped: y_in = -y + 9 (height 10); kept: the identity. Both occur in 32 draws.
    assert rows == {(1, 0, 0, 0, -1, 9, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0)}


def test_geometric_parameters_stay_within_their_ranges() -> None:
    augmentation = Augmentation(zoom_range=0.2, width_shift_range=0.25)

    matrices = geometric_transforms(augmentation, 256, 8, 20, _seed(3)).numpy()

    zoom_x, zoom_y = matrices[:, 0], matrices[:, 4]
    shift_x = matrices[:, 2] - (1 - zoom_x) * 9.5
    assert 0.8 <= zoom_x.min() and zoom_x.max() <= 1.2 and zoom_y.max() <= 1.2
    assert np.abs(shift_x).max() <= 0.25 * 20 + 1e-4
    assert np.abs(shift_x).max() > 0.2 * 20


def test_each_configured_transform_becomes_one_named_layer() -> None:
    names = [layer.name for layer in build_layers(EVERYTHING)]

    assert names == [
        "rotation", "translation", "zoom", "shear", "flip", "brightness", "contrast"
    ]


@IMPLEMENTATIONS
@pytest.mark.parametrize("dtype", [tf.uint8, tf.float32])
@pytest.mark.parametrize("channels", [1, 3])
def test_augmented_batches_keep_their_shape_and_become_float32(
    channels: int, dtype: tf.DType, implementation: str
) -> None:
    images = tf.cast(_images(channels=channels), dtype)

    out = Augmenter(EVERYTHING, implementation=implementation)(images, _seed(1))

    assert out.shape == images.shape
    assert out.dtype == tf.float32


@IMPLEMENTATIONS
@pytest.mark.parametrize("rescale", [1.0 / 255.0, 1.0 / 127.5, 1.0])
def test_values_stay_within_the_rescaled_pixel_range(rescale: float, implementation: str) -> None:
    augmentation = EVERYTHING.model_copy(update={"rescale": rescale})
    low, high = value_range(augmentation)

    out = Augmenter(augmentation, implementation=implementation)(_images(), _seed(2)).numpy()

    assert out.min() >= low
    assert out.max() <= high + 1e-5
    assert high == pytest.approx(255.0 * rescale)


@IMPLEMENTATIONS
def test_the_same_seed_gives_the_same_transforms(implementation: str) -> None:
    augmenter = Augmenter(EVERYTHING, implementation=implementation)

    first = augmenter(_images(), _seed(7)).numpy()
    again = Augmenter(EVERYTHING, implementation=implementation)(_images(), _seed(7)).numpy()

    np.testing.assert_array_equal(first, again)


@IMPLEMENTATIONS
def test_another_seed_gives_other_transforms(implementation: str) -> None:
    augmenter = Augmenter(EVERYTHING, implementation=implementation)

    first = augmenter(_images(), _seed(7)).numpy()
    other = augmenter(_images(), _seed(8)).numpy()

    assert not np.allclose(first, other)


@IMPLEMENTATIONS
def test_images_of_one_batch_get_different_transforms(implementation: str) -> None:
    same = tf.repeat(_images(batch=1), 8, axis=0)

    out = Augmenter(EVERYTHING, implementation=implementation)(same, _seed(3)).numpy()

    assert len({image.tobytes() for image in out}) > 1


@IMPLEMENTATIONS
def test_a_horizontal_flip_only_mirrors_or_keeps_each_image(implementation: str) -> None:
    images = _images(batch=16)
    augmentation = Augmentation(horizontal_flip=True, rescale=1.0)

    out = Augmenter(augmentation, implementation=implementation)(images, _seed(4)).numpy()

    mirrored = images.numpy()[:, :, ::-1, :]
    kept = [np.array_equal(o, i) for o, i in zip(out, images.numpy(), strict=True)]
    flipped = [np.array_equal(o, m) for o, m in zip(out, mirrored, strict=True)]
    assert all(k or f for k, f in zip(kept, flipped, strict=True))
    assert any(kept) and any(flipped)


def test_without_transforms_only_the_rescale_applies() -> None:
    images = _images()

    out = Augmenter(Augmentation(rescale=0.5))(tf.cast(images, tf.uint8), _seed(5))

    np.testing.assert_allclose(out.numpy(), np.floor(images.numpy()) * 0.5, rtol=1e-6)


@IMPLEMENTATIONS
def test_a_parallel_pipeline_augments_identically_on_every_run(implementation: str) -> None:
    augmenter = Augmenter(EVERYTHING, implementation=implementation)

    def run() -> np.ndarray:
        images = tf.data.Dataset.from_tensor_slices(_images(batch=32)).batch(4)
        seeds = tf.data.Dataset.random(seed=11).batch(2)
        pipeline = tf.data.Dataset.zip(images, seeds).map(
            augmenter, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        return np.concatenate([batch.numpy() for batch in pipeline])

    np.testing.assert_array_equal(run(), run())
