"""SageMaker local mode's shared, stdlib-only part: the command line of a run, progress, the summary, clean-up.

Two SDKs use it, from two virtual environments (SageMaker Python SDK v2 and v3 own the same ``sagemaker``
package name): ``optml train --local`` / ``deploy --local`` / ``transform --local`` (SDK v3,
``optml.cli.local_v3``) and the SDK v2 test drivers ``tools/sagemaker_local_v2.py`` and
``tools/sagemaker_transform_v2.py`` (``.venv-sdk2``, where nothing of optml's dependencies is installed). So
nothing here may import ``sagemaker``, nor anything outside the standard library. It holds reading the CSV
rows to predict, progress output, the end-of-run summary, and the Docker clean-up that both SDKs leave undone
(they leave exited compose containers and the ``sagemaker-local`` network behind).

Progress (the SDK's and the containers' output included) goes to stderr. A run ends with a short human
summary on stdout — the model.tar.gz path, the final model's main validation metrics, the predictions —
or, on failure, the reason on one line; the machine-readable summary (every metric, timings, a log tail,
``error`` on failure) is written to a JSON file, ``<output>/summary.json`` unless ``--summary`` says
otherwise, whose path the human summary gives.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TextIO

NETWORK_NAME = "sagemaker-local"  # fixed by both SDKs' generated compose files
DEFAULT_SERVING_PORT = 8080
DEFAULT_PREDICT_ROWS = 3
DUMMY_ROLE = "arn:aws:iam::111111111111:role/optml-local-mode"
TELEMETRY_OPT_OUT_YAML = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "algo-1_1  | ..." (compose v1), "abc123-algo-1-x7k2q  | ..." (v2 container names), "algo-1-1  | ..."
_COMPOSE_PREFIX = re.compile(r"^[\w.-]+\s+\|\s?")
# SDK v2 logs its config lookups to stdout; they are not the job's output.
_SDK_LOG_PREFIXES = ("sagemaker.config ",)
_METRIC = re.compile(r"([A-Za-z][\w:/.-]*)=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
# The container's per-epoch metric lines (container/logs.py): `epoch=N ...;`, and `restored epoch=N ...;` last
# when early stopping put an earlier epoch's weights back, so the last one describes the saved model.
_EPOCH_LINE = re.compile(r"(?:^|\s)epoch=(\d+) ")  # after any prefix a log driver adds
# The human summary's metric table: the few that say most, in this order; the rest are in the file.
SUMMARY_METRICS = ("loss", "accuracy", "f1", "auc", "rmse", "mae", "r2")
SUMMARY_FILE_NAME = "summary.json"


class LocalModeError(RuntimeError):
    """A failure with a message fit for the user; the drivers exit non-zero with it."""


# --------------------------------------------------------------------------------------------------
# Progress output


def log(message: str) -> None:
    """Human-friendly progress on stderr (stdout is reserved for the end-of-run summary)."""
    print(f"[local-mode] {message}", file=sys.stderr, flush=True)


class _TeeToStderr(io.TextIOBase):
    """A stdout stand-in: forwards everything to stderr, keeps the last lines and the metric lines.

    Both SDKs copy the containers' output to ``sys.stdout`` (``_stream_output``); routing it to
    stderr keeps stdout for the summary and lets the driver report a log tail. The metric lines are
    kept apart because the epoch whose weights early stopping restores may be long out of the tail.
    """

    def __init__(self, target: TextIO, keep: int) -> None:
        super().__init__()
        self._target = target
        self._partial = ""
        self.lines: deque[str] = deque(maxlen=keep)
        self.metric_lines: list[str] = []

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._target.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            cleaned = clean_log_line(line)
            if cleaned and not cleaned.startswith(_SDK_LOG_PREFIXES):
                self.lines.append(cleaned)
                if _EPOCH_LINE.search(cleaned):
                    self.metric_lines.append(cleaned)
        return len(text)

    def flush(self) -> None:
        self._target.flush()


@contextlib.contextmanager
def capture_stdout(keep: int = 40) -> Iterator[_TeeToStderr]:
    """Send everything written to ``sys.stdout`` (by this or any thread) to stderr, keeping a tail."""
    tee = _TeeToStderr(sys.stderr, keep)
    with contextlib.redirect_stdout(tee):
        yield tee
    if tee._partial.strip():
        tee.lines.append(clean_log_line(tee._partial))


def clean_log_line(line: str) -> str:
    """Strip ANSI colours, carriage returns and the compose ``service |`` prefix from a log line."""
    line = _ANSI.sub("", line).replace("\r", "").rstrip()
    return _COMPOSE_PREFIX.sub("", line, count=1).rstrip()


def final_metrics(lines: Sequence[str]) -> dict[str, float]:
    """The saved model's metrics (``epoch`` included) from the log's metric lines.

    That is the last ``epoch=`` line: the container repeats an earlier epoch's line as ``restored epoch=N``
    when early stopping put its weights back. Empty when no line matches.
    """
    for line in reversed(lines):
        if _EPOCH_LINE.search(line):
            return {name: float(value) for name, value in _METRIC.findall(line)}
    return {}


# --------------------------------------------------------------------------------------------------
# The end-of-run summary: a JSON file for programs, a few lines on stdout for people


def default_summary_path(output_dir: Path) -> Path:
    return output_dir / SUMMARY_FILE_NAME


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read), else as is."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def aligned(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Indented lines of cells, each column as wide as its widest cell, two spaces apart."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))] if rows else []
    return [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def metrics_table(metrics: Mapping[str, float]) -> list[str]:
    """The :data:`SUMMARY_METRICS` of the validation channel (of ``train`` when there is none)."""
    channel = "validation" if any(name.startswith("validation:") for name in metrics) else "train"
    rows = [(name, f"{metrics[f'{channel}:{name}']:.4f}") for name in SUMMARY_METRICS if f"{channel}:{name}" in metrics]
    if not rows:
        return []
    epoch = f" (epoch {int(metrics['epoch'])})" if "epoch" in metrics else ""
    return [f"{channel} metrics of the final model{epoch}", *aligned(rows)]


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def run_summary_text(summary: Mapping[str, Any], rows: Sequence[str], summary_file: str | None) -> list[str]:
    """What a successful run prints last (see the module docstring): a training run has no predictions, a
    deployment of a model trained elsewhere no metrics."""
    files = [("model", shown_path(Path(summary["model_data"])))] + ([("summary", summary_file)] if summary_file else [])
    lines = ["", "done", *aligned(files)]
    table = metrics_table(summary.get("metrics", {}))
    if table:
        lines += ["", *table]
    if "predictions" not in summary:
        return lines
    predicted = zip(rows, summary["predictions"], strict=True)
    lines += ["", "predictions"]
    lines += aligned(
        [("row", "prediction", "features")]
        + [(str(number), prediction, clip(row, 60)) for number, (row, prediction) in enumerate(predicted, start=1)]
    )
    return lines


def transform_summary_text(summary: Mapping[str, Any], summary_file: str | None) -> list[str]:
    """What a successful batch transform prints last: where the outputs are, their line counts, the summary file."""
    outputs = [(name, f"{lines} line(s)") for name, lines in summary["outputs"].items()]
    files = [("output", shown_path(Path(summary["output_dir"])))] + (
        [("summary", summary_file)] if summary_file else []
    )
    return ["", "done", *aligned(files), "", "output files", *aligned(outputs)]


def output_line_counts(output_dir: Path) -> dict[str, int]:
    """A batch transform's output files (``<input file>.out``, relative to ``output_dir``) and their lines."""
    return {
        str(path.relative_to(output_dir)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(output_dir.rglob("*.out"))
    }


def failure_line(error: str) -> str:
    """The reason a run failed, on one line (SDK and container messages may span several)."""
    return "failed: " + " ".join(error.split())


def finish(
    summary: Mapping[str, Any],
    summary_path: Path | None,
    exit_code: int,
    success_text: Callable[[str | None], list[str]],
) -> int:
    """Write the summary file (unless there is none to write: a local endpoint without --summary), print the
    human summary (or the failure) to stdout; the exit code.

    A summary file that cannot be written fails the run: programs that read it would find nothing.
    """
    failed = [failure_line(summary["error"])] if "error" in summary else []
    shown = None
    if summary_path is not None:
        try:
            write_summary(summary_path, summary)
        except OSError as exc:
            print(*failed, failure_line(f"cannot write the summary file {summary_path}: {exc}"), sep="\n", flush=True)
            return exit_code or 1
        shown = shown_path(summary_path)
    if failed:
        lines = [*failed, f"summary: {shown}"] if shown else failed
    else:
        lines = success_text(shown)
    print(*lines, sep="\n", flush=True)
    return exit_code


# --------------------------------------------------------------------------------------------------
# Command line


SUMMARY_HELP = "where to write the machine-readable summary, a JSON object (default: OUTPUT/summary.json)"


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Progress, the training log included, goes to stderr. The run ends with a short summary on "
        "stdout: where model.tar.gz went, the final model's main validation metrics, each predicted row "
        "and its prediction, and the path of the summary file. That file holds sdk, run, model_data, "
        "metrics (every metric of the final model's epoch line), predictions, training_log_tail and "
        "timings; on failure error and log_tail, and the exit code is non-zero.",
    )
    parser.add_argument("--image", required=True, help="local Docker image, e.g. optml:latest")
    parser.add_argument("--train", required=True, help="train channel: a directory or file:// URI")
    parser.add_argument("--validation", help="validation channel: a directory or file:// URI")
    parser.add_argument("--output", required=True, help="directory for the run's artifacts")
    parser.add_argument("--summary", help=SUMMARY_HELP)
    parser.add_argument("--instance-count", type=int, default=1, help="training hosts (default 1)")
    parser.add_argument(
        "--hyperparameters",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameters, e.g. epochs=5 hidden_units=32,16",
    )
    parser.add_argument(
        "--predict-csv",
        help="CSV feature rows (no label) to predict; default: the first "
        f"{DEFAULT_PREDICT_ROWS} rows of the validation (or train) data with the label dropped",
    )
    parser.add_argument(
        "--model-data",
        help="skip training and serve this model.tar.gz (path or file:// URI) instead",
    )
    parser.add_argument(
        "--serving-port",
        type=int,
        default=DEFAULT_SERVING_PORT,
        help="host port the endpoint container publishes (default 8080; must be free)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=1800,
        help="give up (and clean up) after this many seconds; 0 = no limit (default 1800)",
    )
    parser.add_argument(
        "--allow-telemetry",
        action="store_true",
        help="do not opt out of SDK telemetry (by default the drivers opt out: they run offline)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the SDK's INFO logging")
    return parser


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    parser = build_parser(description)
    args = parser.parse_args(argv)
    if args.instance_count < 1:
        parser.error("--instance-count must be at least 1")
    try:
        args.hyperparameters = parse_hyperparameters(args.hyperparameters)
    except ValueError as exc:
        parser.error(str(exc))
    args.summary = summary_path_of(parser, args)
    return args


