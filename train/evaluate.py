"""The Processing job `evaluate`: a saved model scores a test set as training scores its `test` channel.

    docker run IMAGE evaluate [--model DIR] [--test DIR] [--output DIR] [--content-type TYPE]

Inputs are where a Processing job's ProcessingInputs are by convention: the model (a training job's
model.tar.gz, or its files) in /opt/ml/processing/input/model, the test set (any format a training channel
takes) in /opt/ml/processing/input/test. One ProcessingOutput, /opt/ml/processing/evaluation, receives
evaluation.json (training's shape, the `test` channel only and no epoch history), the plots training draws
for a held-out channel, and model_quality.json (optml.train.model_quality) for the Model Registry.

It lives in train/ because it *is* training's last phase run on a saved model instead of a fresh one: the
same channel loading, preprocessing, loss and metrics (train/main.py's `prepare`, `build_objective`,
`final_results`) and the same report (train/report.py). A problem the user can fix fails the job with exit
code 1 and its reason in /opt/ml/output/message (SageMaker's ExitMessage); our own bugs exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

from optml.container.artifact import ModelLoadError, ModelMetadata, load_model
from optml.container.errors import UserError
from optml.container.failure import run_reporting_failure
from optml.container.logs import configure_logging, format_metric_line
from optml.container.paths import Paths
from optml.train.data import Dataset, channel_files, load_channel
from optml.train.hyperparameters import Hyperparameters
from optml.train.main import TEST, build_objective, data_options, final_results, prepare
from optml.train.memory import LoadingGuard
from optml.train.model_quality import model_quality, write_model_quality
from optml.train.preprocessing import LabelEncoding, Standardizer
from optml.train.report import ChannelResult, TrainingReport, write_evaluation, write_plots
from optml.train.trainer import Split
from optml.train.warmstart import PreviousModel, find_model_dir

log = logging.getLogger("optml.evaluate")


@dataclass(frozen=True)
class Arguments:
    model: Path
    test: Path
    output: Path
    content_type: str | None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # a bad argument fails the job like any other user error
        usage = " ".join(self.format_usage().split())  # one line, whatever the terminal's width
        raise UserError(f"evaluate: {message} ({usage})")


def parse_arguments(argv: Sequence[str], paths: Paths) -> Arguments:
    parser = _Parser(prog="evaluate", description="Score a model trained by this image on a test set.")
    directories = {
        "--model": (paths.processing_input_dir("model"), "directory holding the model's model.tar.gz, or its files"),
        "--test": (paths.processing_input_dir("test"), "directory of test data, in any format training takes"),
        "--output": (paths.evaluation_dir, "directory for evaluation.json, model_quality.json and the plots"),
    }
    for flag, (default, what) in directories.items():
        parser.add_argument(flag, type=Path, metavar="DIR", default=default, help=f"{what} (default: %(default)s)")
    parser.add_argument(
        "--content-type", metavar="TYPE", help="the test data's ContentType, e.g. text/csv (default: detected)"
    )
    args = parser.parse_args(list(argv))
    return Arguments(args.model, args.test, args.output, args.content_type)


def load_evaluated_model(model_dir: Path) -> PreviousModel:
    """The model to evaluate, from a directory holding its files or its model.tar.gz."""
    if not model_dir.is_dir():
        raise UserError(
            f"no model: {model_dir} does not exist; pass a training job's model.tar.gz (or its files) as the"
            f" ProcessingInput with destination {model_dir}, or name another directory with --model"
        )
    scratch = Path(tempfile.mkdtemp(prefix="optml-evaluated-model-"))
    try:
        artifact = load_model(find_model_dir(model_dir, scratch))
    except ModelLoadError as error:
        raise UserError(f"model: {error}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta = artifact.metadata
    log.info("model: %s %s, classes %s", meta.task, meta.network.kind, meta.classes or "-")
    return PreviousModel(artifact, model_dir)


def saved_hyperparameters(metadata: ModelMetadata) -> Hyperparameters:
    """The hyperparameters the model was trained with (Hyperparameters.to_json, read back): how its data was
    read (label and feature columns, CSV header, array layout) and how its loss and f_beta are computed."""
    known = {spec.name for spec in fields(Hyperparameters)}
    saved: dict[str, Any] = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in metadata.hyperparameters.items()
        if key in known
    }
    return Hyperparameters(**saved)


def load_test_set(
    test_dir: Path, model: PreviousModel, hp: Hyperparameters, content_type: str | None, guard: LoadingGuard
) -> Dataset:
    """The test set, read and encoded as the model's training data was."""
    if test_dir.is_dir():
        guard.check(TEST, channel_files(test_dir))
    options = dataclasses.replace(data_options(hp, None), content_type=content_type)
    dataset = load_channel(TEST, test_dir, options, encoder=model.encoder)
    shape, expected = dataset.feature_shape, model.spec.input_shape
    if shape != expected:
        tabular = len(shape) == len(expected) == 1
        what = f"{shape[0]} features" if tabular else f"rows shaped {list(shape)}"
        takes = f"{expected[0]}" if tabular else f"{list(expected)}"
        needs = "the columns of its training data, in the same order" if tabular else "rows shaped as in training"
        raise UserError(f"the test set in {test_dir} has {what} but the model takes {takes}: it needs {needs}")
    return dataset


