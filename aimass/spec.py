"""The TrainingJob API: one typed model shared by the trainer, the operator and the CRD.

Every field has a description (it becomes `kubectl explain`), a default where one makes sense
and bounds. Field names on the wire are lowerCamel, as in every Kubernetes API; in Python they are
snake_case. The CRD's openAPIV3Schema is generated from these models, so a change here is a
change to the API.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "aimass.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
SINGULAR = "trainingjob"
SHORT_NAMES = ["tj"]
# Not "all": then `kubectl delete all --all` would delete every TrainingJob too.
CATEGORIES = ["aimass"]

S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$"
# NB: every string and list has a size limit. The API server estimates the worst-case cost of
# the CRD's CEL rules (the spec freeze compares whole objects) from these limits, and rejects a
# CRD whose rules could cost too much; an unbounded field counts as megabytes.
MAX_NAME = 253  # a DNS subdomain, and a label key with its prefix
MAX_LABEL_VALUE = 63
MAX_QUANTITY = 64
# A Kubernetes quantity such as 500m, 2, 4Gi or 1.5.
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"

S3Uri = Annotated[
    str,
    Field(pattern=S3_URI_PATTERN, max_length=1024, examples=["s3://datasets/flowers/train"]),
]


class _Model(BaseModel):
    """Base for every spec object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML: camelCase, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ColorMode(StrEnum):
    RGB = "rgb"
    GRAYSCALE = "grayscale"


class Architecture(StrEnum):
    RESNET_SMALL = "resnet-small"
    RESNET50 = "resnet50"
    RESNET101 = "resnet101"
    RESNET152 = "resnet152"
    RESNET50V2 = "resnet50v2"
    RESNET101V2 = "resnet101v2"
    RESNET152V2 = "resnet152v2"


class Optimizer(StrEnum):
    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"
    RMSPROP = "rmsprop"


class MixedPrecision(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class AdversarialMethod(StrEnum):
    FGSM = "fgsm"


class EarlyStoppingMonitor(StrEnum):
    VAL_LOSS = "val_loss"
    VAL_ACCURACY = "val_accuracy"
    LOSS = "loss"
    ACCURACY = "accuracy"


class CleanPodPolicy(StrEnum):
    ALL = "All"
    RUNNING = "Running"
    NONE = "None"


class Dataset(_Model):
    """Where the images are and how they are read."""

    train: S3Uri = Field(
        description="S3 prefix of the training images, one subfolder per class "
        "(s3://bucket/path/train/<class>/<image>).",
    )
    validation: S3Uri | None = Field(
        default=None,
        description="S3 prefix of validation images laid out like `train`. When unset, "
        "`validationSplit` of the training images is held out instead.",
    )
    validation_split: float = Field(
        default=0.2,
        ge=0.0,
        le=0.5,
        description="Fraction of the training images held out for validation when "
        "`validation` is unset. 0 disables validation.",
    )
    image_size: list[Annotated[int, Field(ge=8, le=1024)]] = Field(
        default=[224, 224],
        min_length=2,
        max_length=2,
        description="Height and width, in pixels, that every image is resized to.",
    )
    color_mode: ColorMode = Field(
        default=ColorMode.RGB,
        description="rgb reads three channels; grayscale reads one.",
    )

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == ColorMode.RGB else 1


class Adversarial(_Model):
    """Adversarial training: perturb part of each batch against the current model."""

    method: AdversarialMethod = Field(
        default=AdversarialMethod.FGSM,
        description="How adversarial examples are made. fgsm: the fast gradient sign method.",
    )
    epsilon: float = Field(
        default=0.01,
        gt=0.0,
        le=1.0,
        description="Size of the perturbation, in the scale of the model's inputs (after "
        "`rescale`).",
    )
    fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Fraction of each training batch replaced by adversarial examples.",
    )


