"""Regenerate the README's hyperparameter tables from train/hyperparameters.py (the one source of truth).

python -m tools.hyperparameter_table          # rewrite README.md between the markers
python -m tools.hyperparameter_table --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from optml.train.hyperparameters import describe

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- hyperparameters:start -->", "<!-- hyperparameters:end -->"
TITLES = {
    "data": "Task and data",
    "model": "Model",
    "optimization": "Optimization",
    "checkpointing": "Checkpointing",
    "regularization": "Regularization",
    "loss": "Loss",
    "evaluation": "Evaluation and cross-validation",
    "bias": "Bias (SageMaker Clarify's metrics)",
    "explain": "Explanations (SHAP)",
    "rules": "Training rules (SageMaker Debugger's), profiling and TensorBoard",
}


def markdown() -> str:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in describe():
        groups.setdefault(row["group"], []).append(row)
    lines = []
    for group, rows in groups.items():
        lines += [f"**{TITLES[group]}**", "", "| name | values | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{r['name']}` | {r['expected']} | `{r['default']}` | {r['help']} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def updated(readme: str) -> str:
    start, end = readme.index(START) + len(START), readme.index(END)
    return readme[:start] + "\n" + markdown() + readme[end:]


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    if "--check" in argv:
        return 0 if updated(text) == text else 1
    README.write_text(updated(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
