"""Random image transforms from the `augmentation` spec, built from Keras 3 preprocessing layers
and run inside the tf.data pipeline.

Public: `Augmenter(augmentation, seed=None)` - call it as `augmenter(images, seed)` on a batch;
`build_layers(augmentation)` - the layers, in the order they are applied; `value_range(aug)`.

Images come in as float32 pixel values in [0, 255] and go out in [0, 255 * rescale]: the
geometric transforms (rotation, shift, zoom, shear, flips) first, then brightness and contrast,
then a clip and the rescale.

Determinism: the layers are not called with their own stateful seed generators (inside a
parallel `Dataset.map` the order in which batches advance a shared generator is not fixed).
Instead each batch arrives with its own seed, drawn by the pipeline from the job's seed, and
every random draw of every layer is a stateless function of that seed. The same seed therefore
gives the same transforms, in parallel or not, on every run.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf
from keras import layers
from keras.random import SeedGenerator

from aimass.spec import Augmentation

# ImageDataGenerator's default, and less surprising than reflection for small shifts.
FILL_MODE = "nearest"


def value_range(augmentation: Augmentation) -> tuple[float, float]:
    """The range of the values the model sees: pixel values 0-255 times `rescale`."""
    return 0.0, 255.0 * augmentation.rescale


def build_layers(augmentation: Augmentation) -> list[keras.layers.Layer]:
    """The Keras preprocessing layers for the configured transforms, in order of application.

    An identity augmentation gives an empty list. Brightness and contrast act on 0-255 values.
    """
    aug = augmentation
    built: list[keras.layers.Layer] = []
    if aug.rotation_range:
        # Keras takes a fraction of a full turn.
        factor = aug.rotation_range / 360.0
        built.append(layers.RandomRotation(factor, fill_mode=FILL_MODE, name="rotation"))
    if aug.width_shift_range or aug.height_shift_range:
        built.append(
            layers.RandomTranslation(
                height_factor=aug.height_shift_range,
                width_factor=aug.width_shift_range,
                fill_mode=FILL_MODE,
                name="translation",
            )
        )
    if aug.zoom_range:
        zoom = (-aug.zoom_range, aug.zoom_range)
        built.append(
            layers.RandomZoom(
                height_factor=zoom, width_factor=zoom, fill_mode=FILL_MODE, name="zoom"
            )
        )
    if aug.shear_range:
        # The spec gives an angle, as ImageDataGenerator did; Keras takes the shear coefficient.
        coefficient = math.tan(math.radians(aug.shear_range))
        built.append(
            layers.RandomShear(
                x_factor=coefficient, y_factor=0.0, fill_mode=FILL_MODE, name="shear"
            )
        )
    flip = {
        (True, True): "horizontal_and_vertical",
        (True, False): "horizontal",
        (False, True): "vertical",
    }.get((aug.horizontal_flip, aug.vertical_flip))
    if flip:
        built.append(layers.RandomFlip(flip, name="flip"))
    if aug.brightness_range:
        built.append(
            layers.RandomBrightness(aug.brightness_range, value_range=(0, 255), name="brightness")
        )
    if aug.contrast_range:
        built.append(
            layers.RandomContrast(aug.contrast_range, value_range=(0, 255), name="contrast")
        )
    return built


class _StatelessSeed(SeedGenerator):
    """A stand-in for a layer's SeedGenerator that hands out seeds derived from one tensor.

    NB: every `next()` folds in a new counter value, so two draws in one layer (say the height
    and width of a translation) are independent; the counter advances while the graph is being
    traced, not while it runs, so the seeds are fixed functions of the batch seed.
    """

    def __init__(self, seed: tf.Tensor, salt: int) -> None:
        # Deliberately no super().__init__(): that would create a state variable.
        self._seed = seed
        self._salt = salt
        self._count = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        self._count += 1
        derived = tf.random.experimental.stateless_fold_in(self._seed, self._salt * 1000)
        return tf.random.experimental.stateless_fold_in(derived, self._count)


class Augmenter:
    """Applies the configured transforms to a batch: `augmenter(images, seed) -> images`.

    `images` is float32 [batch, height, width, channels] with values in [0, 255]; `seed` an int32
    or int64 tensor of shape [2]. The result is float32 in `value_range(augmentation)`.
    Use it inside `Dataset.map(..., num_parallel_calls=...)` after batching.
    """

    def __init__(self, augmentation: Augmentation) -> None:
        self.augmentation = augmentation
        self.layers = build_layers(augmentation)
        self.scale = float(augmentation.rescale)

    @property
    def is_identity(self) -> bool:
        return not self.layers

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        images = tf.cast(images, tf.float32)
        seed = tf.cast(seed, tf.int64)
        for salt, layer in enumerate(self.layers, start=1):
            generator = _StatelessSeed(seed, salt)
            transformation = layer.get_random_transformation(
                images, training=True, seed=generator
            )
            images = layer.transform_images(images, transformation, training=True)
        return self.finish(images)

    def finish(self, images: tf.Tensor) -> tf.Tensor:
        """Clip to pixel range and rescale: what validation images get instead of augmentation."""
        images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
        return images * tf.constant(self.scale, tf.float32)


def describe(augmentation: Augmentation) -> dict[str, Any]:
    """The non-default transforms, for logs and metrics.json."""
    return augmentation.model_dump(exclude_defaults=True, by_alias=True, mode="json")
