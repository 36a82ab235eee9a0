"""`optml tune --local` without Docker: the log read with the image's own metric definitions, the search space in
optuna's terms, the study file, the leaderboard, the AWS command, and the trials' orchestration with a stand-in
for the container."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from optml.cli import runs, search, train, trials, tune_local
from optml.cli.errors import CliError
from optml.container.logs import format_metric_line

DEFINITIONS = train.metric_definitions({})
LOSS = search.Objective("validation:loss", maximize=False)
RANGES: tuple[search.Range, ...] = (
    search.ContinuousRange("learning_rate", 1e-4, 1.0, "Logarithmic"),
    search.IntegerRange("batch_size", 16, 128),
    search.CategoricalRange("hidden_units", ("16", "64,32")),
)


def metric_line(prefix: str, loss: float, accuracy: float) -> str:
    return format_metric_line(
        prefix, {"train:loss": loss * 2, "validation:accuracy": accuracy, "validation:loss": loss}
    )


def new_search(**changes: Any) -> search.Search:
    values: dict[str, Any] = {
        "ranges": RANGES,
        "objective": LOSS,
        "strategy": "Bayesian",
        "early_stopping": False,
        "max_jobs": 4,
        "static_hyperparameters": {"epochs": "5"},
        "metric_definitions": DEFINITIONS,
        "seed": 7,
    }
    return search.Search(**(values | changes))


def tune_args(**changes: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "ranges": "ranges.json",
        "hp": ["epochs=5"],
        "hp_file": None,
        "metric": None,
        "experiment": None,
        "run": None,
        "parallel": None,
        "output_path": None,
        "study": None,
        "image_uri": None,
        "timeout": None,
    }
    return argparse.Namespace(**(values | changes))


# -- the log ------------------------------------------------------------------------------------------------------


def test_the_objective_is_read_at_every_epoch_and_the_restored_line_gives_the_final_value() -> None:
    reader = trials.MetricReader(DEFINITIONS, "validation:loss")
    log = [
        "2026-12-01 10:00:00,000 INFO optml.train: training mlp on 455 rows",
        metric_line("epoch=1", 0.5, 0.8),
        metric_line("epoch=2", 0.2, 0.9),
        metric_line("epoch=3", 0.3, 0.95),
        "2026-12-01 10:00:03,000 INFO optml.train.callbacks: restored the weights of epoch 2 (best validation:loss)",
        metric_line("restored epoch=2", 0.2, 0.9),
    ]
    assert reader.feed_all(log) == [(1, 0.5), (2, 0.2), (3, 0.3)]  # the restored line is no new epoch
    assert reader.objective_value == 0.2  # the last value, as SageMaker's tuner reads it: the saved model's
    assert reader.metrics == {"train:loss": 0.4, "validation:accuracy": 0.9, "validation:loss": 0.2}


def test_a_metric_whose_name_ends_another_is_not_taken_for_it() -> None:
    reader = trials.MetricReader(DEFINITIONS, "validation:loss")
    assert reader.feed("epoch=1 validation:log_loss=0.7 train:loss=0.6;") is None
    assert reader.objective_value is None
    assert reader.metrics == {"validation:log_loss": 0.7, "train:loss": 0.6}


def test_a_script_metric_of_its_own_is_read_with_its_regex() -> None:
    reader = trials.MetricReader([*DEFINITIONS, {"Name": "my_loss", "Regex": r"my_loss=([0-9.]+)"}], "my_loss")
    assert reader.feed_all(["epoch=1 step done my_loss=0.25", "epoch=2 my_loss=0.125", "final my_loss=0.5"]) == [
        (1, 0.25),
        (2, 0.125),
    ]
    assert reader.objective_value == 0.5


def test_an_objective_the_job_does_not_send_is_refused() -> None:
    with pytest.raises(CliError, match="no metric definition named validation:nope"):
        trials.MetricReader(DEFINITIONS, "validation:nope")


def test_log_chunks_are_cut_into_whole_lines() -> None:
    chunks = [b"epoch=1 validation:lo", b"ss=0.5;\r\nnext\n", b"last without newline"]
    assert list(trials.log_lines(chunks)) == ["epoch=1 validation:loss=0.5;", "next", "last without newline"]


# -- a trial's /opt/ml ----------------------------------------------------------------------------------------------


def test_a_trial_folder_is_the_opt_ml_tree_of_a_training_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "validation.csv").write_text("1,2\n")
    spec = trials.TrialSpec(
        image="optml:latest",
        folder=tmp_path / "out" / "trial-000",
        channels=(
            trials.MountedChannel("train", data / "train", "text/csv"),
            trials.MountedChannel("validation", data / "validation.csv"),
        ),
        hyperparameters={"epochs": "5", "_tuning_objective_metric": "validation:loss"},
        metric_definitions=DEFINITIONS,
        objective="validation:loss",
    )
    trials.write_opt_ml(spec)
    config = spec.folder / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == spec.hyperparameters
    assert json.loads((config / "inputdataconfig.json").read_text()) == {
        "train": {"TrainingInputMode": "File", "ContentType": "text/csv"},
        "validation": {"TrainingInputMode": "File"},
    }
    assert json.loads((config / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    assert (spec.folder / "model").is_dir() and (spec.folder / "output" / "data").is_dir()
    assert trials.volumes(spec) == {
        str(spec.folder): {"bind": "/opt/ml", "mode": "rw"},
        str(data / "train"): {"bind": "/opt/ml/input/data/train", "mode": "ro"},
        str(data / "validation.csv"): {"bind": "/opt/ml/input/data/validation/validation.csv", "mode": "ro"},
    }


def test_a_failed_trial_says_why_with_the_first_line_of_its_failure_file(tmp_path: Path) -> None:
    assert trials.trial_failure(tmp_path, 0, False, None) is None
    assert trials.trial_failure(tmp_path, 137, False, None) == "exit code 137"
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "failure").write_text("\nunknown hyperparameter 'epoch'\nTraceback ...\n")
    assert trials.trial_failure(tmp_path, 2, False, None) == "exit code 2: unknown hyperparameter 'epoch'"
    assert trials.trial_failure(tmp_path, 143, True, 60) == "gave up after 60 s (--timeout)"


def test_a_missing_channel_folder_is_named_before_any_container(tmp_path: Path) -> None:
    channels = (train.Channel("train", str(tmp_path / "nothing")),)
    with pytest.raises(CliError, match=r"--channel train=.*nothing does not exist"):
        trials.mounted_channels(channels)


# -- the search space and the strategy ----------------------------------------------------------------------------


def test_each_range_and_scaling_maps_to_its_optuna_distribution() -> None:
    ranges = (
        search.IntegerRange("epochs", 2, 9),
        search.IntegerRange("batch_size", 16, 256, "Logarithmic"),
        search.ContinuousRange("dropout", 0.0, 0.5, "Linear"),
        search.ContinuousRange("learning_rate", 1e-4, 0.1, "Logarithmic"),
        search.ContinuousRange("momentum", 0.5, 0.99, "ReverseLogarithmic"),
        search.CategoricalRange("optimizer", ("adam", "sgd")),
    )
    assert tune_local.distributions(ranges) == {
        "epochs": IntDistribution(2, 9),
        "batch_size": IntDistribution(16, 256, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "learning_rate": FloatDistribution(1e-4, 0.1, log=True),
        "1-momentum": FloatDistribution(1 - 0.99, 1 - 0.5, log=True),
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
    }
    params = {"epochs": 3, "batch_size": 32, "dropout": 0.25, "learning_rate": 0.01, "1-momentum": 0.125}
    assert tune_local.hyperparameter_values(ranges, params | {"optimizer": "sgd"}) == {
        "epochs": "3",
        "batch_size": "32",
        "dropout": "0.25",
        "learning_rate": "0.01",
        "momentum": "0.875",
        "optimizer": "sgd",
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (search.ContinuousRange("momentum", 0.5, 1.0, "ReverseLogarithmic"), "within \\[0, 1\\)"),
        (search.IntegerRange("epochs", 1, 9, "ReverseLogarithmic"), "continuous range within"),
        (search.ContinuousRange("dropout", 0.0, 0.5, "Logarithmic"), "Logarithmic scaling needs a range above 0"),
    ],
)
def test_a_range_optuna_cannot_sample_is_refused(bad: search.Range, message: str) -> None:
    with pytest.raises(CliError, match=message):
        tune_local.distributions([bad])


def test_each_strategy_has_its_sampler_and_pruner() -> None:
    bayesian = tune_local.sampler_for(new_search(), 7, 6)
    assert isinstance(bayesian, optuna.samplers.TPESampler)
    assert bayesian._n_startup_trials == 2
    assert isinstance(tune_local.sampler_for(new_search(strategy="Random"), 7, 6), optuna.samplers.RandomSampler)
    hyperband = new_search(strategy="Hyperband", ranges=RANGES)
    assert isinstance(tune_local.sampler_for(hyperband, 7, 6), optuna.samplers.RandomSampler)
    pruner = tune_local.pruner_for(hyperband)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource) == (1, 5)  # epochs=5: every trial's budget
    assert search.hyperband_max_resource(new_search(static_hyperparameters={})) == 20  # the image's default epochs
    median = tune_local.pruner_for(new_search(early_stopping=True))
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert median._n_startup_trials == tune_local.MEDIAN_STARTUP_TRIALS
    assert isinstance(tune_local.pruner_for(new_search()), optuna.pruners.NopPruner)


def test_grid_takes_categorical_ranges_and_runs_each_point_once(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="Grid takes categorical ranges only: learning_rate"):
        tune_local.sampler_for(new_search(strategy="Grid"), None, 4)
    grid = new_search(
        strategy="Grid",
        max_jobs=10,
        ranges=(search.CategoricalRange("a", ("1", "2")), search.CategoricalRange("b", ("x", "y", "z"))),
    )
    study = tune_local.open_study(tmp_path / "study.db", grid)
    assert tune_local.trials_to_run(study, grid) == 6
    study.sampler = tune_local.sampler_for(grid, 0, 6)
    seen = set()
    for _ in range(6):  # GridSampler's own after_trial would call study.stop(), which ask-and-tell cannot
        trial = study.ask(tune_local.distributions(grid.ranges))
        seen.add((trial.params["a"], trial.params["b"]))
        study.tell(trial, 1.0)
    assert len(seen) == 6
    assert tune_local.trials_to_run(study, grid) == 0


# -- the study file ------------------------------------------------------------------------------------------------


def test_a_study_resumes_only_for_the_same_objective_and_direction(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    study = tune_local.open_study(path, new_search())
    study.add_trial(create_trial(value=0.5, params={}, distributions={}))
    again = tune_local.open_study(path, new_search())
    assert [t.value for t in again.trials] == [0.5]
    with pytest.raises(CliError, match="holds a search to minimize validation:loss, not to minimize validation:f1"):
        tune_local.open_study(path, new_search(objective=search.Objective("validation:f1", False)))
    with pytest.raises(CliError, match="not to maximize validation:loss"):
        tune_local.open_study(path, new_search(objective=search.Objective("validation:loss", True)))


def test_a_file_that_is_no_study_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database")
    with pytest.raises(CliError, match="not an optuna study file"):
        tune_local.open_study(path, new_search())


def test_trial_folders_of_another_search_are_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "trial-000").mkdir()
    (tmp_path / "trial-001").mkdir()
    tune_local.refuse_trial_folders(tmp_path, 2)  # a resumed study: its own folders
    with pytest.raises(CliError, match="holds trial-001 of another search"):
        tune_local.refuse_trial_folders(tmp_path, 1)


# -- what it prints ------------------------------------------------------------------------------------------------


def frozen(number: int, state: TrialState, value: float | None, lr: str, **attrs: Any) -> optuna.trial.FrozenTrial:
    trial = create_trial(
        state=state,
        value=value,
        params={},
        distributions={},
        user_attrs={"hyperparameters": {"learning_rate": lr, "hidden_units": "16"}, "seconds": 12.3} | attrs,
        intermediate_values={1: 9.5, 2: 8.25} if state == TrialState.PRUNED else {},
    )
    trial.number = number
    return trial


def test_the_leaderboard_lists_the_best_first_then_pruned_then_failed() -> None:
    board = [
        frozen(0, TrialState.COMPLETE, 0.3, "0.001"),
        frozen(1, TrialState.FAIL, None, "0.5", failure="exit code 2: loss is nan"),
        frozen(2, TrialState.PRUNED, None, "10"),
        frozen(3, TrialState.COMPLETE, 0.125, "0.012164941464151846"),
    ]
    lines = tune_local.leaderboard(board, LOSS, ["learning_rate", "hidden_units"])
    assert [line.split() for line in lines] == [
        ["trial", "state", "validation:loss", "learning_rate", "hidden_units", "seconds", "note"],
        ["3", "complete", "0.125", "0.0121649", "16", "12"],
        ["0", "complete", "0.3", "0.001", "16", "12"],
        ["2", "pruned", "8.25", "10", "16", "12", "pruned", "at", "epoch", "2"],
        ["1", "fail", "-", "0.5", "16", "12", "exit", "code", "2:", "loss", "is", "nan"],
    ]
    maximize = tune_local.leaderboard(board, search.Objective("validation:loss", True), [])
    assert [line.split()[0] for line in maximize[1:]] == ["0", "3", "2", "1"]


def test_the_aws_command_repeats_the_search_with_placeholders_to_fill_in() -> None:
    args = tune_args(
        hp=["epochs=5", "hidden_units=64,32"],
        hp_file="base hps.json",
        metric=["my_loss=my_loss=([0-9.]+)"],
        experiment="churn",
        run_name="lr-search",
        parallel=2,
    )
    channels = (train.Channel("train", "data/train", "text/csv"), train.Channel("validation", "data/validation"))
    command = tune_local.aws_command(args, new_search(early_stopping=True, max_jobs=6), channels)
    assert command == [
        "optml tune --ranges ranges.json --objective validation:loss --minimize --strategy Bayesian --max-jobs 6"
        " --max-parallel-jobs 2 --early-stopping auto --random-seed 7 \\",
        "--hp-file 'base hps.json' --hp epochs=5 --hp hidden_units=64,32 --metric 'my_loss=my_loss=([0-9.]+)'"
        " --experiment churn --run lr-search \\",
        "--image-uri ACCOUNT.dkr.ecr.REGION.amazonaws.com/optml:latest --role arn:aws:iam::ACCOUNT:role/ROLE \\",
        "--channel train=s3://BUCKET/PREFIX/train --channel validation=s3://BUCKET/PREFIX/validation"
        " --content-type train=text/csv \\",
        "--output-path s3://BUCKET/PREFIX/tuning --region REGION --wait",
    ]


# -- the trials, with a stand-in for the container ----------------------------------------------------------------


class NoContainers:
    """A Docker client whose engine has nothing of this search left to remove."""

    class containers:  # noqa: N801 - the SDK's attribute
        @staticmethod
        def list(**filters: Any) -> list[Any]:
            return []


def fake_run_trial(losses: dict[str, list[float]]) -> Callable[..., trials.TrialResult]:
    """A trial whose objective at each epoch is `losses[learning_rate]`; it stops when told to, as the container."""

    def run(client: object, spec: trials.TrialSpec, on_epoch: Callable[[int, float], bool]) -> trials.TrialResult:
        trials.write_opt_ml(spec)
        curve = losses[spec.hyperparameters["learning_rate"]]
        for epoch, loss in enumerate(curve, start=1):
            if on_epoch(epoch, loss):
                return trials.TrialResult(trials.PRUNED, loss, {"validation:loss": loss}, 1.0)
        if curve[-1] < 0:
            return trials.TrialResult(trials.FAILED, None, {}, 1.0, "exit code 1: no data")
        return trials.TrialResult(trials.COMPLETED, curve[-1], {"validation:loss": curve[-1]}, 1.0)

    return run


def local_search(tmp_path: Path, checked: search.Search, budget: int) -> tune_local.LocalSearch:
    study = tune_local.open_study(tmp_path / "study.db", checked)
    study.sampler = tune_local.sampler_for(checked, checked.seed, budget)
    study.pruner = tune_local.pruner_for(checked)
    return tune_local.LocalSearch(
        study,
        NoContainers(),
        checked,
        "optml:latest",
        tmp_path,
        (),
        budget,
        experiment="churn",
        out=io.StringIO(),
        progress=io.StringIO(),
    )


def test_trials_are_asked_run_told_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    losses = {"0.01": [0.5, 0.3, 0.2], "0.03": [0.4, 0.25, 0.15], "10": [90.0, 80.0, 70.0], "1": [0.5, -1.0]}
    monkeypatch.setattr(trials, "run_trial", fake_run_trial(losses))
    checked = new_search(strategy="Grid", ranges=(search.CategoricalRange("learning_rate", tuple(losses)),))
    local = local_search(tmp_path, checked, 4)
    tune_local.optimize(local, 1)
    by_lr = {t.user_attrs["hyperparameters"]["learning_rate"]: t for t in local.study.trials}
    assert {lr: t.state.name for lr, t in by_lr.items()} == {
        "0.01": "COMPLETE",
        "0.03": "COMPLETE",
        "10": "COMPLETE",  # no pruner without --early-stopping auto
        "1": "FAIL",
    }
    assert by_lr["1"].user_attrs["failure"] == "exit code 1: no data"
    assert by_lr["0.03"].value == 0.15
    assert by_lr["10"].intermediate_values == {1: 90.0, 2: 80.0, 3: 70.0}
    recorded = runs.read()
    assert len(recorded) == 4
    assert {r["kind"] for r in recorded} == {"tuning-trial"}
    assert {r["experiment"] for r in recorded} == {"churn"}
    assert sorted(r["tuning"]["trial"] for r in recorded) == [0, 1, 2, 3]
    board = local.out.getvalue()  # type: ignore[attr-defined]
    assert board.count("trial  state") == 4  # the leaderboard after each trial
    summary = tune_local.tuning_summary(local.study, checked, tmp_path / "study.db")
    assert summary["best_trial"] == by_lr["0.03"].number
    assert summary["trials"][by_lr["0.03"].number]["model"] == str(tmp_path / f"trial-{by_lr['0.03'].number:03d}/model")


def test_the_median_rule_prunes_a_trial_worse_than_the_earlier_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trials, "run_trial", fake_run_trial({"0.01": [0.5, 0.3], "0.03": [0.4, 0.2], "10": [9.0, 8.0]}))
    checked = new_search(
        strategy="Grid",
        early_stopping=True,
        seed=5,
        ranges=(search.CategoricalRange("learning_rate", ("0.01", "0.03", "10")),),
    )
    local = local_search(tmp_path, checked, 3)
    tune_local.optimize(local, 1)
    assert [t.params["learning_rate"] for t in local.study.trials] == ["0.01", "0.03", "10"]  # seed 5's order
    assert [t.state.name for t in local.study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert local.study.trials[2].intermediate_values == {1: 9.0}  # stopped at its first epoch
    assert "trial 2 epoch 1: validation:loss=9" in local.progress.getvalue()  # type: ignore[attr-defined]


def test_parallel_trials_each_get_their_own_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    barrier = threading.Barrier(2, timeout=30)
    run = fake_run_trial({str(lr): [lr] for lr in (0.001, 0.01, 0.1, 1.0)})

    def together(client: object, spec: trials.TrialSpec, on_epoch: Callable[[int, float], bool]) -> trials.TrialResult:
        barrier.wait()  # two trials at once, or the test times out
        return run(client, spec, on_epoch)

    monkeypatch.setattr(trials, "run_trial", together)
    checked = new_search(
        strategy="Random", ranges=(search.CategoricalRange("learning_rate", ("0.001", "0.01", "0.1", "1.0")),)
    )
    local = local_search(tmp_path, checked, 4)
    tune_local.optimize(local, 2)
    assert sorted(t.number for t in local.study.trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in local.study.trials)


def test_an_error_in_a_trial_stops_the_search_and_removes_its_containers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    removed = []

    def broken(client: object, spec: trials.TrialSpec, on_epoch: object) -> trials.TrialResult:
        raise KeyboardInterrupt  # as Ctrl-C would arrive

    monkeypatch.setattr(trials, "run_trial", broken)

    def remove_labelled(client: object, value: str) -> int:
        removed.append(value)
        return 0

    monkeypatch.setattr(trials, "remove_labelled", remove_labelled)
    local = local_search(tmp_path, new_search(), 3)
    with pytest.raises(KeyboardInterrupt):
        tune_local.optimize(local, 1)
    assert removed and set(removed) == {local.search_id}
    assert local.stopping.is_set() and not local.take()


def test_a_sigterm_stops_the_search_and_removes_its_containers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    removed: list[str] = []
    local = local_search(tmp_path, new_search(), 3)

    def terminated(client: object, spec: trials.TrialSpec, on_epoch: object) -> trials.TrialResult:
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a CI runner's timeout sends it, to the main thread
        deadline = time.monotonic() + 30
        while not local.stopping.is_set():  # until the search removes this trial's container
            assert time.monotonic() < deadline, "the search did not stop on SIGTERM"
            time.sleep(0.01)
        raise RuntimeError("container removed")

    monkeypatch.setattr(trials, "run_trial", terminated)

    def remove_labelled(client: object, value: str) -> int:
        removed.append(value)
        return 0

    monkeypatch.setattr(trials, "remove_labelled", remove_labelled)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        tune_local.optimize(local, 1)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert set(removed) == {local.search_id}
    assert [t.state.name for t in local.study.trials] == ["FAIL"]
    assert local.study.trials[0].user_attrs["failure"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) == handler  # put back as it was


# -- the command's checks before any container ----------------------------------------------------------------------


def test_run_needs_an_output_path() -> None:
    with pytest.raises(CliError, match="--output-path is required"):
        tune_local.run(tune_args(), new_search(), (train.Channel("train", "data/breast_cancer/train"),))


def test_run_checks_the_channels_before_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune_local, "engine_with_image", lambda image: pytest.fail("Docker reached"))
    with pytest.raises(CliError, match="does not exist"):
        tune_local.run(
            tune_args(output_path=str(tmp_path)), new_search(), (train.Channel("train", str(tmp_path / "missing")),)
        )


def test_an_image_that_is_not_here_is_one_line() -> None:
    import docker

    class Images:
        def get(self, name: str) -> None:
            raise docker.errors.ImageNotFound(name)

    class Client:
        images = Images()

    with pytest.raises(CliError, match="image optml:nope is not on this machine: build it"):
        tune_local.engine_with_image("optml:nope", lambda: Client())


def test_hyperband_prunes_with_the_epochs_as_its_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    curves = {lr: [float(lr) * (6 - epoch) for epoch in range(1, 6)] for lr in ("0.1", "1", "10", "100")}
    monkeypatch.setattr(trials, "run_trial", fake_run_trial(curves))
    checked = new_search(
        strategy="Hyperband", seed=1, ranges=(search.CategoricalRange("learning_rate", tuple(curves)),)
    )
    local = local_search(tmp_path, checked, 12)
    tune_local.optimize(local, 1)
    states = [t.state.name for t in local.study.trials]
    assert len(states) == 12 and set(states) <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in states
    assert all(max(t.intermediate_values) <= 5 for t in local.study.trials)
