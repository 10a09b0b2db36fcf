"""The TrainingJob spec model: defaults, bounds, and errors that name the field and value."""

from __future__ import annotations

import pytest

from aimass.spec import SpecError, parse_job, parse_spec

MINIMAL = {
    "dataset": {"train": "s3://data/flowers/train"},
    "output": {"uri": "s3://models/flowers"},
}


def test_a_minimal_spec_gets_documented_defaults() -> None:
    spec = parse_spec(MINIMAL)

    assert spec.workers == 1
    assert spec.fine_tune.freeze_base is True
    assert spec.training.mixed_precision == "auto"
    assert spec.dataset.image_size == [224, 224]


@pytest.mark.parametrize(
    ("patch", "field", "value"),
    [
        ({"workers": 0}, "spec.workers", "0"),
        ({"training": {"epochs": -1}}, "spec.training.epochs", "-1"),
        ({"training": {"optimizer": "adamx"}}, "spec.training.optimizer", "'adamx'"),
        ({"dataset": {"train": "http://x/y"}}, "spec.dataset.train", "'http://x/y'"),
        ({"augmentation": {"zoomRange": 3}}, "spec.augmentation.zoomRange", "3"),
        ({"model": {"weights": "ftp://w"}}, "spec.model.weights", "'ftp://w'"),
        ({"model": {"blocks": [1, 1], "filters": [8]}}, "spec.model", "[1, 1]"),
        ({"storage": {"accessKey": "AKIA"}}, "spec.storage.accessKey", "'AKIA'"),
    ],
)
def test_each_bad_value_is_named_with_its_field(patch: dict, field: str, value: str) -> None:
    data = {**MINIMAL, **patch}
    if "dataset" in patch:
        data["dataset"] = {**MINIMAL["dataset"], **patch["dataset"]}

    with pytest.raises(SpecError) as caught:
        parse_spec(data)

    assert field in str(caught.value)
    assert value in str(caught.value)


def test_validation_prefix_and_split_are_alternatives() -> None:
    data = {**MINIMAL, "dataset": {"train": "s3://data/t", "validation": "s3://data/v",
                                   "validationSplit": 0.1}}

    with pytest.raises(SpecError, match="validationSplit"):
        parse_spec(data)


def test_a_whole_document_needs_the_right_kind_and_name() -> None:
    with pytest.raises(SpecError, match="metadata.name"):
        parse_job({"apiVersion": "aimass.dev/v1alpha1", "kind": "TrainingJob",
                   "metadata": {"name": "Bad_Name"}, "spec": MINIMAL})
