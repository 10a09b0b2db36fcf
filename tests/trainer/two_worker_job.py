"""One worker of the two-worker test, run as its own process:
`python two_worker_job.py JOB_JSON CACHE_DIR RESULT_JSON`, with TF_CONFIG and AWS_* set.

It trains the job with `run_training` and writes what the test compares: every weight's sum,
the history and whether it was the chief.
"""

from __future__ import annotations

import json
import sys

import tensorflow as tf

# Two processes share two cores: one thread each for the ops keeps them from fighting.
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(2)

from aimass import storage  # noqa: E402
from aimass.progress import Silent  # noqa: E402
from aimass.spec import parse_job  # noqa: E402
from aimass_trainer.run import run_training  # noqa: E402


def main(job_path: str, cache_dir: str, result_path: str) -> None:
    job = parse_job(json.loads(open(job_path).read()))
    result = run_training(
        job, client=storage.make_client(), cache_dir=cache_dir, reporter=Silent()
    )
    assert result.model is not None
    summary = {
        "is_chief": result.is_chief,
        "model_uri": result.model_uri,
        "history": result.metrics["history"],
        "weights": [float(tf.reduce_sum(weight)) for weight in result.model.weights],
    }
    with open(result_path, "w") as handle:
        json.dump(summary, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
