"""The `aimass` command: train a TrainingJob locally or in a worker pod, upload datasets, validate
specs, and reach the operator's tools.

`aimass train -f job.yaml` is the same job a cluster runs: when the job names no S3 endpoint and
the environment has none either, an embedded SeaweedFS server is started on loopback with its data
in a local folder, so the datasets uploaded with `aimass data upload` stay there between runs.

TensorFlow is imported only by `train`, so `validate`, `crd` and `operator` start in a blink and
work where only the operator extra is installed. Exit codes are `aimass.exitcodes.ExitCode`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from aimass import spec
from aimass.exitcodes import ExitCode

DEFAULT_DATA_DIR = Path(".aimass/s3")
DEFAULT_CACHE_DIR = Path(".aimass/cache")
TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

EXIT_CODES_HELP = """exit codes:
  0    success (or the job had already succeeded)
  1    training failed (retried by the operator)
  2    invalid TrainingJob or command line (permanent)
  3    dataset error: missing prefix, empty class, fewer than two classes (permanent)
  4    S3 unreachable or refusing the credentials (retried)
  130  interrupted; the last checkpoint is kept and a rerun resumes from it"""

logger = logging.getLogger("aimass")
out = Console()
err = Console(stderr=True)


class UsageError(Exception):
    """The command line is wrong (a missing folder, a missing variable): exit 2."""


# --- the embedded S3 server -------------------------------------------------------------------


@contextmanager
def s3_session(endpoint: str | None, data_dir: Path, *, quiet: bool = False) -> Iterator[None]:
    """Run the body against `endpoint`, AWS_ENDPOINT_URL, or else an embedded SeaweedFS server.

    The embedded server's endpoint and credentials are put into os.environ for the body, so that
    `aimass.storage.make_client` and any subprocess find them the same way as in a cluster.
    """
    if endpoint or os.environ.get("AWS_ENDPOINT_URL"):
        yield
        return

    from aimass.seaweed import SeaweedError, SeaweedServer

    server = SeaweedServer(data_dir)
    try:
        server.start()
    except SeaweedError as error:
        # TODO: share one embedded server between concurrent commands on the same folder.
        raise SeaweedError(
            f"{error}. If another aimass command is using {data_dir}, wait for it to finish, "
            "point AWS_ENDPOINT_URL at a running server (`aimass s3 serve`), or pass another "
            "--data-dir"
        ) from None
    saved = {key: os.environ.get(key) for key in server.env}
    try:
        if not quiet:
            err.print(
                f"storage: no endpoint given, using the embedded SeaweedFS at {server.endpoint} "
                f"(data in {data_dir})",
                soft_wrap=True,
            )
        os.environ.update(server.env)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


# --- train ------------------------------------------------------------------------------------


def load_job_from_env(variable: str = "AIMASS_JOB") -> spec.TrainingJob:
    """The TrainingJob a worker pod was given, as JSON in an environment variable."""
    text = os.environ.get(variable)
    if not text:
        raise UsageError(f"--from-env: the environment variable {variable} is unset or empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise spec.SpecError(f"{variable}: not valid JSON: {error}") from None
    return spec.parse_job(data)


def build_reporter() -> Any:
    """The terminal reporter, plus the status reporter when running as a pod of a cluster."""
    from aimass.console import RichProgress
    from aimass.progress import FanOut

    reporters: list[Any] = [RichProgress(err)]
    token = Path(os.environ.get("AIMASS_KUBE_TOKEN_FILE") or TOKEN_PATH)
    if os.environ.get("AIMASS_JOB_NAME") and token.exists():
        try:
            from aimass.kube_progress import KubeProgressReporter
        except ImportError:
            logger.warning("aimass.kube_progress is missing: status.progress is not updated")
        else:
            # None on a worker other than the chief: only the chief reports.
            kube = KubeProgressReporter.from_env()
            if kube is not None:
                reporters.append(kube)
    return FanOut(reporters)


def read_metrics(client: Any, output_uri: str) -> dict[str, Any]:
    """metrics.json of a finished job ({} if it is not there, e.g. on a non-chief worker)."""
    from aimass import storage

    data = storage.read_bytes(client, f"{output_uri.rstrip('/')}/metrics.json")
    return json.loads(data) if data else {}


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # NB: a pod is stopped with SIGTERM; the trainer saves a checkpoint on KeyboardInterrupt.
    raise KeyboardInterrupt(f"signal {signum}")


def command_train(args: argparse.Namespace) -> int:
    job = load_job_from_env() if args.from_env else spec.load_job(args.file)
    cache_dir = Path(args.cache_dir or os.environ.get("AIMASS_CACHE_DIR") or DEFAULT_CACHE_DIR)
    if not args.debug:
        # TensorFlow's own chatter (autograph and retracing notes) is for --debug only.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    with s3_session(job.spec.storage.endpoint, Path(args.data_dir)):
        from aimass import datasets, storage
        from aimass.console import summary_table, train_summary

        client = storage.make_client(job.spec.storage)
        started = time.monotonic()
        # The output bucket is created when missing (a fresh embedded store has none); where the
        # credentials may not create buckets, it must exist already.
        storage.ensure_bucket(client, storage.parse_s3_uri(job.spec.output.uri)[0])

        # A missing or empty dataset is found by listing alone, before TensorFlow is imported.
        report = datasets.preflight(job.spec, client)
        err.print(f"dataset: {report.describe()}", highlight=False, soft_wrap=True)
        for warning in report.warnings:
            err.print(f"dataset: warning: {warning}", highlight=False, soft_wrap=True)

        from aimass_trainer.run import run_training

        result = run_training(
            job, client=client, cache_dir=cache_dir, reporter=build_reporter()
        )
        seconds = time.monotonic() - started
        if result.is_chief:
            rows = train_summary(job.metadata.name, result, seconds)
            out.print(summary_table("aimass train", rows))
    return ExitCode.OK


# --- data, validate, s3 -----------------------------------------------------------------------


def command_data_upload(args: argparse.Namespace) -> int:
    source = Path(args.dir)
    if not source.is_dir():
        raise UsageError(f"data upload: {source} is not a folder")
    if not re.match(spec.S3_URI_PATTERN, args.uri):
        raise UsageError(
            f"data upload: the destination must be s3://bucket/prefix with a valid bucket name "
            f"(received {args.uri!r})"
        )
    with s3_session(args.endpoint, Path(args.data_dir)):
        from aimass import storage

        client = storage.make_client(spec.Storage(endpoint=args.endpoint))
        bucket, _ = storage.parse_s3_uri(args.uri)
        storage.ensure_bucket(client, bucket)
        count = storage.upload_dir(client, source, args.uri)
    out.print(f"uploaded {count} files from {source} to {args.uri}")
    return ExitCode.OK


def command_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.file:
        try:
            job = spec.load_job(path)
        except spec.SpecError as error:
            failed += 1
            err.print(f"[red]{path}: invalid[/red]", highlight=False, soft_wrap=True)
            err.print(str(error), markup=False, highlight=False, soft_wrap=True)
            continue
        out.print(f"{path}: valid TrainingJob {job.metadata.name!r}", highlight=False)
    return ExitCode.INVALID_SPEC if failed else ExitCode.OK


def command_s3_serve(args: argparse.Namespace) -> int:
    from aimass.seaweed import SeaweedServer

    with SeaweedServer(Path(args.data_dir)) as server:
        out.print(f"S3 on {server.endpoint}, data in {args.data_dir}. In another shell:")
        for key, value in server.env.items():
            out.print(f"export {key}={value}", highlight=False, markup=False)
        out.print("Ctrl-C stops it.")
        signal.signal(signal.SIGTERM, _raise_interrupt)
        assert server.process is not None
        try:
            code = server.process.wait()
        except KeyboardInterrupt:
            out.print("stopped; the data stays in " + str(args.data_dir), highlight=False)
            return ExitCode.OK
    err.print(f"weed exited with code {code}; see {Path(args.data_dir) / 'weed.log'}")
    return ExitCode.STORAGE_ERROR


# --- delegations to the operator package ------------------------------------------------------


# The command and the module of `aimass_operator` whose main(argv) implements it.
DELEGATES = {"crd": "crd", "operator": "main"}


def delegate(command: str, argv: Sequence[str]) -> int:
    """Run `aimass_operator.<module>.main(argv)`; only the operator extra provides it."""
    module = DELEGATES[command]
    try:
        target = importlib.import_module(f"aimass_operator.{module}")
    except ImportError as error:
        err.print(
            f"aimass {command}: the operator is not installed ({error}); "
            "install it with `pip install 'aimass[operator]'`",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return ExitCode.TRAINING_FAILED
    return int(target.main(list(argv)) or 0)


# --- the parser and error mapping -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # NB: a subcommand's default would overwrite `aimass --debug train`, hence SUPPRESS there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="debug logs and full tracebacks",
    )
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help="folder of the embedded S3 server, used when no endpoint is set (%(default)s)",
    )

    parser = argparse.ArgumentParser(
        prog="aimass",
        description="Train and fine-tune image classifiers from TrainingJob YAML, locally or "
        "in Kubernetes.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="debug logs and full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", parents=[common, store], help="run a TrainingJob")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", "--file", help="TrainingJob YAML file")
    source.add_argument("--from-env", action="store_true", help="read JSON from AIMASS_JOB")
    train.add_argument("--cache-dir", help="image cache (AIMASS_CACHE_DIR, .aimass/cache)")
    train.set_defaults(handler=command_train)

    data = commands.add_parser("data", help="datasets in S3")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    upload = data_commands.add_parser(
        "upload", parents=[common, store], help="upload a folder of class folders"
    )
    upload.add_argument("dir", help="local folder, one subfolder per class")
    upload.add_argument("uri", help="s3://bucket/prefix; the bucket is created if needed")
    upload.add_argument("--endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL)")
    upload.set_defaults(handler=command_data_upload)

    validate = commands.add_parser("validate", parents=[common], help="check TrainingJob files")
    validate.add_argument(
        "-f", "--file", nargs="+", action="extend", required=True, help="YAML files"
    )
    validate.set_defaults(handler=command_validate)

    s3 = commands.add_parser("s3", help="the embedded S3 server")
    s3_commands = s3.add_subparsers(dest="s3_command", required=True, metavar="COMMAND")
    serve = s3_commands.add_parser("serve", parents=[common, store], help="serve S3 until Ctrl-C")
    serve.set_defaults(handler=command_s3_serve)

    commands.add_parser("crd", help="print (or --write) the CRD generated from the spec")
    commands.add_parser("operator", help="run the Kubernetes operator")
    return parser


def error_codes() -> list[tuple[type[BaseException], ExitCode]]:
    """Exception types and their exit codes, most specific first; imported lazily."""
    from aimass.seaweed import SeaweedError

    codes: list[tuple[type[BaseException], ExitCode]] = [
        (spec.SpecError, ExitCode.INVALID_SPEC),
        (UsageError, ExitCode.INVALID_SPEC),
        (SeaweedError, ExitCode.STORAGE_ERROR),
    ]
    try:
        from aimass.datasets import DatasetError

        codes.append((DatasetError, ExitCode.DATASET_ERROR))
    except ImportError:
        pass
    try:
        from aimass.storage import StorageError

        codes.append((StorageError, ExitCode.STORAGE_ERROR))
    except ImportError:
        pass
    # A model that does not fit the spec, or a checkpoint that does not fit the model, fails the
    # same way on every retry. Both can only be raised once their (TensorFlow) module is loaded.
    for module, name in (("aimass_trainer.models", "ModelError"),
                         ("aimass_trainer.checkpoints", "CheckpointError")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            codes.append((getattr(loaded, name), ExitCode.INVALID_SPEC))
    return codes


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command; turn each known failure into its exit code and a one-line message."""
    try:
        return handler(args)
    except KeyboardInterrupt:
        if args.command == "train":
            err.print("interrupted; the last checkpoint is kept and a rerun resumes from it")
        else:
            err.print(f"aimass {args.command}: interrupted")
        return ExitCode.INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every failure becomes an exit code and a message
        if args.debug:
            err.print_exception()
        code = next(
            (code for kind, code in error_codes() if isinstance(error, kind)),
            ExitCode.TRAINING_FAILED,
        )
        label = "error" if code != ExitCode.TRAINING_FAILED else type(error).__name__
        err.print(
            f"aimass {args.command}: {label}: {error}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    # The operator's commands parse their own options; forward them untouched (after any of
    # aimass's own leading options, such as --debug, which they do not need).
    leading = 0
    while leading < len(argv) and argv[leading].startswith("-"):
        leading += 1
    if leading < len(argv) and argv[leading] in DELEGATES:
        return delegate(argv[leading], argv[leading + 1:])

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(run_handler(args.handler, args))


if __name__ == "__main__":
    sys.exit(main())