class Augmentation(_Model):
    """Random transforms applied to training images inside the input pipeline."""

    rescale: float = Field(
        default=1.0 / 255.0,
        gt=0.0,
        le=1.0,
        description="Factor that pixel values (0-255) are multiplied by before the model.",
    )
    shear_range: float = Field(
        default=0.0, ge=0.0, le=45.0, description="Maximum shear angle, in degrees."
    )
    zoom_range: float = Field(
        default=0.0,
        ge=0.0,
        le=0.9,
        description="Maximum zoom in or out, as a fraction of the image size.",
    )
    rotation_range: float = Field(
        default=0.0, ge=0.0, le=180.0, description="Maximum rotation, in degrees."
    )
    width_shift_range: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Maximum horizontal shift, as a fraction of the width.",
    )
    height_shift_range: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Maximum vertical shift, as a fraction of the height.",
    )
    horizontal_flip: bool = Field(default=False, description="Flip images left to right at random.")
    vertical_flip: bool = Field(default=False, description="Flip images upside down at random.")
    brightness_range: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Maximum change of brightness, as a fraction of the value range.",
    )
    contrast_range: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Maximum change of contrast, as a fraction: 0.2 scales by 0.8 to 1.2.",
    )
    fused_warp: bool = Field(
        default=False,
        description="Compose rotation, shifts, zoom, shear and flips into one warp per image "
        "(several times faster on CPUs at large sizes) instead of chaining the Keras "
        "preprocessing layers, one pass each.",
    )
    adversarial: Adversarial | None = Field(
        default=None,
        description="Adversarial examples mixed into each training batch. Off when unset.",
    )


class Model(_Model):
    """The network and where its starting weights come from."""

    architecture: Architecture = Field(
        default=Architecture.RESNET_SMALL,
        description="resnet-small is a compact residual net sized by `blocks` and `filters`; "
        "the others are the keras.applications ResNets.",
    )
    blocks: list[Annotated[int, Field(ge=1, le=16)]] = Field(
        default=[2, 2, 2],
        min_length=1,
        max_length=6,
        description="resnet-small only: residual blocks in each stage.",
    )
    filters: list[Annotated[int, Field(ge=4, le=1024)]] = Field(
        default=[32, 64, 128],
        min_length=1,
        max_length=6,
        description="resnet-small only: filters in each stage; as many entries as `blocks`.",
    )
    weights: str = Field(
        default="none",
        pattern=r"^(none|imagenet|s3://.+\.(keras|weights\.h5))$",
        max_length=1024,
        description="Starting weights: none (random), imagenet (where it can be downloaded), "
        "or an s3:// URI of a .keras model or .weights.h5 file, such as an earlier job's "
        "model.keras.",
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout rate before the classifier head."
    )

    @model_validator(mode="after")
    def _stages_match(self) -> Model:
        if len(self.blocks) != len(self.filters):
            raise ValueError(
                f"model.blocks and model.filters need one entry per stage: got "
                f"blocks={self.blocks} and filters={self.filters}"
            )
        return self


class FineTune(_Model):
    """How pretrained weights are adapted. Applies when `model.weights` is not `none`."""

    freeze_base: bool = Field(
        default=True,
        description="Keep the pretrained base frozen (BatchNorm in inference mode) and train "
        "only the new head.",
    )
    unfreeze_top_layers: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Second phase: unfreeze this many layers at the top of the base. "
        "0 means no second phase.",
    )
    after_epochs: int = Field(
        default=1,
        ge=0,
        le=10000,
        description="Second phase: the epoch after which the top layers are unfrozen.",
    )
    learning_rate_factor: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Second phase: the learning rate is multiplied by this factor.",
    )


class EarlyStopping(_Model):
    """Stop when a metric stops improving."""

    monitor: EarlyStoppingMonitor = Field(
        default=EarlyStoppingMonitor.VAL_LOSS, description="The metric watched."
    )
    patience: int = Field(
        default=3, ge=1, le=1000, description="Epochs without improvement before stopping."
    )
    min_delta: float = Field(
        default=0.0, ge=0.0, description="Smallest change that counts as an improvement."
    )