def summary_path_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    """``--summary``, else ``summary.json`` in ``--output``; resolved now, so that a failure can be reported."""
    try:
        return local_path(args.summary) if args.summary else default_summary_path(local_path(args.output))
    except LocalModeError as exc:
        parser.error(str(exc))


def parse_hyperparameters(pairs: Sequence[str]) -> dict[str, str]:
    """``["epochs=5", "hidden_units=32,16"]`` -> ``{"epochs": "5", "hidden_units": "32,16"}``."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"hyperparameter {pair!r} is not KEY=VALUE")
        result[key.strip()] = value
    return result


def local_path(location: str | Path) -> Path:
    """A local path from a path or ``file://`` URI, made absolute (Docker bind mounts need that)."""
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise LocalModeError(f"{location}: only local paths and file:// URIs work offline")
    return Path(text).expanduser().resolve()


def file_uri(path: Path) -> str:
    return f"file://{path.resolve()}"


def existing_dir(location: str, what: str) -> Path:
    path = local_path(location)
    if not path.is_dir():
        raise LocalModeError(f"{what} channel {location} is not a directory")
    return path


# --------------------------------------------------------------------------------------------------
# Data


def _data_files(directory: Path) -> list[Path]:
    if directory.is_file():
        return [directory]
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def read_predict_rows(
    predict_csv: str | None,
    validation: str | None,
    train: str,
    count: int = DEFAULT_PREDICT_ROWS,
) -> list[str]:
    """Feature rows to send to the endpoint, as CSV lines without a label column."""
    if predict_csv:
        path = local_path(predict_csv)
        if not path.is_file():
            raise LocalModeError(f"--predict-csv {predict_csv} is not a file")
        rows = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not rows:
            raise LocalModeError(f"--predict-csv {predict_csv} has no rows")
        return rows
    source = local_path(validation or train)
    rows = []
    for file in _data_files(source):
        for line in file.read_text(encoding="utf-8").splitlines():
            fields = line.strip().split(",")
            if len(fields) < 2:
                continue
            rows.append(",".join(fields[1:]))
            if len(rows) == count:
                return rows
    if not rows:
        raise LocalModeError(f"no label-first CSV rows found under {source}")
    return rows


