"""The networks: a small residual net and the keras.applications ResNets, each split into a
base (the `backbone`, a nested functional model that fine-tuning freezes as one piece) and a
classifier head.

Layer names are part of the API: fine-tuning freezes and unfreezes by name, and a later job
finds the base of an earlier job's `model.keras` as the layer called `backbone`. The small net
names its layers `stem_conv`, `stage1_block1_conv1`, `stage2_block1_shortcut_conv`, ...; the
applications keep Keras's own names (`conv2_block1_out`, ...). The head is `head_pool`,
`head_dropout`, `head_dense` and `head_softmax`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import keras

from aimass.spec import Architecture

BACKBONE = "backbone"
HEAD_PREFIX = "head_"

_APPLICATIONS = {
    Architecture.RESNET50: keras.applications.ResNet50,
    Architecture.RESNET101: keras.applications.ResNet101,
    Architecture.RESNET152: keras.applications.ResNet152,
    Architecture.RESNET50V2: keras.applications.ResNet50V2,
    Architecture.RESNET101V2: keras.applications.ResNet101V2,
    Architecture.RESNET152V2: keras.applications.ResNet152V2,
}

# keras.applications refuse smaller inputs.
_APPLICATIONS_MIN_SIZE = 32


class ModelError(ValueError):
    """A model cannot be built or loaded as asked; the message names the setting and value."""


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a Keras dtype policy (e.g. mixed_float16), then restore the old one.

    NB: Keras keeps the policy in a process-wide global; layers read it when constructed.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _residual_block(
    x: keras.KerasTensor, filters: int, stride: int, name: str
) -> keras.KerasTensor:
    """Two 3x3 convolutions with a shortcut; a 1x1 projection when the shape changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, kernel_initializer="he_normal",
            name=f"{name}_shortcut_conv",
        )(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)

    y = keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{name}_conv1",
    )(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
        name=f"{name}_conv2",
    )(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)

    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def small_resnet_base(
    input_shape: Sequence[int], blocks: Sequence[int], filters: Sequence[int]
) -> keras.Model:
    """The small residual base: a 7x7 stride-2 stem, BN, ReLU, 3x3 stride-2 max pool, then one
    stage per entry of `blocks`/`filters`; every stage after the first halves the resolution."""
    if len(blocks) != len(filters):
        raise ModelError(
            f"model.blocks and model.filters need one entry per stage: got blocks={list(blocks)} "
            f"and filters={list(filters)}"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Conv2D(
        filters[0], 7, strides=2, padding="same", use_bias=False,
        kernel_initializer="he_normal", name="stem_conv",
    )(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    for stage, (count, width) in enumerate(zip(blocks, filters, strict=True), start=1):
        for block in range(1, count + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _residual_block(x, width, stride, name=f"stage{stage}_block{block}")
    return keras.Model(inputs, x, name=BACKBONE)


def application_base(
    architecture: Architecture, input_shape: Sequence[int], weights: str | None
) -> keras.Model:
    """A keras.applications ResNet without its top, as the `backbone`.

    `weights` is None (random) or "imagenet"; imagenet weights are downloaded on first use and
    cached by Keras under ~/.keras/models. Grayscale inputs are repeated to three channels so
    that imagenet kernels fit.
    """
    height, width, channels = input_shape
    if min(height, width) < _APPLICATIONS_MIN_SIZE:
        raise ModelError(
            f"dataset.imageSize must be at least {_APPLICATIONS_MIN_SIZE} for "
            f"model.architecture={architecture.value}: got {[height, width]}"
        )
    inputs = keras.Input(shape=(height, width, channels), name="input")
    x = inputs
    if channels == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])

    # Built on our input tensor, the application's layers sit directly in the backbone (not
    # nested one level deeper), so "the top N layers" counts real layers.
    factory = _APPLICATIONS[architecture]
    try:
        core = factory(include_top=False, weights=weights, input_tensor=x)
    except Exception as error:  # noqa: BLE001 - Keras's download raises a bare Exception.
        if weights is None:
            raise
        raise ModelError(
            f"model.weights=imagenet: the {architecture.value} weights could not be downloaded "
            f"({error}); the job stops. Use weights: none, an s3:// model, or pre-fill "
            "~/.keras/models where there is no internet."
        ) from error
    # TODO: imagenet weights expect keras.applications' own preprocessing (caffe / [-1, 1]);
    # the pipeline's `rescale` is applied instead, which fine-tuning has to absorb.
    return keras.Model(inputs, core.output, name=BACKBONE)


def build_base(
    architecture: Architecture,
    input_shape: Sequence[int],
    *,
    blocks: Sequence[int] = (2, 2, 2),
    filters: Sequence[int] = (32, 64, 128),
    imagenet: bool = False,
) -> keras.Model:
    """The backbone for `architecture`: feature maps, no pooling and no classifier."""
    if architecture == Architecture.RESNET_SMALL:
        if imagenet:
            raise ModelError(
                "model.weights=imagenet needs a keras.applications architecture: got "
                f"model.architecture={architecture.value}"
            )
        return small_resnet_base(input_shape, blocks, filters)
    return application_base(architecture, input_shape, "imagenet" if imagenet else None)


def add_head(
    base: keras.Model,
    num_classes: int,
    *,
    dropout: float = 0.0,
    base_training: bool | None = None,
    name: str = "classifier",
) -> keras.Model:
    """`base` followed by global average pooling, dropout and a softmax classifier.

    `base_training=False` calls the base in inference mode for good: its BatchNorm layers then
    use (and never update) their moving statistics, even when later unfrozen.
    """
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least two classes: got {num_classes}")
    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    features = base(inputs, training=base_training)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, name="head_dense")(x)
    # The softmax stays float32 under mixed precision, so that the loss is computed stably.
    outputs = keras.layers.Activation("softmax", dtype="float32", name="head_softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def build_model(
    architecture: Architecture,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    blocks: Sequence[int] = (2, 2, 2),
    filters: Sequence[int] = (32, 64, 128),
    dropout: float = 0.0,
    imagenet: bool = False,
    freeze_base: bool = False,
) -> keras.Model:
    """A fresh classifier; with `freeze_base`, the base is frozen with BatchNorm in inference."""
    base = build_base(
        architecture, input_shape, blocks=blocks, filters=filters, imagenet=imagenet
    )
    if freeze_base:
        base.trainable = False
    return add_head(
        base, num_classes, dropout=dropout, base_training=False if freeze_base else None
    )


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested base of a model built here."""
    try:
        return model.get_layer(BACKBONE)
    except ValueError:
        raise ModelError(
            f"model {model.name!r} has no layer named {BACKBONE!r} (layers: "
            f"{[layer.name for layer in model.layers][:12]})"
        ) from None
