"""Fine-tuning: a pretrained base from S3 stays frozen with BatchNorm in inference mode, the new
head trains, and a second phase unfreezes only the top of the base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from trainer_jobs import batches

from aimass import storage
from aimass.progress import Silent
from aimass.spec import Architecture, FineTune, Model
from aimass_trainer.finetune import FineTunePlan, build_for_job, unfreeze_top
from aimass_trainer.loop import LoopSettings, LoopState, TrainingLoop
from aimass_trainer.models import ModelError, backbone_of, build_model

SMALL = {"architecture": "resnet-small", "blocks": [1, 1], "filters": [8, 16]}


def earlier_model(num_classes: int = 5) -> keras.Model:
    return build_model(
        Architecture.RESNET_SMALL, (16, 16, 3), num_classes, blocks=[1, 1], filters=[8, 16]
    )


def put(client: Any, path: Path, uri: str) -> str:
    bucket, _ = storage.parse_s3_uri(uri)
    storage.ensure_bucket(client, bucket)
    storage.upload_file(client, path, uri)
    return uri


def finetuned(
    client: Any, bucket: str, tmp_path: Path, **fine_tune: Any
) -> tuple[keras.Model, FineTunePlan, keras.Model]:
    """A 3-class model on the base of a 5-class model.keras fetched from S3."""
    earlier = earlier_model()
    earlier.save(tmp_path / "model.keras")
    uri = put(client, tmp_path / "model.keras", f"s3://{bucket}/earlier/model.keras")
    model, plan = build_for_job(
        Model(weights=uri, **SMALL),
        FineTune(**fine_tune),
        (16, 16, 3),
        3,
        client=client,
        cache_dir=tmp_path / "cache",
    )
    return model, plan, earlier


def train(model: keras.Model, plan: FineTunePlan, epochs: int, on_epoch_end: Any = None) -> Any:
    loop = TrainingLoop(
        strategy=tf.distribute.get_strategy(),
        model=model,
        train=lambda context: batches(),
        validation=None,
        settings=LoopSettings(epochs=epochs, steps_per_epoch=3, learning_rate=0.05),
        plan=plan,
        reporter=Silent(),
        on_epoch_end=on_epoch_end,
    )
    loop.prepare(plan.phase_at(0))
    loop.run(LoopState())
    return loop


def snapshot(layer: keras.Layer) -> dict[str, np.ndarray]:
    """Every variable of a layer, trainable or not (BatchNorm moving statistics included)."""
    return {variable.path: np.array(variable.numpy()) for variable in layer.weights}


def changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> set[str]:
    return {path for path in before if not np.array_equal(before[path], after[path])}


def test_the_base_comes_from_an_earlier_jobs_model_in_s3_with_a_new_head(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    model, _, earlier = finetuned(client, bucket, tmp_path)
    kernel = backbone_of(model).get_layer("stem_conv").kernel.numpy()

    np.testing.assert_array_equal(kernel, backbone_of(earlier).get_layer("stem_conv").kernel)
    assert tuple(model.output_shape) == (None, 3)


def test_a_frozen_base_stays_unchanged_while_the_new_head_trains(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    model, plan, _ = finetuned(client, bucket, tmp_path)
    base_before = snapshot(backbone_of(model))
    head_before = snapshot(model.get_layer("head_dense"))

    train(model, plan, epochs=2)

    assert changed(base_before, snapshot(backbone_of(model))) == set()
    assert changed(head_before, snapshot(model.get_layer("head_dense"))) == set(head_before)


def test_batchnorm_in_a_pretrained_base_runs_in_inference_mode_even_when_training(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    model, _, _ = finetuned(client, bucket, tmp_path)
    images = np.random.default_rng(1).uniform(size=(4, 16, 16, 3)).astype(np.float32)

    np.testing.assert_allclose(model(images, training=True), model(images, training=False))


def test_the_second_phase_unfreezes_only_the_top_layers_at_a_lower_rate(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    model, plan, _ = finetuned(
        client, bucket, tmp_path, unfreeze_top_layers=6, after_epochs=1, learning_rate_factor=0.1
    )
    base = backbone_of(model)
    snapshots: list[dict[str, np.ndarray]] = [snapshot(base)]

    loop = train(model, plan, epochs=2, on_epoch_end=lambda state, best: snapshots.append(
        snapshot(base)
    ))

    assert changed(snapshots[0], snapshots[1]) == set()
    assert changed(snapshots[1], snapshots[2]) == {
        "stage2_block1_conv2/kernel",
        "stage2_block1_shortcut_conv/kernel",
    }
    assert float(loop.optimizer.learning_rate) == pytest.approx(0.005)


def test_unfreezing_counts_layers_from_the_top_and_leaves_batchnorm_frozen() -> None:
    base = backbone_of(earlier_model())
    base.trainable = False

    unfrozen = unfreeze_top(base, 4)

    assert unfrozen == ["stage2_block1_add", "stage2_block1_out"]
    assert not any(layer.trainable for layer in base.layers if "bn" in layer.name)
    assert not base.get_layer("stage2_block1_conv2").trainable


def test_there_is_no_second_phase_without_pretrained_weights() -> None:
    plan = FineTunePlan.from_spec(Model(**SMALL), FineTune(unfreeze_top_layers=3, after_epochs=0))

    assert plan.phase_at(5) == 1


def test_a_model_carrying_a_lambda_is_refused_by_safe_mode(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "evil.keras")
    uri = put(client, tmp_path / "evil.keras", f"s3://{bucket}/evil.keras")

    with pytest.raises(ModelError, match="could not be loaded safely"):
        build_for_job(
            Model(weights=uri, **SMALL), FineTune(), (16, 16, 3), 3,
            client=client, cache_dir=tmp_path / "cache",
        )


def test_a_weights_file_from_a_job_with_other_classes_gives_its_base(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    earlier = earlier_model(num_classes=7)
    earlier.save_weights(tmp_path / "earlier.weights.h5")
    uri = put(client, tmp_path / "earlier.weights.h5", f"s3://{bucket}/e/model.weights.h5")

    model, _ = build_for_job(
        Model(weights=uri, **SMALL), FineTune(), (16, 16, 3), 3,
        client=client, cache_dir=tmp_path / "cache",
    )

    np.testing.assert_array_equal(
        backbone_of(model).get_layer("stage2_block1_conv2").kernel.numpy(),
        backbone_of(earlier).get_layer("stage2_block1_conv2").kernel.numpy(),
    )


def test_a_base_for_another_image_size_is_rejected_naming_the_sizes(
    client: Any, bucket: str, tmp_path: Path
) -> None:
    earlier_model().save(tmp_path / "model.keras")
    uri = put(client, tmp_path / "model.keras", f"s3://{bucket}/m/model.keras")

    with pytest.raises(ModelError, match=r"\[16, 16, 3\].*\[32, 32, 3\]"):
        build_for_job(
            Model(weights=uri, **SMALL), FineTune(), (32, 32, 3), 3,
            client=client, cache_dir=tmp_path / "cache",
        )