def split_predictions(body: str, expected: int) -> list[str]:
    """One prediction per non-empty response line; the count must match the rows sent."""
    lines = [line.strip() for line in body.replace("\r", "").splitlines() if line.strip()]
    if len(lines) != expected:
        raise LocalModeError(f"the endpoint answered {len(lines)} line(s) for {expected} row(s): {body[:500]!r}")
    return lines


def trained_model(model_data: Path) -> Path:
    """`model_data`, once it is known to hold a model: a training job can end well having written nothing to
    /opt/ml/model, and then the archive is empty."""
    if not model_data.is_file():
        raise LocalModeError(f"training finished but {model_data} is missing")
    with tarfile.open(model_data) as tar:
        if not any(member.isfile() for member in tar.getmembers()):
            raise LocalModeError(f"training finished but wrote nothing to /opt/ml/model ({model_data} is empty)")
    log(f"model saved to {model_data}")
    return model_data


def training_failure(exc: Exception, output_tar: Path) -> LocalModeError:
    """A readable error for a failed local training job: the container's failure file and exit code."""
    code = re.search(r"exited with code:? (\d+)", str(exc))
    exit_text = f"container exit code {code.group(1)}" if code else str(exc)
    reason = failure_reason(output_tar)
    return LocalModeError(f"training failed ({exit_text}): {reason}" if reason else f"training failed: {exc}")


