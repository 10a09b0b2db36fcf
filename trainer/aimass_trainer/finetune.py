"""Fine-tuning: start from pretrained weights, freeze the base, train a new head, and optionally
unfreeze the top of the base in a second phase at a lower learning rate.

A pretrained base comes from `imagenet` (keras.applications) or from an earlier job's
`model.keras` / `.weights.h5` in S3. A `.keras` file is loaded with Keras's `safe_mode` on, so a
file that carries pickled code or lambdas is refused rather than run. The old head is dropped by
taking the model's `backbone` layer (every model built here has one) and putting a new head on
it; NB: `model.layers.pop()` changes nothing in Keras 3, a model must be rebuilt from layers.

BatchNorm in a pretrained base always runs in inference mode (the base is called with
`training=False`) and its layers stay frozen in both phases: their moving statistics describe the
data the base was trained on, and a small new dataset would only disturb them.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from aimass import storage
from aimass.spec import Architecture, FineTune, Model
from aimass_trainer.models import (
    BACKBONE,
    ModelError,
    add_head,
    backbone_of,
    build_base,
    build_model,
)


@dataclass(frozen=True)
class FineTunePlan:
    """When the second phase starts and what it changes. Phase 1 trains the head only (or
    everything, without `freezeBase`); phase 2 also trains the top `unfreeze_top_layers`."""

    pretrained: bool
    freeze_base: bool
    unfreeze_top_layers: int
    after_epochs: int
    learning_rate_factor: float

    @classmethod
    def from_spec(cls, model: Model, fine_tune: FineTune) -> FineTunePlan:
        return cls(
            pretrained=model.weights != "none",
            freeze_base=fine_tune.freeze_base,
            unfreeze_top_layers=fine_tune.unfreeze_top_layers,
            after_epochs=fine_tune.after_epochs,
            learning_rate_factor=fine_tune.learning_rate_factor,
        )

    def phase_at(self, completed_epochs: int) -> int:
        """The phase of the epoch that follows `completed_epochs` finished ones."""
        second = self.pretrained and self.freeze_base and self.unfreeze_top_layers > 0
        return 2 if second and completed_epochs >= self.after_epochs else 1

    def learning_rate(self, base_rate: float, phase: int) -> float:
        return base_rate * self.learning_rate_factor if phase == 2 else base_rate

    def enter(self, model: keras.Model, phase: int) -> list[str]:
        """Set what trains in `phase`; returns the names of the base layers unfrozen."""
        if phase == 2:
            return unfreeze_top(backbone_of(model), self.unfreeze_top_layers)
        return []


def freeze(base: keras.Model) -> None:
    """Freeze the whole base (its BatchNorm statistics included)."""
    base.trainable = False


def unfreeze_top(base: keras.Model, count: int) -> list[str]:
    """Make the top `count` layers of `base` trainable, except BatchNorm; the rest stay frozen.

    Layers are counted as Keras lists them (activations and additions included, inputs not),
    as in the Keras transfer-learning guide. Returns the names of the layers now trainable.
    """
    layers = [layer for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    top = set(id(layer) for layer in layers[max(0, len(layers) - count):])
    # NB: setting `trainable` on the base propagates to every layer, so it goes first.
    base.trainable = True
    unfrozen = []
    for layer in layers:
        trainable = id(layer) in top and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        if trainable:
            unfrozen.append(layer.name)
    return unfrozen


def _freeze_batch_norm(base: keras.Model) -> None:
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def fetch_model_file(client: Any, uri: str, cache_dir: Path) -> Path:
    """Download an s3:// model or weights file into the cache; the name keeps its suffix,
    which is what tells Keras how to read it."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    name = uri.rsplit("/", 1)[-1]
    return storage.download_file(client, uri, Path(cache_dir) / "pretrained" / digest / name)


