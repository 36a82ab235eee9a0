"""The network architectures, as pure `nn.Module`s built from a JSON-able spec.

They live beside the artifact format, not in train/, because serving rebuilds the network from the
spec saved with the weights: the spec *is* part of the saved model's format.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkSpec:
    """What it takes to rebuild a network before loading its weights."""

    kind: str
    in_features: int
    out_features: int
    hidden_units: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["hidden_units"] = list(self.hidden_units)
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> NetworkSpec:
        hidden = data.get("hidden_units", [])
        assert isinstance(hidden, list)
        return cls(
            kind=str(data["kind"]),
            in_features=int(str(data["in_features"])),
            out_features=int(str(data["out_features"])),
            hidden_units=tuple(int(units) for units in hidden),
        )


class MLP(nn.Module):
    """A multilayer perceptron for tabular data: Linear → ReLU blocks, then a linear head of raw logits."""

    def __init__(self, in_features: int, hidden_units: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for units in hidden_units:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features))


def build_network(spec: NetworkSpec) -> nn.Module:
    if spec.kind == "mlp":
        return MLP(spec.in_features, spec.hidden_units, spec.out_features)
    raise ValueError(f"unknown network kind {spec.kind!r}; this image knows: mlp")
