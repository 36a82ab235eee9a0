"""`optml runs` and its registry: records appended by train --local and tune --local, listed newest first."""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path

import pytest

from optml.cli import runs, train
from optml.cli.main import main


def entry(
    name: str, time: str, experiment: str | None = None, metrics: dict[str, float] | None = None
) -> dict[str, object]:
    record = runs.new_record(
        kind=runs.TRAIN,
        name=name,
        image="optml:latest",
        hyperparameters={"epochs": "5", "_tuning_objective_metric": "validation:loss"},
        metrics=metrics or {"validation:loss": 0.1, "validation:accuracy": 0.95},
        model=f"/runs/{name}/model.tar.gz",
        status="completed",
        experiment=experiment,
    )
    record["time"] = time
    return record


def test_the_registry_is_a_fresh_folder_in_every_test() -> None:
    assert runs.registry() == Path(os.environ["OPTML_HOME"]) / "runs.jsonl"
    assert not str(runs.registry()).startswith(str(Path.home() / ".optml"))
    assert runs.read() == []


def test_runs_are_listed_newest_first_filtered_and_limited() -> None:
    runs.record(entry("b", "2026-12-01T10:00:02+00:00", "churn"))
    runs.record(entry("a", "2026-12-01T10:00:01+00:00", "churn"))
    runs.record(entry("c", "2026-12-01T10:00:03+00:00", "other"))
    assert [r["name"] for r in runs.read()] == ["c", "b", "a"]
    assert [r["name"] for r in runs.read(experiment="churn")] == ["b", "a"]
    assert [r["name"] for r in runs.read(limit=1)] == ["c"]


def test_runs_that_ended_in_the_same_instant_keep_the_file_order_reversed() -> None:
    for name in ("first", "second"):
        runs.record(entry(name, "2026-12-01T10:00:00+00:00"))
    assert [r["name"] for r in runs.read()] == ["second", "first"]


def test_a_line_that_is_not_a_record_is_skipped() -> None:
    runs.record(entry("a", "2026-12-01T10:00:01+00:00"))
    with runs.registry().open("a") as file:
        file.write("not json\n[1, 2]\n")
    runs.record(entry("b", "2026-12-01T10:00:02+00:00"))
    assert [r["name"] for r in runs.read()] == ["b", "a"]


def test_concurrent_appends_never_interleave() -> None:
    def append(worker: int) -> None:
        for number in range(50):
            runs.record(entry(f"w{worker}-{number}", f"2026-12-01T10:00:00.{number:06d}+00:00", "x" * 2000))

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = runs.registry().read_text().splitlines()
    assert len(lines) == 400
    assert sorted(json.loads(line)["name"] for line in lines) == sorted(
        f"w{w}-{n}" for w in range(8) for n in range(50)
    )


def test_new_record_holds_what_the_table_shows() -> None:
    record = runs.new_record(
        kind=runs.TUNING_TRIAL,
        name="out/trial-003",
        image="optml:latest",
        hyperparameters={"learning_rate": "0.01"},
        metrics={"validation:loss": 0.2},
        model="out/trial-003/model",
        status="pruned",
        experiment="churn",
        run="lr",
        tuning={"study": "out", "trial": 3},
    )
    assert record["time"].endswith("+00:00")
    assert {k: v for k, v in record.items() if k != "time"} == {
        "kind": "tuning-trial",
        "name": "out/trial-003",
        "status": "pruned",
        "image": "optml:latest",
        "hyperparameters": {"learning_rate": "0.01"},
        "metrics": {"validation:loss": 0.2},
        "model": "out/trial-003/model",
        "experiment": "churn",
        "run": "lr",
        "tuning": {"study": "out", "trial": 3},
    }


