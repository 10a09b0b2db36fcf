"""Adversarial examples made against the current model, for adversarial training.

Public:
- `fgsm(model, loss_fn, images, labels, epsilon, clip=(lo, hi)) -> images`: the fast gradient
  sign method (Goodfellow et al., 2015): one step of size `epsilon` along the sign of the loss
  gradient with respect to the input, clipped to the valid input range.
- `mix_adversarial(model, loss_fn, images, labels, *, epsilon, fraction, clip) -> images`:
  replaces the first `round(fraction * batch)` images of a batch with their FGSM versions.
- `adversarial_step_fn(adversarial_spec, clip) -> fn(model, loss_fn, images, labels) | None`:
  the above bound to a job's `augmentation.adversarial` (None when it is off).

All three are plain TensorFlow and can be called inside a `tf.function` train step, also in a
distribution strategy's replica context. Call them BEFORE opening the train step's own
GradientTape: the result carries no gradient (it is a constant input to the step), and the
model is run in inference mode (`training=False`), so BatchNorm statistics and dropout are not
disturbed by the attack. Batches are shuffled, so perturbing the first part of each batch picks
a random part of the data.

`loss_fn(labels, predictions)` must return the loss (any reduction: only the gradient's sign is
used), e.g. `keras.losses.SparseCategoricalCrossentropy()`. The model's output may be float16
under mixed precision; the images and the result stay float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from aimass.spec import Adversarial

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def fgsm(
    model: Any,
    loss_fn: LossFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    epsilon: float | tf.Tensor,
    clip: tuple[float, float] = (0.0, 1.0),
) -> tf.Tensor:
    """`images + epsilon * sign(d loss / d images)`, clipped to `clip`; no gradient flows back."""
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        predictions = model(images, training=False)
        loss = loss_fn(labels, tf.cast(predictions, tf.float32))
    gradient = tape.gradient(loss, images)
    perturbed = images + tf.cast(epsilon, tf.float32) * tf.sign(gradient)
    low, high = clip
    return tf.stop_gradient(tf.clip_by_value(perturbed, low, high))


def mix_adversarial(
    model: Any,
    loss_fn: LossFn,
    images: tf.Tensor,
    labels: tf.Tensor,
    *,
    epsilon: float,
    fraction: float,
    clip: tuple[float, float] = (0.0, 1.0),
) -> tf.Tensor:
    """The batch with its first `round(fraction * batch_size)` images replaced by FGSM ones.

    Labels are unchanged (an adversarial example keeps its true label). Works with a batch size
    known only at run time, and with a count of 0 (the batch comes back as it is).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, received {fraction}")
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    if fraction == 0.0:
        return images
    size = tf.shape(images)[0]
    count = tf.cast(tf.round(fraction * tf.cast(size, tf.float32)), tf.int32)
    attacked = fgsm(
        model, loss_fn, images[:count], labels[:count], epsilon=epsilon, clip=clip
    )
    return tf.concat([attacked, images[count:]], axis=0)


def adversarial_step_fn(
    adversarial: Adversarial | None, clip: tuple[float, float]
) -> Callable[[Any, LossFn, tf.Tensor, tf.Tensor], tf.Tensor] | None:
    """`fn(model, loss_fn, images, labels) -> images` for the job's settings, or None when off.

    `clip` is the model's input range: `aimass_trainer.augment.value_range(augmentation)`, or
    `DataBundle.value_range`.
    """
    if adversarial is None or adversarial.fraction == 0.0:
        return None
    epsilon, fraction = float(adversarial.epsilon), float(adversarial.fraction)

    def step(model: Any, loss_fn: LossFn, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        return mix_adversarial(
            model, loss_fn, images, labels, epsilon=epsilon, fraction=fraction, clip=clip
        )

    return step
