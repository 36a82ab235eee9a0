"""The model's analysis after training, in SageMaker Clarify's analysis.json: bias and explanations.

Bias (train/bias.py): pre-training metrics count the train labels per facet before the first epoch; post-
training metrics count the final model's predictions on validation and test while they are scored.
Explanations (train/explanations.py, optml.container.explain): mean |SHAP| over a sample of held-out rows,
against a background summarizing a sample of the train rows; the background is saved with the model, so
the endpoint explains requests the same way.

Everything reads rows as the encoder writes them, before standardizing (the user's columns and units): in
memory the loaded channel; streamed, each scored block through a `ChannelWatch`. Counts and samples are
merged across processes and hosts, so the results are those of the whole channel, as on one host.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from optml.container.artifact import class_probabilities, load_model
from optml.container.explain import save_background, summarize_background
from optml.container.files import atomic_write
from optml.container.kinds import REGRESSION
from optml.train import bias, distributed
from optml.train.explanations import write_explanations
from optml.train.hyperparameters import Hyperparameters
from optml.train.preprocessing import LabelEncoding
from optml.train.sampling import RowSample

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"
SAMPLE_ROWS = 10_000  # rows of a channel kept for the background (train) and the explained rows ...
SAMPLE_BYTES = 64 * 2**20  # ... and at most this much of them (float32)
HELD_OUT = ("validation", "test")


@dataclass
class ChannelWatch:
    """Watches a channel being scored by the final model (streaming.Observer): counts its predictions per
    facet (validation and test) and keeps a sample of its rows."""

    channel: str
    labels: LabelEncoding
    spec: bias.BiasSpec | None
    rank: int = 0
    counts: bias.BiasCounts = field(default_factory=bias.BiasCounts)
    flips: bias.FlipSample = field(init=False)
    sample: RowSample = field(init=False)

    def __post_init__(self) -> None:  # each process draws its own keys
        self.flips = bias.FlipSample(seed=self.rank)
        self.sample = RowSample(SAMPLE_ROWS, self.rank, SAMPLE_BYTES)

    def __call__(self, features: np.ndarray, labels: np.ndarray, outputs: torch.Tensor) -> None:
        """A block (or the whole channel): encoded, unscaled features; its labels as read; network outputs."""
        self.sample.add(features)
        if self.spec is None or self.channel not in HELD_OUT:
            return
        predicted = predicted_labels(self.labels, outputs)
        truth = bias.labels_for_bias(self.labels, labels, self.channel)
        self.counts.add(bias.count_block(self.spec, features, truth, predicted))
        self.flips.add(self.spec, features, predicted)

    def merged(self, collective: bool) -> ChannelWatch:
        """Every process's counts and samples together: `collective` when every process scored a part of the
        channel (streaming); in memory the master scores it whole."""
        parts = cast(list[ChannelWatch], distributed.gather_objects(self)) if collective else [self]
        whole = ChannelWatch(self.channel, self.labels, self.spec)
        for part in parts:
            whole.counts.add(part.counts)
            whole.flips.merge(part.flips)
            whole.sample.merge(part.sample)
        return whole


def predicted_labels(labels: LabelEncoding, outputs: torch.Tensor) -> np.ndarray:
    """The model's decision per row as the bias metrics count it: class indices, or values in label units."""
    if labels.task == REGRESSION:
        return outputs[:, 0].double().numpy() * labels.target_std + labels.target_mean
    return class_probabilities(labels.task, outputs).argmax(dim=1).numpy()


def watches(names: list[str], labels: LabelEncoding, spec: bias.BiasSpec | None, rank: int) -> dict[str, ChannelWatch]:
    return {name: ChannelWatch(name, labels, spec, rank) for name in names}


def pre_training_counts(
    spec: bias.BiasSpec, blocks: Iterable[tuple[np.ndarray, np.ndarray]], labels: LabelEncoding, merge: bool
) -> bias.BiasCounts:
    """The train labels counted per facet, from (encoded features, labels) blocks of this process; merged
    across processes when streaming. Fails before training when a facet value no train row has."""
    counts = bias.BiasCounts()
    for features, raw_labels in blocks:
        counts.add(bias.count_block(spec, features, bias.labels_for_bias(labels, raw_labels, "train")))
    if merge:
        counts = bias.merge_counts(cast(list[bias.BiasCounts], distributed.gather_objects(counts)))
    bias.check_train_counts(spec, counts)
    return counts


@dataclass
class Findings:
    """What the job gathered for the analysis: the bias analysis asked for (None: no facet_column), the
    train labels' counts, and every channel's watch, merged."""

    spec: bias.BiasSpec | None
    pre: bias.BiasCounts | None
    watched: dict[str, ChannelWatch]

    def write(self, model_dir: Path, output_dir: Path, hp: Hyperparameters) -> dict[str, Any]:
        """After the model is saved (master): the SHAP background beside it; the bias sections and the
        global explanation in analysis.json, with the plots. Returns the document (empty: nothing to say)."""
        document = self.bias_sections()
        train_rows = self.watched["train"].sample.rows if "train" in self.watched else None
        if train_rows is not None and len(train_rows):
            background = summarize_background(train_rows, hp.explain_background_size, hp.explain_background, hp.seed)
            save_background(model_dir, background, hp.explain_background)
            explained = next((self.watched[n].sample.rows for n in (*HELD_OUT, "train") if n in self.watched), None)
            if hp.explain_rows and explained is not None and len(explained):
                artifact = load_model(model_dir)  # on the CPU, as the endpoint loads it
                label = self.spec.label_name if self.spec is not None else "label0"
                section, _ = write_explanations(
                    output_dir, artifact, background, explained, hp.explain_rows, hp.seed, label
                )
                document |= section
        if document:
            document = {"version": bias.ANALYSIS_VERSION} | document
            text = json.dumps(document, indent=2, allow_nan=False) + "\n"
            output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(output_dir / ANALYSIS_FILE, lambda temp: temp.write_text(text, encoding="utf-8"))
        return document

    def bias_sections(self) -> dict[str, Any]:
        if self.spec is None:
            return {}
        post = {
            name: bias.post_training(self.spec, watch.counts, watch.flips)
            for name, watch in self.watched.items()
            if name in HELD_OUT and watch.counts.rows
        }
        pre = bias.pre_training(self.spec, self.pre) if self.pre is not None else None
        document = bias.analysis(pre, post)
        for line in bias.di_warnings(document):
            log.warning(line)
        return document