def failure_reason(output_tar: Path) -> str | None:
    """The container's ``/opt/ml/output/failure`` message, from the job's output.tar.gz."""
    if not output_tar.is_file():
        return None
    try:
        with tarfile.open(output_tar) as tar:
            for member in tar.getmembers():
                if member.isfile() and Path(member.name).name == "failure":
                    handle = tar.extractfile(member)
                    if handle is not None:
                        return handle.read(1024).decode("utf-8", "replace").strip() or None
    except (OSError, tarfile.TarError):
        return None
    return None


# --------------------------------------------------------------------------------------------------
# Environment


def prepare_sdk_environment(scratch: Path, allow_telemetry: bool) -> None:
    """Settings both SDKs read from the environment; call before importing ``sagemaker``.

    A region is mandatory even fully offline. Telemetry is opted out through an SDK defaults file,
    unless the caller already points ``SAGEMAKER_USER_CONFIG_OVERRIDE`` at one.
    """
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    if not allow_telemetry and "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        scratch.mkdir(parents=True, exist_ok=True)
        config = scratch / "sagemaker-defaults.yaml"
        config.write_text(TELEMETRY_OPT_OUT_YAML, encoding="utf-8")
        os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config)


def configure_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Both SDKs poll /ping while the container starts; urllib3 warns about every refused try.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def port_is_free(port: int) -> bool:
    """Nothing answers on localhost:port (else the SDK's /ping would reach the wrong server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def require_free_port(port: int) -> None:
    if not port_is_free(port):
        raise LocalModeError(
            f"port {port} is already in use; the local endpoint publishes {port}:8080 and the SDK "
            "would health-check whatever answers there. Stop it or pass --serving-port."
        )


def new_run_name(prefix: str) -> str:
    """Unique, compose-safe ([a-z0-9-]) and short: prefix-YYYYmmdd-HHMMSS-xxxx."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class Deadline(Exception):
    """Raised in the main thread when --timeout expires."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise :class:`Deadline` after ``seconds`` (0: no limit); SIGTERM also unwinds cleanly."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Deadline(f"gave up after {seconds} s (--timeout)")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous_alarm = signal.signal(signal.SIGALRM, on_alarm)
    previous_term = signal.signal(signal.SIGTERM, on_term)
    if seconds > 0:
        signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGTERM, previous_term)


# --------------------------------------------------------------------------------------------------
# Docker clean-up


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def preflight(image: str) -> None:
    """Docker answers and the image is already local (the SDKs would otherwise try to pull it)."""
    try:
        info = _docker("version", "--format", "{{.Server.Version}}", timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise LocalModeError(f"cannot run docker: {exc}") from exc
    if info.returncode != 0:
        raise LocalModeError(f"the Docker engine does not answer: {info.stderr.strip()}")
    if _docker("image", "inspect", image).returncode != 0:
        raise LocalModeError(f"image {image} is not present locally; build it first (make image)")


def network_exists(name: str = NETWORK_NAME) -> bool:
    return _docker("network", "inspect", name).returncode == 0


class DockerJanitor:
    """Removes what the SDKs' docker-compose runs leave behind, and nothing else.

    Each phase runs with ``COMPOSE_PROJECT_NAME`` set to a unique name (both compose v1 and v2
    honour it and label every container with it), so the clean-up can remove exactly this run's
    containers. The ``sagemaker-local`` network is removed only if it did not exist before the run
    and no container is still attached to it.
    """

    def __init__(self, run_name: str) -> None:
        self.run_name = run_name
        self.projects: list[str] = []
        self.network_existed = network_exists()

    def project_name(self, phase: str) -> str:
        return re.sub(r"[^a-z0-9_-]", "-", f"{self.run_name}-{phase}".lower())

    @contextlib.contextmanager
    def project(self, phase: str) -> Iterator[str]:
        name = self.project_name(phase)
        if name not in self.projects:
            self.projects.append(name)
        previous = os.environ.get("COMPOSE_PROJECT_NAME")
        os.environ["COMPOSE_PROJECT_NAME"] = name
        try:
            yield name
        finally:
            if previous is None:
                os.environ.pop("COMPOSE_PROJECT_NAME", None)
            else:
                os.environ["COMPOSE_PROJECT_NAME"] = previous

    def remove_project(self, name: str) -> int:
        listed = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}")
        ids = listed.stdout.split()
        if ids:
            _docker("rm", "-f", "-v", *ids, timeout=120)
        return len(ids)

    def remove_phase(self, phase: str) -> int:
        """Remove one phase's containers now (e.g. the exited training containers before serving)."""
        return self.remove_project(self.project_name(phase))

    def cleanup(self) -> None:
        removed = 0
        for name in self.projects:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                removed += self.remove_project(name)
        if removed:
            log(f"removed {removed} leftover container(s)")
        if not self.network_existed:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                attached = _docker("network", "inspect", NETWORK_NAME, "--format", "{{len .Containers}}")
                if attached.returncode == 0 and attached.stdout.strip() == "0":
                    if _docker("network", "rm", NETWORK_NAME).returncode == 0:
                        log(f"removed the {NETWORK_NAME} network")


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# --------------------------------------------------------------------------------------------------
# A run: its steps between the checks and the summary


