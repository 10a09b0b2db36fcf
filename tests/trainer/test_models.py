"""The networks: output shapes, the stable layer names fine-tuning relies on, and clear errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from aimass.spec import Architecture
from aimass_trainer import models
from aimass_trainer.models import ModelError, backbone_of, build_model, dtype_policy


def tiny(num_classes: int = 3, **kwargs: object) -> keras.Model:
    return build_model(
        Architecture.RESNET_SMALL, (16, 16, 3), num_classes, blocks=[1, 1], filters=[8, 16],
        **kwargs,
    )


def test_the_small_resnet_maps_a_batch_of_images_to_class_probabilities() -> None:
    model = tiny(num_classes=4)

    probabilities = model(np.random.default_rng(0).uniform(size=(5, 16, 16, 3)), training=False)

    assert tuple(probabilities.shape) == (5, 4)
    np.testing.assert_allclose(np.sum(probabilities, axis=1), 1.0, rtol=1e-5)


def test_the_small_resnet_names_its_layers_by_stage_and_block() -> None:
    names = [layer.name for layer in backbone_of(tiny()).layers]

    assert names[:5] == ["input", "stem_conv", "stem_bn", "stem_relu", "stem_pool"]
    assert {"stage1_block1_conv1", "stage1_block1_bn2", "stage1_block1_out"} <= set(names)
    assert {"stage2_block1_conv2", "stage2_block1_shortcut_conv", "stage2_block1_out"} <= set(names)
    assert names[-1] == "stage2_block1_out"


def test_the_head_has_stable_names_around_a_nested_backbone() -> None:
    names = [layer.name for layer in tiny().layers]

    assert names == ["image", "backbone", "head_pool", "head_dropout", "head_dense", "head_softmax"]


def test_the_same_spec_builds_the_same_layer_names_twice() -> None:
    first = [layer.name for layer in backbone_of(tiny()).layers]
    second = [layer.name for layer in backbone_of(tiny()).layers]

    assert first == second


def test_a_projection_shortcut_appears_only_where_the_shape_changes() -> None:
    model = build_model(
        Architecture.RESNET_SMALL, (32, 32, 3), 2, blocks=[2, 2], filters=[8, 16]
    )
    shortcuts = [
        layer.name for layer in backbone_of(model).layers if "shortcut_conv" in layer.name
    ]

    assert shortcuts == ["stage2_block1_shortcut_conv"]


def test_the_stem_and_each_later_stage_halve_the_resolution() -> None:
    model = build_model(
        Architecture.RESNET_SMALL, (32, 32, 3), 2, blocks=[1, 1, 1], filters=[8, 16, 32]
    )

    assert tuple(backbone_of(model).output.shape) == (None, 2, 2, 32)


def test_blocks_and_filters_of_different_lengths_are_rejected_naming_both() -> None:
    with pytest.raises(ModelError, match=r"blocks=\[1, 1\] and filters=\[8\]"):
        build_model(Architecture.RESNET_SMALL, (16, 16, 3), 2, blocks=[1, 1], filters=[8])


def test_a_grayscale_resnet50_keeps_keras_layer_names_in_a_flat_backbone() -> None:
    model = build_model(Architecture.RESNET50, (32, 32, 1), 3)
    names = [layer.name for layer in backbone_of(model).layers]

    assert tuple(model.output_shape) == (None, 3)
    assert "gray_to_rgb" in names and "conv2_block1_out" in names
    assert names[-1] == "conv5_block3_out"


def test_application_resnets_refuse_images_under_32_pixels() -> None:
    with pytest.raises(ModelError, match=r"imageSize must be at least 32.*\[16, 16\]"):
        build_model(Architecture.RESNET50V2, (16, 16, 3), 2)


def test_imagenet_weights_that_cannot_be_downloaded_stop_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from keras.src.applications import resnet

    def unreachable(*args: object, **kwargs: object) -> str:
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: no network")

    monkeypatch.setattr(resnet.file_utils, "get_file", unreachable)

    with pytest.raises(ModelError, match=r"imagenet: the resnet50 weights could not be download"):
        build_model(Architecture.RESNET50, (32, 32, 3), 2, imagenet=True)


def test_imagenet_weights_are_refused_for_the_small_resnet() -> None:
    with pytest.raises(ModelError, match="keras.applications architecture"):
        models.build_base(Architecture.RESNET_SMALL, (32, 32, 3), imagenet=True)


def test_mixed_precision_computes_in_float16_but_outputs_float32() -> None:
    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_float16"):
        model = tiny()

    assert keras.config.dtype_policy().name == before
    assert model.get_layer("head_dense").compute_dtype == "float16"
    assert model(np.zeros((1, 16, 16, 3), np.float32)).dtype == "float32"
