"""`optml tune --local` against the image: trials as containers on the bundled data, with optuna's TPE, the
median rule's pruning, a resumed study and parallel trials. Each trial trains 5 epochs (about 10 s)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import docker
import pytest

from optml.cli import runs, search, train, trials, tune_local
from optml.cli.main import main
from tests.conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DATA = REPO / "data" / "breast_cancer"
EPOCHS = "5"
LOSS = search.Objective("validation:loss", maximize=False)
# A learning rate of 10 or so is poor: the loss runs to thousands.
LEARNING_RATE = search.ContinuousRange("learning_rate", 1e-4, 10.0, "Logarithmic")


def channels() -> tuple[train.Channel, ...]:
    return (train.Channel("train", str(DATA / "train")), train.Channel("validation", str(DATA / "validation")))


def new_search(**changes: Any) -> search.Search:
    values: dict[str, Any] = {
        "ranges": (LEARNING_RATE,),
        "objective": LOSS,
        "strategy": "Bayesian",
        "early_stopping": False,
        "max_jobs": 2,
        "static_hyperparameters": {"epochs": EPOCHS},
        "metric_definitions": train.metric_definitions({}),
        "seed": 11,
    }
    return search.Search(**(values | changes))


def tune(image: str, output: Path, checked: search.Search, **options: Any) -> int:
    args = argparse.Namespace(
        ranges="ranges.json",
        hp=[f"epochs={EPOCHS}"],
        hp_file=None,
        metric=None,
        experiment="tune-local-test",
        run_name=None,
        parallel=None,
        output_path=str(output),
        study=None,
        image_uri=image,
        timeout=None,
    )
    for key, value in options.items():
        setattr(args, key, value)
    return tune_local.run(args, checked, channels())


def tuning(output: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((output / "tuning.json").read_text())
    return result


@pytest.fixture(scope="module")
def default_loss(docker_client: docker.DockerClient, image: str, tmp_path_factory: pytest.TempPathFactory) -> float:
    """validation:loss of one plain training with the default hyperparameters (but the same epochs)."""
    spec = trials.TrialSpec(
        image=image,
        folder=tmp_path_factory.mktemp("default") / "trial",
        channels=trials.mounted_channels(channels()),
        hyperparameters={"epochs": EPOCHS},
        metric_definitions=train.metric_definitions({}),
        objective=LOSS.metric,
    )
    result = trials.run_trial(docker_client, spec)
    assert result.status == trials.COMPLETED, (spec.folder / "log.txt").read_text()[-3000:]
    assert result.objective is not None
    return result.objective


def test_six_tpe_trials_beat_the_default_hyperparameters(
    tmp_path: Path, image: str, default_loss: float, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "search"
    assert tune(image, output, new_search(max_jobs=6)) == 0
    result = tuning(output)
    assert [t["number"] for t in result["trials"]] == [0, 1, 2, 3, 4, 5]
    rates = [float(t["hyperparameters"]["learning_rate"]) for t in result["trials"]]
    assert len(set(rates)) == 6
    best = result["trials"][result["best_trial"]]
    assert best["state"] == "complete"
    assert best["objective"] < default_loss, (best, default_loss)
    assert best["objective"] == min(t["objective"] for t in result["trials"] if t["state"] == "complete")
    model = Path(best["model"])
    assert model == output / f"trial-{best['number']:03d}" / "model"
    assert os.access(model / "model.safetensors", os.R_OK)
    out = capsys.readouterr().out
    assert f"best: trial {best['number']}, validation:loss=" in out
    assert f"model: {model}/" in out
    assert (
        "optml tune --ranges ranges.json --objective validation:loss --minimize --strategy Bayesian --max-jobs 6" in out
    )
    recorded = runs.read(experiment="tune-local-test")
    assert sorted(r["tuning"]["trial"] for r in recorded) == [0, 1, 2, 3, 4, 5]
    assert all(r["hyperparameters"]["_tuning_objective_metric"] == "validation:loss" for r in recorded)


def test_a_learning_rate_that_cannot_learn_is_pruned(
    tmp_path: Path, image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rates = search.CategoricalRange("learning_rate", ("0.01", "0.03", "10"))
    output = tmp_path / "pruning"
    checked = new_search(strategy="Grid", ranges=(rates,), early_stopping=True, max_jobs=3, seed=5)
    assert tune(image, output, checked) == 0
    result = tuning(output)
    # The precondition: seed 5 orders the grid with the good rates first, so the median rule has two trials.
    assert [t["hyperparameters"]["learning_rate"] for t in result["trials"]] == ["0.01", "0.03", "10"]
    assert [t["state"] for t in result["trials"]] == ["complete", "complete", "pruned"]
    pruned = result["trials"][2]
    assert pruned["objective"] > 100 * result["trials"][0]["objective"]
    assert "SIGTERM received" in (output / "trial-002" / "log.txt").read_text()
    assert "pruned at epoch" in capsys.readouterr().out
    assert pruned["seconds"] < min(t["seconds"] for t in result["trials"][:2])


def test_a_resumed_study_continues_numbering_and_keeps_the_earlier_trials(tmp_path: Path, image: str) -> None:
    study = tmp_path / "kept" / "search.db"
    assert tune(image, tmp_path / "first", new_search(max_jobs=2), study=str(study)) == 0
    first = tuning(tmp_path / "first")["trials"]
    assert tune(image, tmp_path / "second", new_search(max_jobs=2), study=str(study)) == 0
    both = tuning(tmp_path / "second")["trials"]
    assert [t["number"] for t in both] == [0, 1, 2, 3]
    assert both[:2] == first
    assert {t["hyperparameters"]["learning_rate"] for t in both[2:]}.isdisjoint(
        t["hyperparameters"]["learning_rate"] for t in first
    )
    assert sorted(p.name for p in (tmp_path / "second").glob("trial-*")) == ["trial-002", "trial-003"]


def test_two_trials_at_a_time_complete_through_the_command(
    tmp_path: Path, image: str, docker_client: docker.DockerClient
) -> None:
    """End to end: `optml tune --local` from its command line, the ranges read from a YAML file."""
    ranges = tmp_path / "ranges.yaml"
    ranges.write_text("learning_rate: {min: 0.0001, max: 10, scaling: log}\ndropout: [0.0, 0.2]\n")
    output = tmp_path / "parallel"
    argv = ["tune", "--local", "--ranges", str(ranges), "--objective", "validation:loss", "--strategy", "Random"]
    argv += ["--max-jobs", "4", "--random-seed", "3", "--parallel", "2", "--hp", f"epochs={EPOCHS}"]
    argv += ["--channel", f"train={DATA / 'train'}", "--channel", f"validation={DATA / 'validation'}"]
    argv += ["--output-path", str(output), "--image-uri", image, "--experiment", "parallel", "--run", "two-at-a-time"]

    assert main(argv) == 0

    result = tuning(output)
    assert sorted(t["number"] for t in result["trials"]) == [0, 1, 2, 3]
    assert [t["state"] for t in result["trials"]] == ["complete"] * 4
    assert {t["hyperparameters"]["dropout"] for t in result["trials"]} <= {"0.0", "0.2"}
    assert docker_client.containers.list(all=True, filters={"label": trials.LABEL}) == []
    recorded = runs.read(experiment="parallel")
    assert [r["run"] for r in recorded] == ["two-at-a-time"] * 4
