"""Random image transforms from the `augmentation` spec, run inside the tf.data pipeline.

Public: `Augmenter(augmentation, implementation="layers")` - call it as `augmenter(images, seed)`
on a batch; `geometric_transforms(...)` - the per-image affine matrices (a pure function);
`build_layers(augmentation)` - the equivalent Keras 3 preprocessing layers; `value_range(aug)`
- the range of the model's inputs; `augmentation_is_identity`, `has_geometry`, `describe`.

Images come in as pixel values in [0, 255] (uint8 or float) and go out as float32 in
[0, 255 * rescale]: the geometric transforms (rotation, shift, zoom, shear, flips) first, then
brightness and contrast, then a clip and the rescale.

Two implementations give the same kinds of transform with the same ranges:
- "layers" (the default) chains the Keras preprocessing layers (RandomRotation,
  RandomTranslation, RandomZoom, RandomShear, RandomFlip, RandomBrightness, RandomContrast): the
  well-kept library, one full pass over the float batch each.
- "fused" (`augmentation.fusedWarp: true`) composes rotation, shifts, zoom, shear and flips
  into ONE affine matrix per image and warps the uint8 batch once (`ImageProjectiveTransformV3`,
  bilinear), as ImageDataGenerator does one `affine_transform` per image; brightness and
  contrast are then one elementwise pass. Several times faster than the layers on a CPU at
  224 px (see `python -m bench.pipeline`); interpolating once blurs less than five warps in a
  row.

Determinism: nothing uses a stateful generator (inside a parallel `Dataset.map` the order in
which batches advance a shared generator is not fixed). Each batch arrives with its own seed,
drawn by the pipeline from the job's seed, and every random draw is a stateless function of it,
so the same seed gives the same transforms, in parallel or not, on every run.
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
    """A stand-in for a Keras layer's SeedGenerator that derives every seed from one tensor.

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