@dataclass
class LocalRun:
    """One run's record: what its summary file will hold, its log, and what to clean up after it."""

    name: str
    result: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    janitor: DockerJanitor | None = None
    tee: _TeeToStderr | None = None
    exit_code: int = 1

    def start_docker(self, image: str, serving_port: int | None = None) -> DockerJanitor:
        """Docker answers, the image is here and the serving port is free — found before the work, not after
        it; then the janitor of this run's containers."""
        preflight(image)
        if serving_port is not None:
            require_free_port(serving_port)
        self.janitor = DockerJanitor(self.name)
        return self.janitor

    def record_training(self, train: Callable[[], Path]) -> Path:
        """Run the training step; record its model, the metrics of the saved model's log line and its time."""
        assert self.tee is not None, "a run's steps run inside run_locally"
        started = time.monotonic()
        model_data = train()
        self.timings["train_s"] = round(time.monotonic() - started, 1)
        if self.janitor is not None:
            self.janitor.remove_phase("train")
        self.result["training_log_tail"] = list(self.tee.lines)[-20:]
        self.result["metrics"] = final_metrics(self.tee.metric_lines)
        self.result["model_data"] = str(model_data)
        return model_data

    def record_predictions(self, predict: Callable[[], list[str]]) -> None:
        """Run the serving step; record its predictions and its time (a failure's log tail is its own)."""
        assert self.tee is not None, "a run's steps run inside run_locally"
        self.tee.lines.clear()
        started = time.monotonic()
        self.result["predictions"] = predict()
        self.timings["serve_s"] = round(time.monotonic() - started, 1)


