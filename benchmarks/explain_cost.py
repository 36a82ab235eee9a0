"""What SHAP explanations cost: at the end of training, and per explained request.

Trains the bundled data (data/breast_cancer, 30 numeric columns) for 20 epochs with default hyperparameters
(early stopping off, so every epoch runs), then times what the integrated job adds: the k-means background of
the train rows, its file, and the global explanation of `explain_rows` validation rows with its plots. Then
one-row explanations against one-row predictions on the trained model, as serving makes them (the best of
`--repeats` runs of `--calls` calls: the run least disturbed by other work on the machine).

    .venv/bin/python benchmarks/explain_cost.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from optml.container.artifact import ModelArtifact, load_model
from optml.container.explain import Explainer, load_background, save_background, summarize_background
from optml.train.explanations import write_explanations
from optml.train.main import main as train_main

DATA = Path(__file__).resolve().parents[1] / "data" / "breast_cancer"


def train(root: Path) -> float:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    for channel in ("train", "validation"):
        shutil.copytree(DATA / channel, root / "input" / "data" / channel)
    hyperparameters = {"epochs": "20", "early_stopping_patience": "0"}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    channels = {c: {"ContentType": "text/csv", "TrainingInputMode": "File"} for c in ("train", "validation")}
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    os.environ["OPTML_ROOT"] = str(root)
    started = time.perf_counter()
    assert train_main([]) == 0, (root / "output" / "failure").read_text()
    return time.perf_counter() - started


def features(channel: str) -> np.ndarray:
    return np.loadtxt(next((DATA / channel).glob("*.csv")), delimiter=",", dtype=np.float32)[:, 1:]


def per_call_ms(function: object, rows: np.ndarray, calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for index in range(calls):
            function(rows[index % len(rows)][None, :])  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return 1000 * best / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--explain-rows", type=int, default=100)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as one gunicorn worker runs
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        training = train(root)
        artifact: ModelArtifact = load_model(root / "model")
        timings = {"training, 20 epochs": training}
        started = time.perf_counter()
        background = summarize_background(features("train"), 10, "kmeans", seed=0)
        save_background(root / "model", background)
        timings["background: k-means (10) + save"] = time.perf_counter() - started
        validation = features("validation")
        started = time.perf_counter()
        write_explanations(root / "explain", artifact, background, validation, args.explain_rows, plots=False)
        timings[f"global explanation ({args.explain_rows} rows), PDP"] = time.perf_counter() - started
        started = time.perf_counter()
        write_explanations(root / "explain", artifact, background, validation, args.explain_rows)
        timings["the same with its 2 plots"] = time.perf_counter() - started
        loaded = load_background(root / "model")
        assert loaded is not None
        explainer = Explainer(artifact, loaded)
        rows = features("validation")
        explain_ms = per_call_ms(explainer.explain, rows, args.calls, args.repeats)
        predict_ms = per_call_ms(artifact.predict, rows, args.calls, args.repeats)
    added = timings["background: k-means (10) + save"] + timings["the same with its 2 plots"]
    print(f"{'step':<45} {'seconds':>8}")
    for name, seconds in timings.items():
        print(f"{name:<45} {seconds:8.3f}")
    computed = (
        timings["background: k-means (10) + save"] + timings[f"global explanation ({args.explain_rows} rows), PDP"]
    )
    print(f"{'added / training, with the plots':<45} {added / training:8.1%}")
    print(f"{'added / training, without them':<45} {computed / training:8.1%}")
    print(f"\n{'per single-row call (1 thread)':<45} {'ms':>8}")
    print(f"{'Explainer.explain':<45} {explain_ms:8.3f}")
    print(f"{'ModelArtifact.predict':<45} {predict_ms:8.3f}")


if __name__ == "__main__":
    main()
