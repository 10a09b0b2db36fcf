"""`aimass operator`: run the TrainingJob operator, configured from flags or the environment.

Every flag has an environment variable, so a Deployment can set either. Logging is configured
here and only here. The operator runs kopf in standalone mode (one replica, no peering objects),
serves kopf's liveness probe and Prometheus metrics, and watches either the whole cluster or the
namespaces it is given.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import kopf
from prometheus_client import CollectorRegistry

from aimass_operator.metrics import OperatorMetrics, serve
from aimass_operator.runtime import DEFAULT_IMAGE, OperatorConfig

LOG_FORMATS = {"text": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
# Libraries whose DEBUG output is noise at best and request headers at worst.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "aiohttp.access")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise SystemExit(f"{name} must be a number of seconds (received {value!r})") from None


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="aimass operator", description="Run the aimass TrainingJob operator."
    )
    parser.add_argument(
        "-n", "--namespace", action="append", dest="namespaces", metavar="NAME",
        default=[name for name in env("AIMASS_NAMESPACES", "").split(",") if name.strip()],
        help="a namespace to watch (repeat for more; globs such as 'ml-*' work); "
        "default: all namespaces [env AIMASS_NAMESPACES, comma-separated]",
    )
    parser.add_argument(
        "--image", default=env("AIMASS_TRAINER_IMAGE", DEFAULT_IMAGE),
        help="trainer image for jobs that name none [env AIMASS_TRAINER_IMAGE]",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=int(env("AIMASS_METRICS_PORT", "8080")),
        help="port of the Prometheus /metrics endpoint; 0 turns it off "
        "[env AIMASS_METRICS_PORT, default 8080]",
    )
    parser.add_argument(
        "--liveness", default=env("AIMASS_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="kopf's liveness endpoint URL; empty turns it off [env AIMASS_LIVENESS]",
    )
    parser.add_argument(
        "--log-format", choices=sorted(LOG_FORMATS), default=env("AIMASS_LOG_FORMAT", "text"),
        help="text or json (one JSON object per line) [env AIMASS_LOG_FORMAT]",
    )
    parser.add_argument(
        "--verbose", action="store_true", default=env("AIMASS_VERBOSE", "") == "1",
        help="log routine actions too (DEBUG) [env AIMASS_VERBOSE=1]",
    )
    parser.add_argument(
        "--sweep-interval", type=float,
        default=_env_float("AIMASS_SWEEP_INTERVAL", 10.0),
        help="seconds between safety-net checks of each job; deadlines and TTLs fire on time "
        "regardless [env AIMASS_SWEEP_INTERVAL, default 10]",
    )
    return parser


def configure_logging(*, log_format: str, verbose: bool) -> None:
    """Once per process: kopf's formatter (with the [namespace/name] prefix) on the root."""
    kopf.configure(verbose=verbose, log_format=LOG_FORMATS[log_format], log_prefix=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.sweep_interval <= 0:
        raise SystemExit(f"--sweep-interval must be positive (received {args.sweep_interval})")
    configure_logging(log_format=args.log_format, verbose=args.verbose)

    # Registers the handlers; imported late so `--help` needs no cluster libraries loaded.
    import aimass_operator.handlers  # noqa: F401

    # A registry of its own: only the operator's series, and main() can run twice in a process.
    metrics = OperatorMetrics(CollectorRegistry())
    if args.metrics_port:
        serve(metrics, args.metrics_port)
    config = OperatorConfig(
        default_image=args.image, sweep_interval=args.sweep_interval, metrics=metrics
    )
    namespaces = [name.strip() for name in args.namespaces if name.strip()]
    logging.getLogger(__name__).info(
        f"watching {', '.join(namespaces) if namespaces else 'all namespaces'}; "
        f"default trainer image {args.image}"
    )
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