def _uniform(seed: tf.Tensor, salt: int, batch: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """One value per image in [low, high), a stateless function of (seed, salt)."""
    derived = tf.random.experimental.stateless_fold_in(seed, salt)
    return tf.random.stateless_uniform([batch], derived, minval=low, maxval=high)


def _flip_signs(seed: tf.Tensor, salt: int, batch: tf.Tensor, enabled: bool) -> tf.Tensor:
    """-1 for the images that are flipped (about half of them), else 1."""
    if not enabled:
        return tf.ones([batch])
    return tf.where(_uniform(seed, salt, batch, 0.0, 1.0) < 0.5, -1.0, 1.0)


def augmentation_is_identity(augmentation: Augmentation) -> bool:
    """True when no random transform is configured (only the rescale applies)."""
    aug = augmentation
    return not (has_geometry(aug) or aug.brightness_range or aug.contrast_range)


def has_geometry(augmentation: Augmentation) -> bool:
    aug = augmentation
    return bool(
        aug.rotation_range or aug.width_shift_range or aug.height_shift_range or aug.zoom_range
        or aug.shear_range or aug.horizontal_flip or aug.vertical_flip
    )


def geometric_transforms(
    augmentation: Augmentation, batch: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
    seed: tf.Tensor,
) -> tf.Tensor:
    """Per-image transforms [batch, 8] for `ImageProjectiveTransformV3`.

    Each maps an output pixel (x, y) to the input point it is read from:
    p_in = A (p - c) + c + t, with c the image centre, t the shift and
    A = rotation @ shear @ zoom @ flip. With no transform configured, A is the identity.
    """
    aug = augmentation
    seed = tf.cast(seed, tf.int64)
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    angle = _uniform(seed, 1, batch, -1.0, 1.0) * math.radians(aug.rotation_range)
    shift_x = _uniform(seed, 2, batch, -1.0, 1.0) * aug.width_shift_range * width
    shift_y = _uniform(seed, 3, batch, -1.0, 1.0) * aug.height_shift_range * height
    zoom_x = _uniform(seed, 4, batch, 1.0 - aug.zoom_range, 1.0 + aug.zoom_range)
    zoom_y = _uniform(seed, 5, batch, 1.0 - aug.zoom_range, 1.0 + aug.zoom_range)
    shear = tf.tan(_uniform(seed, 6, batch, -1.0, 1.0) * math.radians(aug.shear_range))
    scale_x = zoom_x * _flip_signs(seed, 7, batch, aug.horizontal_flip)
    scale_y = zoom_y * _flip_signs(seed, 8, batch, aug.vertical_flip)

    # A = R(angle) @ [[1, shear], [0, 1]] @ diag(scale_x, scale_y), multiplied out.
    cos, sin = tf.cos(angle), tf.sin(angle)
    a00, a01 = cos * scale_x, scale_y * (cos * shear - sin)
    a10, a11 = sin * scale_x, scale_y * (sin * shear + cos)
    centre_x, centre_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    offset_x = centre_x - a00 * centre_x - a01 * centre_y + shift_x
    offset_y = centre_y - a10 * centre_x - a11 * centre_y + shift_y
    zeros = tf.zeros([batch])
    return tf.stack([a00, a01, offset_x, a10, a11, offset_y, zeros, zeros], axis=1)


class Augmenter:
    """Applies the configured transforms to a batch: `augmenter(images, seed) -> images`.

    `images` is [batch, height, width, channels], uint8 or float with values in [0, 255];
    `seed` an integer tensor of shape [2]. The result is float32 in `value_range(augmentation)`.
    Use it inside `Dataset.map(..., num_parallel_calls=...)` after batching.
    """

    IMPLEMENTATIONS = ("fused", "layers")

    def __init__(self, augmentation: Augmentation, *, implementation: str = "layers") -> None:
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {self.IMPLEMENTATIONS}, "
                f"received {implementation!r}"
            )
        self.augmentation = augmentation
        self.implementation = implementation
        # Keras layers cost a second or so to create; the fused path does without them.
        self.layers = build_layers(augmentation) if implementation == "layers" else []
        self.scale = float(augmentation.rescale)

    @property
    def is_identity(self) -> bool:
        return augmentation_is_identity(self.augmentation)

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        seed = tf.cast(seed, tf.int64)
        if self.implementation == "layers":
            return self._with_layers(images, seed)
        return self._fused(images, seed)

    def _with_layers(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        images = tf.cast(images, tf.float32)
        for salt, layer in enumerate(self.layers, start=1):
            generator = _StatelessSeed(seed, salt)
            transformation = layer.get_random_transformation(
                images, training=True, seed=generator
            )
            images = layer.transform_images(images, transformation, training=True)
        return self.finish(images)

    def _fused(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        aug = self.augmentation
        shape = tf.shape(images)
        batch = shape[0]
        if has_geometry(aug):
            # NB: the warp runs on the uint8 batch when that is what arrives: a quarter of the
            # memory traffic of float32, and bilinear interpolation rounds back to pixel values.
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images,
                transforms=geometric_transforms(aug, batch, shape[1], shape[2], seed),
                output_shape=shape[1:3],
                fill_value=tf.constant(0.0),
                interpolation="BILINEAR",
                fill_mode=FILL_MODE.upper(),
            )
        images = tf.cast(images, tf.float32)
        if aug.brightness_range:
            delta = _uniform(seed, 20, batch, -aug.brightness_range, aug.brightness_range)
            images = images + 255.0 * delta[:, None, None, None]
            if aug.contrast_range:
                # The contrast's mean is that of the brightened image; `finish` clips otherwise.
                images = tf.clip_by_value(images, 0.0, 255.0)
        if aug.contrast_range:
            factor = _uniform(seed, 21, batch, 1.0 - aug.contrast_range, 1.0 + aug.contrast_range)
            mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
            images = (images - mean) * factor[:, None, None, None] + mean
        return self.finish(images)

    def finish(self, images: tf.Tensor) -> tf.Tensor:
        """Clip to pixel range and rescale: what validation images get instead of augmentation."""
        images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
        return images * tf.constant(self.scale, tf.float32)


def describe(augmentation: Augmentation) -> dict[str, Any]:
    """The non-default transforms, for logs and metrics.json."""
    return augmentation.model_dump(exclude_defaults=True, by_alias=True, mode="json")
