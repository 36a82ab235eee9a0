"""The network architectures, as pure `nn.Module`s built from a JSON-able spec.

They live beside the artifact format, not in train/, because serving rebuilds the network from the
spec saved with the weights: the spec *is* part of the saved model's format.

Every network is a sequence of *blocks* (`network.blocks`), the unit `freeze_layers` counts in:
an MLP block is Linear → [BatchNorm] → activation → [Dropout]; a CNN block is Conv → [BatchNorm] →
activation → MaxPool; a recurrent network's first block is the whole RNN/LSTM/GRU stack. The output
layer (`network.head`) is never a block, so it always trains. Outputs are raw logits: the task decides
the output activation (sigmoid, softmax or none), in the loss and in `optml.container.artifact.Predictor`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from optml.container.kinds import ACTIVATION_NAMES, MODELS, SEQUENCE_MODELS

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
# Per-row input rank each model kind expects: features, channels×height×width, time×features.
INPUT_RANK = {"mlp": 1, "cnn": 3, "rnn": 2, "lstm": 2, "gru": 2}


@dataclass(frozen=True)
class NetworkSpec:
    """What it takes to rebuild a network before loading its weights."""

    kind: str
    input_shape: tuple[int, ...]  # one row: (features,), (channels, height, width) or (time, features)
    out_features: int
    hidden_units: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    conv_channels: tuple[int, ...] = (16, 32)
    kernel_size: int = 3
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "out_features": self.out_features,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
            "conv_channels": list(self.conv_channels),
            "kernel_size": self.kernel_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkSpec:
        return cls(
            kind=str(data["kind"]),
            input_shape=tuple(int(v) for v in data["input_shape"]),
            out_features=int(data["out_features"]),
            hidden_units=tuple(int(v) for v in data.get("hidden_units", ())),
            activation=str(data.get("activation", "relu")),
            dropout=float(data.get("dropout", 0.0)),
            batch_norm=bool(data.get("batch_norm", False)),
            conv_channels=tuple(int(v) for v in data.get("conv_channels", (16, 32))),
            kernel_size=int(data.get("kernel_size", 3)),
            hidden_size=int(data.get("hidden_size", 64)),
            num_layers=int(data.get("num_layers", 1)),
            bidirectional=bool(data.get("bidirectional", False)),
        )


def _dense_blocks(width: int, spec: NetworkSpec) -> tuple[list[nn.Module], int]:
    blocks: list[nn.Module] = []
    for units in spec.hidden_units:
        layers: list[nn.Module] = [nn.Linear(width, units)]
        if spec.batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(ACTIVATIONS[spec.activation]())
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        blocks.append(nn.Sequential(*layers))
        width = units
    return blocks, width


class MLP(nn.Module):
    """Multilayer perceptron for tabular rows."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        blocks, width = _dense_blocks(spec.input_shape[0], spec)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(width, spec.out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            features = block(features)
        return self.head(features)


class CNN(nn.Module):
    """Convolution + pooling blocks, then dense blocks, for images shaped channels × height × width."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        channels, height, width = spec.input_shape
        blocks: list[nn.Module] = []
        for out_channels in spec.conv_channels:
            layers: list[nn.Module] = [
                nn.Conv2d(channels, out_channels, spec.kernel_size, padding=spec.kernel_size // 2)
            ]
            if spec.batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(ACTIVATIONS[spec.activation]())
            if min(height, width) >= 2:  # pool while there is something left to pool
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            blocks.append(nn.Sequential(*layers))
            channels = out_channels
        self.conv_block_count = len(blocks)
        dense, dense_width = _dense_blocks(channels * height * width, spec)
        self.blocks = nn.ModuleList(blocks + dense)
        self.head = nn.Linear(dense_width, spec.out_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            if index == self.conv_block_count:
                images = images.flatten(1)
            images = block(images)
        if self.conv_block_count == len(self.blocks):
            images = images.flatten(1)
        return self.head(images)


class RecurrentNet(nn.Module):
    """RNN / LSTM / GRU over sequences shaped time × features; the last hidden state feeds the head."""

    CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
    # TorchScript (the model.pt export) compiles properties too, and cannot type this one: leave it out.
    __jit_unused_properties__ = ["recurrent"]

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        recurrent = self.CELLS[spec.kind](
            input_size=spec.input_shape[1],
            hidden_size=spec.hidden_size,
            num_layers=spec.num_layers,
            batch_first=True,
            bidirectional=spec.bidirectional,
            dropout=spec.dropout if spec.num_layers > 1 else 0.0,
        )
        self.directions = 2 if spec.bidirectional else 1
        dense, width = _dense_blocks(spec.hidden_size * self.directions, spec)
        self.blocks = nn.ModuleList([recurrent, *dense])
        self.head = nn.Linear(width, spec.out_features)

    @property
    def recurrent(self) -> nn.RNNBase:
        layer = self.blocks[0]
        assert isinstance(layer, nn.RNNBase)
        return layer

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        _, hidden = self.blocks[0](sequences)  # the recurrent stack (`self.recurrent`, which TorchScript skips)
        if isinstance(hidden, tuple):  # LSTM returns (h_n, c_n)
            hidden = hidden[0]
        # h_n is (layers × directions, batch, hidden): keep the last layer, both directions.
        last = hidden[-self.directions :].transpose(0, 1).flatten(1)
        if torch.jit.is_scripting():  # the model.pt export
            for block in self.blocks[1:]:
                # TorchScript cannot call a module taken from a slice of a ModuleList, only its .forward
                last = block.forward(last)
        else:
            for block in self.blocks[1:]:
                last = block(last)  # through __call__: forward hooks (profilers, debugging rules) see it
        return self.head(last)


def build_network(spec: NetworkSpec) -> nn.Module:
    if spec.kind == "mlp":
        return MLP(spec)
    if spec.kind == "cnn":
        return CNN(spec)
    if spec.kind in SEQUENCE_MODELS:
        return RecurrentNet(spec)
    raise ValueError(f"unknown network kind {spec.kind!r}; this image knows: {', '.join(MODELS)}")


def block_count(network: nn.Module) -> int:
    blocks = getattr(network, "blocks", None)
    return len(blocks) if isinstance(blocks, nn.ModuleList) else 0


def freeze_blocks(network: nn.Module, count: int) -> None:
    """Transfer learning: stop gradient updates (and batch-norm statistics) in the first `count` blocks."""
    blocks = getattr(network, "blocks", nn.ModuleList())
    for block in list(blocks)[:count]:
        block.requires_grad_(False)
        block.eval()