def score(model: PreviousModel, hp: Hyperparameters, dataset: Dataset) -> ChannelResult:
    """The test set's loss and metrics, computed as training computes its test channel's."""
    meta = model.artifact.metadata
    labels = LabelEncoding(meta.task, tuple(meta.classes), meta.target_mean, meta.target_std)
    prepared = prepare({TEST: dataset}, labels, Standardizer(*model.scaling()))
    # Balanced class weights came from the training data's class counts, which the model does not keep: the
    # loss training reported cannot be recomputed, and any other weighting would be another quantity.
    balanced = hp.class_weights == "balanced"
    loss_hp = dataclasses.replace(hp, class_weights=None) if balanced else hp
    split = prepared[TEST].split
    assert isinstance(split, Split)
    objective = build_objective(loss_hp, labels, split.targets.numpy())
    result = final_results(model.artifact.network, prepared, labels, objective)[TEST]
    if balanced:
        log.warning("loss not computed: the model was trained with class_weights=balanced (weights not saved)")
        result.metrics["loss"] = math.nan
    return result


def write_outputs(output_dir: Path, model: PreviousModel, result: ChannelResult, timings: dict[str, float]) -> None:
    meta = model.artifact.metadata
    report = TrainingReport(meta, {TEST: result}, history=[], timings=timings)
    write_evaluation(output_dir, report)
    write_plots(output_dir, report)
    write_model_quality(output_dir, model_quality(meta.task, meta.classes, result))


def evaluate(arguments: Arguments, message_file: Path) -> ChannelResult:
    started = time.perf_counter()
    model = load_evaluated_model(arguments.model)
    timings = {"load_model": time.perf_counter() - started}
    hp = saved_hyperparameters(model.artifact.metadata)
    with LoadingGuard(message_file) as guard:  # loading and preparing the test set: the memory peak
        stage = time.perf_counter()
        dataset = load_test_set(arguments.test, model, hp, arguments.content_type, guard)
        timings["load_data"] = time.perf_counter() - stage
        stage = time.perf_counter()
        result = score(model, hp, dataset)
        timings["scoring"] = time.perf_counter() - stage
    timings["total"] = time.perf_counter() - started
    write_outputs(arguments.output, model, result, timings)
    scalars = {f"test:{name}": value for name, value in result.metrics.items() if isinstance(value, float)}
    print(format_metric_line("evaluation", scalars), flush=True)
    log.info("evaluation of %d rows written to %s", result.rows, arguments.output)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    paths = Paths.from_env(os.environ)
    message_file = paths.exit_message_file
    return run_reporting_failure(
        lambda: evaluate(parse_arguments(argv or [], paths), message_file), message_file, "evaluation", log
    )