class Training(_Model):
    """The optimisation budget and its settings."""

    epochs: int = Field(default=10, ge=1, le=10000, description="Number of epochs.")
    batch_size: int = Field(
        default=32, ge=1, le=8192, description="Global batch size, across all workers."
    )
    optimizer: Optimizer = Field(default=Optimizer.ADAM, description="The optimizer.")
    learning_rate: float = Field(
        default=1e-3, gt=0.0, le=10.0, description="Initial learning rate."
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="Seed for shuffling, augmentation and initialisation. Set it for "
        "repeatable runs.",
    )
    early_stopping: EarlyStopping | None = Field(
        default=None, description="Early stopping. Off when unset."
    )
    mixed_precision: MixedPrecision = Field(
        default=MixedPrecision.AUTO,
        description="mixed_float16 compute: auto turns it on when GPUs are present.",
    )


class Output(_Model):
    """Where results go."""

    uri: S3Uri = Field(
        description="S3 prefix for checkpoints, model.keras, the SavedModel, labels.json, "
        "metrics.json and the training-curve plot.",
    )


class Storage(_Model):
    """The S3-compatible endpoint. Credentials never appear here: they come from the
    environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or, in a cluster, from
    `credentialsSecret`."""

    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/.*)?$",
        max_length=1024,
        description="S3 endpoint URL, e.g. http://minio.storage:9000. Unset: AWS S3 in a "
        "cluster; an embedded SeaweedFS server on loopback for `aimass train`.",
    )
    region: str = Field(
        default="us-east-1",
        pattern=r"^[a-z0-9-]{2,32}$",
        max_length=32,
        description="S3 region.",
    )
    credentials_secret: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="Name of a Secret in the job's namespace with the keys "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
    )


class Resources(_Model):
    """Compute for each worker."""

    gpus: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per worker.")
    cpu: str = Field(
        default="1",
        pattern=QUANTITY_PATTERN,
        max_length=MAX_QUANTITY,
        description="CPU request and limit per worker.",
    )
    memory: str = Field(
        default="4Gi",
        pattern=QUANTITY_PATTERN,
        max_length=MAX_QUANTITY,
        description="Memory request and limit per worker.",
    )


class Toleration(_Model):
    """A pod toleration, passed through unchanged."""

    key: str | None = Field(
        default=None, max_length=MAX_NAME, description="Taint key; empty matches all keys."
    )
    operator: str | None = Field(
        default=None, pattern=r"^(Exists|Equal)$", max_length=6, description="Exists or Equal."
    )
    value: str | None = Field(
        default=None, max_length=MAX_LABEL_VALUE, description="Taint value for Equal."
    )
    effect: str | None = Field(
        default=None,
        pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$",
        max_length=16,
        description="Taint effect to tolerate; empty matches all effects.",
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound."
    )