def test_the_table_shows_the_main_validation_metrics_and_the_algorithm_hyperparameters() -> None:
    lines = runs.table([entry("job-1", "2026-12-01T10:00:01.123456+00:00", "churn")])
    assert lines[0].split() == [
        "ended",
        "kind",
        "name",
        "status",
        "experiment/run",
        "metrics",
        "hyperparameters",
        "model",
    ]
    assert lines[1].split() == [
        "2026-12-01",
        "10:00:01",
        "train",
        "job-1",
        "completed",
        "churn",
        "loss=0.1",
        "accuracy=0.95",
        "epochs=5",
        "/runs/job-1/model.tar.gz",
    ]


def test_optml_runs_prints_the_table_newest_first(capsys: pytest.CaptureFixture[str]) -> None:
    runs.record(entry("older", "2026-12-01T10:00:01+00:00", "churn"))
    runs.record(entry("newer", "2026-12-01T10:00:02+00:00", "churn"))
    runs.record(entry("elsewhere", "2026-12-01T10:00:03+00:00", "other"))
    assert main(["runs", "--experiment", "churn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines[1:]] == ["newer", "older"]


def test_optml_runs_json_has_every_record_field(capsys: pytest.CaptureFixture[str]) -> None:
    runs.record(entry("a", "2026-12-01T10:00:01+00:00", metrics={"validation:f1": 0.9}))
    assert main(["runs", "--json", "--limit", "0"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed] == ["a"]
    assert listed[0]["metrics"] == {"validation:f1": 0.9}


def test_optml_runs_says_where_it_looked_when_there_is_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs"]) == 0
    assert capsys.readouterr().out.strip() == f"no runs recorded in {runs.registry()} yet"
    assert main(["runs", "--experiment", "churn"]) == 0
    assert capsys.readouterr().out.strip() == f"no runs of experiment churn recorded in {runs.registry()} yet"


def test_optml_runs_refuses_a_negative_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["runs", "--limit", "-1"])
    assert "-1 must be at least 1" in capsys.readouterr().err


def test_a_registry_that_cannot_be_written_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("OPTML_HOME", str(blocker / "home"))
    warnings = []

    class Sink:
        def write(self, text: str) -> None:
            warnings.append(text)

    runs.record_safely(entry("a", "2026-12-01T10:00:01+00:00"), Sink())  # type: ignore[arg-type]
    assert "optml: warning: could not record the run in" in "".join(warnings)


def test_train_locally_records_its_run_from_its_summary() -> None:
    args = argparse.Namespace(experiment="churn", run_name=None)
    result = {
        "run": "optml-local-20261201-100000-ab12",
        "model_data": "/out/model.tar.gz",
        "metrics": {"epoch": 5.0, "validation:loss": 0.12},
    }
    train.record_local_run(args, "optml:latest", {"epochs": "5"}, result)
    train.record_local_run(argparse.Namespace(), "optml:latest", {}, {"run": "x", "error": "boom"})
    failed, completed = runs.read()
    assert (failed["name"], failed["status"], failed["model"], failed["experiment"]) == ("x", "failed", None, None)
    assert {k: completed[k] for k in ("kind", "name", "status", "model", "experiment", "run", "metrics")} == {
        "kind": "train",
        "name": "optml-local-20261201-100000-ab12",
        "status": "completed",
        "model": "/out/model.tar.gz",
        "experiment": "churn",
        "run": None,
        "metrics": {"epoch": 5.0, "validation:loss": 0.12},
    }
    assert completed["hyperparameters"] == {"epochs": "5"}


def test_experiment_of_reads_the_options_as_the_commands_parse_them() -> None:
    from optml.cli.main import build_parser

    for command in ("train", "tune"):
        extra = ("--ranges", "r.json", "--objective", "validation:loss") if command == "tune" else ()
        argv = [command, "--local", "--channel", "train=t", *extra, "--experiment", "e", "--run", "r"]
        args = build_parser().parse_args(argv)
        assert runs.experiment_of(args) == ("e", "r")
        assert callable(args.run)  # main() still finds the command's function
    assert runs.experiment_of(argparse.Namespace()) == (None, None)