def run_locally(
    run_prefix: str,
    steps: Callable[[LocalRun], None],
    timeout: int,
    allow_telemetry: bool = False,
    verbose: bool = False,
    extends: Mapping[str, Any] | None = None,
) -> LocalRun:
    """Run `steps` with the SDK's and the containers' output on stderr (its tail kept), within `timeout`
    seconds, and always clean up. A failure ends up as `error` in the run's result, to be reported on one
    line. `extends` is a summary to add to (a deployment's predictions join the summary of the training run
    that made its model)."""
    scratch = scratch_dir(f"{run_prefix}-")
    prepare_sdk_environment(scratch, allow_telemetry)
    configure_logging(verbose)
    name = new_run_name(run_prefix)
    earlier = dict(extends or {})
    run = LocalRun(name, {"sdk": "unknown", "run": name, **earlier}, dict(earlier.get("timings", {})))
    try:
        with time_limit(timeout), capture_stdout() as run.tee:
            run.result["sdk"] = sdk_version()
            steps(run)
        run.exit_code = 0
    except (LocalModeError, Deadline) as exc:
        run.result["error"] = str(exc)
    except KeyboardInterrupt:
        run.result["error"] = "interrupted"
        run.exit_code = 130
    except Exception as exc:  # the SDKs and Docker raise all sorts: show them, don't hide them
        traceback.print_exc(file=sys.stderr)
        run.result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        started = time.monotonic()
        if run.janitor is not None:
            run.janitor.cleanup()
        run.timings["cleanup_s"] = round(time.monotonic() - started, 1)
        shutil.rmtree(scratch, ignore_errors=True)
    run.result["timings"] = run.timings
    if run.exit_code != 0 and run.tee is not None and run.tee.lines:
        run.result["log_tail"] = list(run.tee.lines)[-20:]
    return run


def existing_model(location: str) -> Path:
    model_data = local_path(location)
    if not model_data.is_file():
        raise LocalModeError(f"--model-data {location} is not a file")
    return model_data


def training_summary_of(summary_path: Path, model_data: Path) -> dict[str, Any]:
    """The summary at `summary_path` when it is that of the successful training run that made `model_data`
    (a deployment then adds to it), else nothing: a summary of something else is replaced, not mixed in."""
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(summary, dict) or "error" in summary or summary.get("model_data") != str(model_data):
        return {}
    return summary


# --------------------------------------------------------------------------------------------------
# The SDK v2 drivers' run (tools/sagemaker_local_v2.py): train, deploy and predict in one command


class TrainFn(Protocol):
    def __call__(
        self,
        image: str,
        train_dir: Path,
        output_dir: Path,
        validation_dir: Path | None = ...,
        instance_count: int = ...,
        hyperparameters: Mapping[str, str] | None = ...,
        run_name: str | None = ...,
        janitor: DockerJanitor | None = ...,
    ) -> Path: ...


class DeployFn(Protocol):
    def __call__(
        self,
        image: str,
        model_data: Path,
        rows: Sequence[str],
        serving_port: int = ...,
        environment: Mapping[str, str] | None = ...,
        run_name: str | None = ...,
        janitor: DockerJanitor | None = ...,
    ) -> list[str]: ...


def run_driver(
    argv: Sequence[str] | None,
    description: str,
    run_prefix: str,
    train: TrainFn,
    deploy_and_predict: DeployFn,
) -> int:
    """Parse the command line, train, deploy, predict, clean up; write the summary file and print the summary."""
    args = parse_args(argv, description)
    rows: list[str] = []

    def steps(run: LocalRun) -> None:
        janitor = run.start_docker(args.image, args.serving_port)
        train_dir = existing_dir(args.train, "train")
        validation_dir = existing_dir(args.validation, "validation") if args.validation else None
        output_dir = local_path(args.output)
        rows.extend(read_predict_rows(args.predict_csv, args.validation, args.train))
        if args.model_data:
            model_data = existing_model(args.model_data)
            run.result["model_data"] = str(model_data)
        else:
            model_data = run.record_training(
                lambda: train(
                    args.image,
                    train_dir,
                    output_dir,
                    validation_dir=validation_dir,
                    instance_count=args.instance_count,
                    hyperparameters=args.hyperparameters,
                    run_name=run.name,
                    janitor=janitor,
                )
            )
        run.record_predictions(
            lambda: deploy_and_predict(
                args.image, model_data, rows, serving_port=args.serving_port, run_name=run.name, janitor=janitor
            )
        )

    run = run_locally(run_prefix, steps, args.timeout, args.allow_telemetry, args.verbose)
    return finish(run.result, args.summary, run.exit_code, lambda file: run_summary_text(run.result, rows, file))


def sdk_version() -> str:
    """The installed SageMaker SDK's version (v2 and v3 are both the `sagemaker` distribution)."""
    from importlib.metadata import version

    return version("sagemaker")
