"""`optml runs`: the runs made on this machine — `optml train --local` jobs and `optml tune --local` trials —
newest first, with their hyperparameters, final metrics and model.

Each run appends one JSON line to `$OPTML_HOME/runs.jsonl` (default `~/.optml`) when it ends; nothing is ever
rewritten, so the file is safe to read while runs go on and to trim by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from optml.cli import jobs
from optml.cli.localmode import aligned, clip, shown_path

HOME_VARIABLE = "OPTML_HOME"
RUNS_FILE = "runs.jsonl"
TRAIN, TUNING_TRIAL = "train", "tuning-trial"
DEFAULT_LIMIT = 20
# The metrics the table shows, the first three a run has (every metric is in --json).
SHOWN_METRICS = ("loss", "accuracy", "f1", "auc", "rmse", "r2")
_lock = threading.Lock()

EXAMPLES = """\
examples:
  optml runs                          # the 20 newest runs: train --local jobs and tune --local trials
  optml runs --experiment churn       # those of one experiment (--experiment on train and tune)
  optml runs --limit 0 --json         # every run, as JSON, newest first
"""


def home() -> Path:
    return Path(os.environ.get(HOME_VARIABLE) or Path.home() / ".optml").expanduser()


def registry() -> Path:
    return home() / RUNS_FILE


def new_record(
    *,
    kind: str,
    name: str,
    image: str,
    hyperparameters: Mapping[str, str],
    metrics: Mapping[str, float],
    model: str | None,
    status: str,
    experiment: str | None = None,
    run: str | None = None,
    tuning: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One run as the registry holds it; `time` is when it ended (UTC)."""
    record: dict[str, Any] = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds"),
        "kind": kind,
        "name": name,
        "status": status,
        "image": image,
        "hyperparameters": dict(hyperparameters),
        "metrics": dict(metrics),
        "model": model,
        "experiment": experiment,
        "run": run,
    }
    if tuning is not None:
        record["tuning"] = dict(tuning)
    return record


def record(entry: Mapping[str, Any], path: Path | None = None) -> None:
    """Append one run: a single write of one line, under a lock (threads) to a file opened for appending
    (processes), so that concurrent runs never interleave their lines."""
    path = path or registry()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
    with _lock:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)


def record_safely(entry: Mapping[str, Any], warnings: TextIO | None = None) -> None:
    """record(), where a registry that cannot be written is a warning (on stderr): the run itself went well."""
    try:
        record(entry)
    except OSError as error:
        print(f"optml: warning: could not record the run in {registry()}: {error}", file=warnings or sys.stderr)


def read(path: Path | None = None, experiment: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """The runs, newest first (by end time; a line that is not a record is skipped); `limit` 0: all."""
    path = path or registry()
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and (experiment is None or entry.get("experiment") == experiment):
            entries.append(entry)
    entries.reverse()  # the file's order is the order they ended: a stable tie-break, newest first
    entries.sort(key=lambda entry: str(entry.get("time", "")), reverse=True)
    return entries[:limit] if limit else entries


def experiment_of(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """--experiment and --run (dest run_name: `run` is where main() finds the command's function)."""
    return getattr(args, "experiment", None), getattr(args, "run_name", None)


def shown_metrics(metrics: Mapping[str, float]) -> str:
    channel = "validation" if any(name.startswith("validation:") for name in metrics) else "train"
    shown = [(name, metrics[f"{channel}:{name}"]) for name in SHOWN_METRICS if f"{channel}:{name}" in metrics]
    return " ".join(f"{name}={value:.4g}" for name, value in shown[:3])


def table(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    rows = [("ended", "kind", "name", "status", "experiment/run", "metrics", "hyperparameters", "model")]
    for entry in entries:
        hyperparameters = ",".join(
            f"{key}={value}" for key, value in entry.get("hyperparameters", {}).items() if not key.startswith("_")
        )
        experiment = "/".join(part for part in (entry.get("experiment"), entry.get("run")) if part)
        model = entry.get("model")
        rows.append(
            (
                str(entry.get("time", ""))[:19].replace("T", " "),
                str(entry.get("kind", "")),
                clip(str(entry.get("name", "")), 40),
                str(entry.get("status", "")),
                clip(experiment, 30) or "-",
                shown_metrics(entry.get("metrics", {})) or "-",
                clip(hyperparameters, 40) or "-",
                shown_path(Path(model)) if model else "-",
            )
        )
    return aligned(rows, indent="")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "runs",
        help="list the local runs: train --local jobs and tune --local trials, newest first",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--limit", type=non_negative, default=DEFAULT_LIMIT, metavar="N", help=f"default {DEFAULT_LIMIT}; 0 = all"
    )
    parser.add_argument("--experiment", metavar="NAME", help="only the runs of this experiment")
    parser.add_argument("--json", action="store_true", help="the records as a JSON list (every metric)")
    parser.set_defaults(run=run)


def non_negative(text: str) -> int:
    return 0 if text.strip() == "0" else jobs.positive(text)


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    entries = read(experiment=args.experiment, limit=args.limit)
    if args.json:
        print(json.dumps(entries, indent=2), file=out)
    elif not entries:
        where = f" of experiment {args.experiment}" if args.experiment else ""
        print(f"no runs{where} recorded in {registry()} yet", file=out)
    else:
        print(*table(entries), sep="\n", file=out)
    return 0
