"""How closely expected gradients ("gradient_shap") sum to the score on trained networks, per step count.

DeepLIFT-SHAP sums exactly (float32 rounding); expected gradients integrate numerically, so their sum is off
by the quadrature error, which `optml.container.explain.TOLERANCE["gradient_shap"]` bounds. This trains small
LSTM, GRU and CNN nets for 300 Adam steps on a synthetic target (a sum of every third input) for each task and
prints the largest |base_value + sum(attributions) - score| over 200 rows, in probability (classification) or
as a fraction of target_std (regression).

    .venv/bin/python -m benchmarks.explain_completeness --steps 32 64 128
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import optml.container.explain as explain
from optml.container.artifact import Label, ModelArtifact, ModelMetadata
from optml.container.kinds import BINARY, MULTICLASS, REGRESSION
from optml.container.networks import NetworkSpec, build_network

ROWS = 2000


def trained(kind: str, task: str, data: np.ndarray) -> ModelArtifact:
    shape = (1, 8, 8) if kind == "cnn" else (16, 4)
    total = data[:, ::3].sum(1)
    labels = {REGRESSION: total * 5 + 1, BINARY: (total > 0).astype(float), MULTICLASS: np.digitize(total, [-2, 2])}
    target = labels[task].astype(np.float32)
    mean, std = (float(target.mean()), float(target.std())) if task == REGRESSION else (0.0, 1.0)
    spec = NetworkSpec(kind, shape, 3 if task == MULTICLASS else 1, (32,), hidden_size=32, conv_channels=(8, 16))
    network = build_network(spec)
    optimizer = torch.optim.Adam(network.parameters(), 1e-2)
    inputs, targets = torch.from_numpy(data).reshape(-1, *shape), torch.from_numpy(target)
    for _ in range(300):
        batch = torch.randint(0, ROWS, (128,))
        outputs = network(inputs[batch])
        if task == REGRESSION:
            loss = ((outputs[:, 0] - (targets[batch] - mean) / std) ** 2).mean()
        elif task == BINARY:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], targets[batch])
        else:
            loss = torch.nn.functional.cross_entropy(outputs, targets[batch].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classes: list[Label] = [] if task == REGRESSION else list(range(3 if task == MULTICLASS else 2))
    count = data.shape[1]
    metadata = ModelMetadata(task, spec, count, [0.0] * count, [1.0] * count, classes, target_mean=mean, target_std=std)
    return ModelArtifact(network.eval(), metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 64, 128])
    args = parser.parse_args()
    torch.manual_seed(0)
    data = np.random.default_rng(0).normal(size=(ROWS, 64)).astype(np.float32)
    background = explain.summarize_background(data, 10, "kmeans", seed=0)
    models = {
        (kind, task): trained(kind, task, data)
        for kind in ("lstm", "gru", "cnn")
        for task in (BINARY, MULTICLASS, REGRESSION)
    }
    print("| network | task | " + " | ".join(f"{steps} steps" for steps in args.steps) + " |")
    print("|---|---|" + "---:|" * len(args.steps))
    for (kind, task), artifact in models.items():
        gaps = []
        for steps in args.steps:
            explain.GRADIENT_STEPS = steps
            explained = explain.Explainer(artifact, background).explain(data[:200])
            gap = np.abs(explained.base_values + explained.values.sum(1) - explained.scores).max()
            gaps.append(gap / artifact.metadata.target_std if task == REGRESSION else gap)
        print(f"| {kind} | {task} | " + " | ".join(f"{gap:.4f}" for gap in gaps) + " |")


if __name__ == "__main__":
    main()
