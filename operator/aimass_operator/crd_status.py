"""The CRD's status schema and printer columns.

Status is written by the operator (phase, conditions, worker counts, times, results) and by the
chief worker (`progress`, `epochProgress`), always through the status subresource. Every field
is optional: a job starts with no status at all. Only `status.kopf` (kopf's own bookkeeping) is
open-ended; everything else is typed, so that pruning catches a misspelt field early.
"""

from __future__ import annotations

from typing import Any

PHASES = ["Pending", "Running", "Succeeded", "Failed", "Suspended"]
CONDITION_TYPES = ["Created", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _time(description: str) -> dict[str, Any]:
    return _string(description, format="date-time")


def _count(description: str) -> dict[str, Any]:
    return {"type": "integer", "format": "int32", "minimum": 0, "description": description}


def _number(description: str) -> dict[str, Any]:
    return {"type": "number", "description": description}


def _object(description: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties, **extra}


def condition_schema() -> dict[str, Any]:
    """One condition, as in metav1.Condition."""
    return _object(
        "One aspect of the job's state.",
        {
            "type": _string(
                "Kind of condition: " + ", ".join(CONDITION_TYPES) + ".", maxLength=316
            ),
            "status": _string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _string(
                "Why, as a CamelCase word, e.g. BackoffLimitExceeded or ImagePullBackOff.",
                maxLength=1024,
            ),
            "message": _string("Why, in words a person can act on.", maxLength=32768),
            "lastTransitionTime": _time("When status last changed."),
            "lastUpdateTime": _time("When reason or message last changed."),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "metadata.generation the condition was set for.",
            },
        },
        required=["type", "status"],
    )


def progress_schema() -> dict[str, Any]:
    """Live training progress, patched by the chief worker while it trains."""
    return _object(
        "Training progress, updated by the chief worker during training.",
        {
            "epoch": _count("Epochs completed."),
            "epochs": _count("Epochs in total."),
            "step": _count("Batches done in the epoch under way."),
            "stepsPerEpoch": _count("Batches in one epoch."),
            "loss": _number("Latest training loss."),
            "accuracy": _number("Latest training accuracy."),
            "valLoss": _number("Validation loss at the last epoch end."),
            "valAccuracy": _number("Validation accuracy at the last epoch end."),
            "imagesPerSecond": _number("Training throughput of the last epoch, all workers."),
            "etaSeconds": _number("Estimated seconds until training ends."),
            "updateTime": _time("When the progress was last reported."),
        },
    )


def status_schema() -> dict[str, Any]:
    """The whole `status` object."""
    return _object(
        "Observed state of the job, written by the operator and by the chief worker.",
        {
            "phase": _string("Where the job is in its life.", enum=PHASES),
            "conditions": {
                "type": "array",
                "description": "Conditions, one per type, following Kubernetes conventions.",
                "items": condition_schema(),
                "maxItems": 32,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            # Worker counts of the current gang, at the top level as in a batch/v1 Job.
            "active": _count("Worker pods pending or running."),
            "succeeded": _count("Worker pods finished with exit code 0."),
            "failed": _count("Worker pods finished with an error."),
            "workersReady": _string("Ready workers out of the total, e.g. 2/2."),
            "epochProgress": _string("Epochs done out of the total, e.g. 3/10."),
            "progress": progress_schema(),
            "startTime": _time("When the first gang was created."),
            "completionTime": _time("When the job Succeeded or Failed."),
            "restartCount": _count("Gang restarts so far (at most spec.runPolicy.backoffLimit)."),
            "modelURI": _string("Where model.keras was written, on success."),
            "metrics": {
                "type": "object",
                "description": "Final metrics on success, e.g. accuracy and val_accuracy.",
                "additionalProperties": {"type": "number"},
            },
            "preflight": _object(
                "What the pre-flight check found in the dataset before any pod started.",
                {
                    "classes": _count("Number of classes."),
                    "classNames": {
                        "type": "array",
                        "description": "Class names, sorted.",
                        "items": {"type": "string"},
                    },
                    "trainImages": _count("Images under dataset.train."),
                    "validationImages": _count("Images under dataset.validation, if set."),
                    "skipped": _count("Objects under dataset.train that are not images."),
                    "message": _string("The check's summary, or why it failed."),
                    "checkTime": _time("When the check ran."),
                },
            ),
            "kopf": {
                "type": "object",
                "description": "The operator framework's own bookkeeping.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    )


def printer_columns() -> list[dict[str, Any]]:
    """Columns of `kubectl get tj`; the wide ones show with `-o wide`."""
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
         "description": "Where the job is in its life."},
        {"name": "Workers", "type": "string", "jsonPath": ".status.workersReady",
         "description": "Ready workers out of the total."},
        {"name": "Epoch", "type": "string", "jsonPath": ".status.epochProgress",
         "description": "Epochs done out of the total."},
        {"name": "Accuracy", "type": "number", "jsonPath": ".status.progress.accuracy",
         "description": "Latest training accuracy."},
        {"name": "Val-Accuracy", "type": "number", "jsonPath": ".status.progress.valAccuracy",
         "description": "Validation accuracy at the last epoch end.", "priority": 1},
        {"name": "Restarts", "type": "integer", "jsonPath": ".status.restartCount",
         "description": "Gang restarts so far.", "priority": 1},
        {"name": "Model", "type": "string", "jsonPath": ".status.modelURI",
         "description": "Where the model was written.", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
