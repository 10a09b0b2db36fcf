"""FGSM: it raises the loss, stays within epsilon and the input range, and mixes into a batch."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimass.spec import Adversarial
from aimass_trainer.adversarial import adversarial_step_fn, fgsm, mix_adversarial


@pytest.fixture(scope="module")
def trained() -> tuple[keras.Model, tf.Tensor, tf.Tensor]:
    """A tiny classifier that has learnt two bright/dark classes well."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=64).astype("int32")
    centres = np.where(labels[:, None, None, None] == 1, 0.7, 0.3)
    images = np.clip(centres + rng.normal(0, 0.05, size=(64, 8, 8, 1)), 0, 1).astype("float32")
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=10, verbose=0)
    return model, tf.constant(images), tf.constant(labels)


LOSS = keras.losses.SparseCategoricalCrossentropy()


def test_fgsm_raises_the_loss_on_the_batch(trained: tuple) -> None:
    model, images, labels = trained

    attacked = fgsm(model, LOSS, images, labels, epsilon=0.1, clip=(0.0, 1.0))

    before = float(LOSS(labels, model(images)))
    after = float(LOSS(labels, model(attacked)))
    assert after > before * 1.5


def test_fgsm_moves_each_value_by_at_most_epsilon_within_the_range(trained: tuple) -> None:
    model, images, labels = trained

    attacked = fgsm(model, LOSS, images, labels, epsilon=0.2, clip=(0.0, 1.0)).numpy()

    assert np.abs(attacked - images.numpy()).max() <= 0.2 + 1e-6
    assert attacked.min() >= 0.0 and attacked.max() <= 1.0


def test_mixing_replaces_only_the_configured_fraction_of_a_batch(trained: tuple) -> None:
    model, images, labels = trained

    mixed = mix_adversarial(
        model, LOSS, images[:10], labels[:10], epsilon=0.1, fraction=0.3, clip=(0.0, 1.0)
    ).numpy()

    changed = [not np.array_equal(m, i) for m, i in zip(mixed, images[:10].numpy(), strict=True)]
    assert changed == [True] * 3 + [False] * 7


def test_mixing_works_inside_a_traced_train_step_with_any_batch_size(trained: tuple) -> None:
    model, images, labels = trained
    step = adversarial_step_fn(Adversarial(epsilon=0.1, fraction=0.5), clip=(0.0, 1.0))
    assert step is not None

    @tf.function(reduce_retracing=True)
    def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return step(model, LOSS, x, y)

    for size in (8, 5):
        out = train_step(images[:size], labels[:size])
        assert out.shape == (size, 8, 8, 1)
        assert not np.array_equal(out.numpy()[0], images.numpy()[0])


def test_a_fraction_of_zero_leaves_the_batch_alone(trained: tuple) -> None:
    model, images, labels = trained

    mixed = mix_adversarial(model, LOSS, images, labels, epsilon=0.1, fraction=0.0)

    np.testing.assert_array_equal(mixed.numpy(), images.numpy())
    assert adversarial_step_fn(None, clip=(0.0, 1.0)) is None
    assert adversarial_step_fn(Adversarial(fraction=0.0), clip=(0.0, 1.0)) is None


def test_the_attack_leaves_batchnorm_statistics_alone() -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.BatchNormalization(), keras.layers.Flatten(),
         keras.layers.Dense(2, "softmax")]
    )
    moving_mean = model.layers[0].moving_mean.numpy().copy()
    images = tf.random.uniform((8, 4, 4, 1), 0.5, 1.0, seed=1)

    fgsm(model, LOSS, images, tf.zeros(8, tf.int32), epsilon=0.1)

    np.testing.assert_array_equal(model.layers[0].moving_mean.numpy(), moving_mean)