def base_from_keras_file(path: Path) -> keras.Model:
    """The base of a saved `.keras` classifier, loaded with `safe_mode` on.

    A model built by aimass has a `backbone` layer. Any other classifier loses its last Dense
    layer and whatever follows it, and the base is what fed that layer.
    """
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        raise ModelError(
            f"model.weights: {path.name} could not be loaded safely ({error}); models that "
            "carry code (lambdas, pickled objects) are refused. The job stops."
        ) from error
    names = [layer.name for layer in model.layers]
    if BACKBONE in names:
        return model.get_layer(BACKBONE)

    dense = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Dense)]
    if not dense or dense[-1] == 0:
        raise ModelError(
            f"model.weights: {path.name} has neither a {BACKBONE!r} layer nor a Dense head to "
            f"drop (layers: {names[:12]})"
        )
    feeding = model.layers[dense[-1] - 1]
    return keras.Model(model.inputs, feeding.output, name=BACKBONE)


def base_from_weights_file(
    path: Path, model_spec: Model, input_shape: Sequence[int]
) -> keras.Model:
    """A base of `model_spec`'s architecture with weights from an earlier job's
    `.weights.h5`; the head in the file, whatever its class count, is skipped."""
    scratch = build_model(
        model_spec.architecture,
        input_shape,
        num_classes=2,
        blocks=model_spec.blocks,
        filters=model_spec.filters,
    )
    try:
        # The head's shape differs whenever the class count does: skipping it is the point.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            scratch.load_weights(path, skip_mismatch=True)
    except (ValueError, KeyError, OSError) as error:
        raise ModelError(
            f"model.weights: {path.name} does not fit model.architecture="
            f"{model_spec.architecture.value} with blocks={model_spec.blocks} and "
            f"filters={model_spec.filters} ({error})"
        ) from error
    return backbone_of(scratch)


def pretrained_base(
    model_spec: Model, input_shape: Sequence[int], *, client: Any, cache_dir: Path
) -> keras.Model:
    """The base that `model.weights` names: imagenet, or a file in S3."""
    if model_spec.weights == "imagenet":
        return build_base(model_spec.architecture, input_shape, imagenet=True)
    path = fetch_model_file(client, model_spec.weights, cache_dir)
    if path.name.endswith(".weights.h5"):
        base = base_from_weights_file(path, model_spec, input_shape)
    else:
        base = base_from_keras_file(path)
    expected = tuple(input_shape)
    if tuple(base.input_shape[1:]) != expected:
        raise ModelError(
            f"model.weights: the base in {model_spec.weights} takes inputs of shape "
            f"{list(base.input_shape[1:])}, but dataset.imageSize and colorMode give "
            f"{list(expected)}; set them to match the earlier job"
        )
    return base


def build_finetune_model(
    base: keras.Model, num_classes: int, plan: FineTunePlan, *, dropout: float = 0.0
) -> keras.Model:
    """A new head for this dataset's classes on a pretrained `base`, called in inference mode.

    With `freezeBase` the base is frozen; without it the base trains from the first epoch,
    BatchNorm excepted.
    """
    if plan.freeze_base:
        freeze(base)
    else:
        base.trainable = True
        _freeze_batch_norm(base)
    return add_head(base, num_classes, dropout=dropout, base_training=False)


def build_for_job(
    model_spec: Model,
    fine_tune: FineTune,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    client: Any,
    cache_dir: Path,
) -> tuple[keras.Model, FineTunePlan]:
    """The job's model, from scratch or pretrained, and its fine-tuning plan."""
    plan = FineTunePlan.from_spec(model_spec, fine_tune)
    if not plan.pretrained:
        model = build_model(
            model_spec.architecture,
            input_shape,
            num_classes,
            blocks=model_spec.blocks,
            filters=model_spec.filters,
            dropout=model_spec.dropout,
        )
        return model, plan
    if model_spec.weights == "imagenet" and model_spec.architecture == Architecture.RESNET_SMALL:
        raise ModelError(
            "model.weights=imagenet needs a keras.applications architecture: got "
            f"model.architecture={model_spec.architecture.value}"
        )
    base = pretrained_base(model_spec, input_shape, client=client, cache_dir=cache_dir)
    return build_finetune_model(base, num_classes, plan, dropout=model_spec.dropout), plan