class Worker(_Model):
    """How each worker pod is run."""

    image: str | None = Field(
        default=None,
        max_length=512,
        description="Trainer image. Unset: the operator's default image.",
    )
    resources: Resources = Field(default_factory=Resources, description="Per-worker compute.")
    node_selector: dict[str, Annotated[str, Field(max_length=MAX_LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=32, description="Node labels the pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the pods tolerate."
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="Pod affinity, passed through unchanged (core/v1 Affinity).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(
        default=None, max_length=MAX_NAME, description="PriorityClass."
    )
    scheduler_name: str | None = Field(
        default=None, max_length=MAX_NAME, description="Scheduler, e.g. volcano."
    )
    image_pull_secrets: list[Annotated[str, Field(max_length=MAX_NAME)]] = Field(
        default_factory=list,
        max_length=16,
        description="Names of Secrets used to pull the image.",
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        description="ServiceAccount for the pods. Unset: a per-job account that may only "
        "report this job's progress.",
    )


class RunPolicy(_Model):
    """Restarts, deadlines and clean-up, as in Kubeflow's RunPolicy."""

    backoff_limit: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Gang restarts from the last checkpoint before the job is Failed.",
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Seconds the job may run, counted from its start, before it is Failed "
        "with reason DeadlineExceeded.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Seconds after Succeeded or Failed before the job is deleted.",
    )
    clean_pod_policy: CleanPodPolicy = Field(
        default=CleanPodPolicy.RUNNING,
        description="Pods deleted once the job finishes: All, Running (still running) or None.",
    )


class TrainingJobSpec(_Model):
    """A TensorFlow/Keras image-classification job: data, model, training, outputs."""

    dataset: Dataset = Field(description="The training (and validation) images.")
    augmentation: Augmentation = Field(
        default_factory=Augmentation, description="Random transforms of training images."
    )
    model: Model = Field(default_factory=Model, description="The network and starting weights.")
    fine_tune: FineTune = Field(
        default_factory=FineTune, description="How pretrained weights are adapted."
    )
    training: Training = Field(default_factory=Training, description="Optimisation settings.")
    output: Output = Field(description="Where results are written.")
    storage: Storage = Field(default_factory=Storage, description="The S3-compatible endpoint.")
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Number of worker pods. More than one trains in sync "
        "(MultiWorkerMirroredStrategy).",
    )
    worker: Worker = Field(default_factory=Worker, description="How each worker pod is run.")
    run_policy: RunPolicy = Field(
        default_factory=RunPolicy, description="Restarts, deadline and clean-up."
    )
    suspend: bool = Field(
        default=False,
        description="true deletes the pods and keeps the checkpoint; false resumes from it.",
    )

    @model_validator(mode="after")
    def _one_validation_source(self) -> TrainingJobSpec:
        fields = self.dataset.model_fields_set
        if self.dataset.validation and "validation_split" in fields:
            raise ValueError(
                "dataset.validation and dataset.validationSplit are alternatives: got "
                f"validation={self.dataset.validation!r} and "
                f"validationSplit={self.dataset.validation_split}"
            )
        return self


class ObjectMeta(BaseModel):
    """The part of metadata the trainer reads; everything else is kept as it is."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        # A DNS-1035 label (a letter first): the job's headless Service is named after it.
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        max_length=50,
        description="Job name: a DNS label, short enough for `<name>-worker-<i>`.",
    )
    namespace: str | None = None


class TrainingJob(BaseModel):
    """A whole TrainingJob document, as applied with kubectl."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_version: str = Field(alias="apiVersion", pattern=rf"^{GROUP}/{VERSION}$")
    kind: str = Field(pattern=rf"^{KIND}$")
    metadata: ObjectMeta
    spec: TrainingJobSpec


class SpecError(ValueError):
    """A TrainingJob that does not validate; the message names each field and value."""


def format_errors(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: the wire path of the field, what is wrong, and the value received."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        where = f"{prefix}{path}" if path else prefix.rstrip(".") or "(document)"
        received = item.get("input")
        if isinstance(received, dict):
            received = "{...}"
        lines.append(f"{where}: {item['msg']} (received {received!r})")
    return "\n".join(lines)


def parse_spec(data: Any) -> TrainingJobSpec:
    """Validate a `spec` mapping; raise SpecError naming every bad field."""
    try:
        return TrainingJobSpec.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as error:
        raise SpecError(format_errors(error, prefix="spec.")) from None


def parse_job(data: Any) -> TrainingJob:
    """Validate a whole TrainingJob document; raise SpecError naming every bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"a TrainingJob must be a mapping (received {type(data).__name__})")
    try:
        return TrainingJob.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as error:
        raise SpecError(format_errors(error)) from None


def load_job(path: str | Path) -> TrainingJob:
    """Read one TrainingJob from a YAML file (the first TrainingJob if there are several)."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise SpecError(f"{path}: cannot read the file: {error.strerror or error}") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    jobs = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == KIND]
    if not jobs:
        kinds = [doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                 for doc in documents]
        raise SpecError(f"{path}: no document of kind {KIND} (received kinds {kinds})")
    return parse_job(jobs[0])
