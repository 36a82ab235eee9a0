"""The training job, start to end: config → data → (cross-validation) → fit → evaluate → save.

Each step is a function below; `run` reads as the recipe. Anything the user can fix raises UserError,
which `main` turns into /opt/ml/output/failure and exit code 1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from optml.container.artifact import ModelMetadata, save_model
from optml.container.config import (
    ChannelConfig,
    JobConfig,
    read_checkpoint_dir,
    read_hyperparameters,
    read_input_data_config,
    read_resource_config,
)
from optml.container.errors import UserError
from optml.container.failure import run_reporting_failure
from optml.container.features import FeatureEncoder
from optml.container.kinds import REGRESSION
from optml.container.logs import configure_logging, format_metric_line
from optml.container.networks import INPUT_RANK, NetworkSpec, block_count, build_network, freeze_blocks
from optml.container.paths import Paths
from optml.train import analysis, bias, crossval, distributed, memory, streaming
from optml.train.callbacks import Callback, Checkpointing, MetricLogging, StopOnRequest
from optml.train.checkpoints import Checkpointer, CheckpointPolicy
from optml.train.data import DataOptions, Dataset, channel_files, load_channel
from optml.train.distributed import Topology, device_for, processes_per_host, topology_from
from optml.train.hyperparameters import Hyperparameters, parse_hyperparameters
from optml.train.interrupt import StopRequest, TrainingStopped
from optml.train.losses import (
    LossFunction,
    balanced_class_weights,
    balanced_weights,
    per_row_loss,
    resolve_loss_name,
)
from optml.train.metric_names import TASK_METRICS
from optml.train.preprocessing import LabelEncoding, Standardizer, infer_task
from optml.train.profiling import Profiler
from optml.train.report import (
    ChannelResult,
    TrainingReport,
    channel_result,
    write_evaluation,
    write_model_card,
    write_plots,
)
from optml.train.rules import RuleContext, TrainingRules, check_rule_parameters, watches_tensors
from optml.train.streaming import StreamedChannel
from optml.train.tensorboard import TensorBoard
from optml.train.trainer import Batches, History, Objective, Split, Trainer, min_batch_rows
from optml.train.warmstart import PreviousModel, check_compatible, load_previous_model

log = logging.getLogger("optml.train")

TRAIN, VALIDATION, TEST, MODEL = "train", "validation", "test", "model"
DATA_KIND = {
    2: "tabular rows (N×features)",
    3: "sequences (N×time×features)",
    4: "images (N×channels×height×width)",
}
MODEL_FOR_RANK = {2: "mlp", 3: "lstm (or rnn, gru)", 4: "cnn"}


def read_job_config(paths: Paths) -> JobConfig:
    return JobConfig(
        hyperparameters=read_hyperparameters(paths.hyperparameters_file),
        channels=read_input_data_config(paths.input_data_config_file),
        resources=read_resource_config(paths.resource_config_file),
        checkpoint_dir=read_checkpoint_dir(paths.checkpoint_config_file),
    )


def _column(reference: str) -> str | int:
    """A column named in a hyperparameter: a 0-based position when it is a number, else a name."""
    return int(reference) if reference.isdigit() else reference


def data_options(hp: Hyperparameters, channel: ChannelConfig | None) -> DataOptions:
    layout = None if hp.array_layout == "auto" else hp.array_layout
    if layout is None and hp.model == "cnn":
        layout = "image"
    return DataOptions(
        label_column=_column(hp.label_column) if hp.label_column else None,
        feature_columns=tuple(_column(c) for c in hp.feature_columns) if hp.feature_columns else None,
        time_column=hp.time_column,
        content_type=channel.content_type if channel else None,
        categorical_columns=tuple(_column(c) for c in hp.categorical_columns or ()),
        header=None if hp.csv_header == "auto" else hp.csv_header == "true",
        array_layout=layout,
    )


def load_channels(
    paths: Paths,
    job: JobConfig,
    hp: Hyperparameters,
    guard: memory.LoadingGuard,
    encoder: FeatureEncoder | None = None,
) -> dict[str, Dataset]:
    """train (required), validation and test (optional), encoded alike and with the same per-row shape."""
    train_dir = paths.channel_dir(TRAIN)
    if not train_dir.is_dir():
        declared = sorted(job.channels) or sorted(p.name for p in paths.data_dir.glob("*") if p.is_dir())
        raise UserError(
            f"required channel 'train' is missing: no directory {train_dir}"
            f" (channels present: {', '.join(declared) or 'none'}); pass the training data as channel 'train'"
        )
    guard.check(TRAIN, channel_files(train_dir))
    datasets = {TRAIN: load_channel(TRAIN, train_dir, data_options(hp, job.channels.get(TRAIN)), encoder=encoder)}
    for name in (VALIDATION, TEST):
        directory = paths.channel_dir(name)
        if directory.is_dir():
            options = data_options(hp, job.channels.get(name))
            guard.check(name, channel_files(directory))
            datasets[name] = load_channel(name, directory, options, encoder=datasets[TRAIN].encoder)
            shape, train_shape = datasets[name].features.shape[1:], datasets[TRAIN].features.shape[1:]
            if shape != train_shape:
                what = (
                    (f"{shape[0]} features", f"{train_shape[0]}")
                    if len(shape) == len(train_shape) == 1
                    else (f"rows shaped {list(shape)}", f"{list(train_shape)}")
                )
                raise UserError(
                    f"channel {name!r} has {what[0]} but channel 'train' has {what[1]};"
                    " both need the same columns in the same order"
                )
    return datasets


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def network_spec(hp: Hyperparameters, features: np.ndarray, out_features: int) -> NetworkSpec:
    rank = features.ndim
    if INPUT_RANK[hp.model] + 1 != rank:
        raise UserError(
            f"model={hp.model} needs {DATA_KIND[INPUT_RANK[hp.model] + 1]}, but channel 'train' holds"
            f" {DATA_KIND.get(rank, f'{rank}-d arrays')}: use model={MODEL_FOR_RANK.get(rank, 'mlp')}"
        )
    return NetworkSpec(
        kind=hp.model,
        input_shape=tuple(int(v) for v in features.shape[1:]),
        out_features=out_features,
        hidden_units=hp.hidden_units,
        activation=hp.activation,
        dropout=hp.dropout,
        batch_norm=hp.batch_norm,
        conv_channels=hp.conv_channels,
        kernel_size=hp.kernel_size,
        hidden_size=hp.hidden_size,
        num_layers=hp.num_layers,
        bidirectional=hp.bidirectional,
    )


def build_objective(
    hp: Hyperparameters, labels: LabelEncoding, train_targets: np.ndarray | None, class_counts: np.ndarray | None = None
) -> Objective:
    """The loss and metric options; balanced class weights come from the train targets or, streaming, from the
    rows per class the statistics counted."""
    name = resolve_loss_name(hp.loss, labels.task)
    weights = None
    if hp.class_weights is not None and labels.task != REGRESSION:
        classes = max(len(labels.classes), 2)
        if hp.class_weights == "balanced":
            balanced = (
                balanced_weights(class_counts)
                if class_counts is not None
                else balanced_class_weights(np.asarray(train_targets), classes)
            )
            weights = torch.tensor(balanced, dtype=torch.float32)
        else:
            if len(hp.class_weights) != classes:
                raise UserError(
                    f"class_weights has {len(hp.class_weights)} values but the labels have {classes} classes"
                    f" ({list(labels.classes)}): give one weight per class, in that order"
                )
            weights = torch.tensor(hp.class_weights, dtype=torch.float32)
        log.info("class weights: %s", [round(float(w), 4) for w in weights])
    row_loss = per_row_loss(
        name, labels.task, huber_delta=hp.huber_delta, focal_gamma=hp.focal_gamma, focal_alpha=hp.focal_alpha
    )
    return Objective(labels.task, LossFunction(name, row_loss, weights), labels.target_std, hp.f_beta)


@dataclass
class Prepared:
    """A channel ready for the network: standardized features and encoded targets, in memory (a Split of the
    loaded Dataset) or read block by block (data_loading=stream)."""

    split: Split | StreamedChannel
    dataset: Dataset | None
    files: int


def prepare(datasets: dict[str, Dataset], labels: LabelEncoding, scaler: Standardizer) -> dict[str, Prepared]:
    return {
        name: Prepared(Split.from_arrays(scaler.transform(d.features), labels.encode(d.labels, name)), d, len(d.files))
        for name, d in datasets.items()
    }


def new_network(
    hp: Hyperparameters, spec: NetworkSpec, previous: PreviousModel | None = None
) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    """A seeded network (the previous model's weights when warm-starting) with its first blocks frozen."""
    seed_everything(hp.seed)
    network = build_network(spec)
    if previous is not None:
        network.load_state_dict(previous.artifact.network.state_dict())
    if hp.freeze_layers > block_count(network):
        raise UserError(
            f"freeze_layers={hp.freeze_layers} but model={spec.kind} has {block_count(network)} blocks;"
            f" freeze at most {block_count(network)}"
        )
    freeze_blocks(network, hp.freeze_layers)
    return network, [network.get_submodule(f"blocks.{i}") for i in range(hp.freeze_layers)]


def cross_validate(
    hp: Hyperparameters,
    spec: NetworkSpec,
    dataset: Dataset,
    labels: LabelEncoding,
    objective: Objective,
    topology: Topology | None = None,
) -> dict[str, object]:
    strategy = crossval.resolve_strategy(hp.cv_strategy, labels.task)
    targets = labels.encode(dataset.labels, TRAIN)
    order = dataset.time_values
    folds = crossval.fold_indices(
        dataset.rows,
        hp.k_folds,
        strategy,
        hp.seed,
        classes=None if labels.task == REGRESSION else targets,
        order=order,
    )
    per_fold = []
    for number, (train_rows, validation_rows) in enumerate(folds, start=1):
        scaler = Standardizer.fit(dataset.features[train_rows])  # fold statistics: no leak from its validation rows
        features = scaler.transform(dataset.features)
        fold_train = Split.from_arrays(features[train_rows], targets[train_rows])
        fold_validation = Split.from_arrays(features[validation_rows], targets[validation_rows])
        network, frozen = new_network(hp, spec)
        network.to(device_for(topology) if topology else "cpu")
        history = Trainer(
            network, fold_train, fold_validation, hp=hp, objective=objective, frozen_blocks=frozen, topology=topology
        ).fit()
        scores = {k.split(":", 1)[1]: v for k, v in history.final.items() if k.startswith("validation:")}
        per_fold.append(scores)
        log.info(
            "cv fold %d/%d (%d train, %d validation rows): %s",
            number, len(folds), len(train_rows), len(validation_rows),
            ", ".join(f"{k}={v:.4g}" for k, v in scores.items()),
        )  # fmt: skip
    summary = crossval.summarize(per_fold)
    if topology is None or topology.is_master:
        print(
            format_metric_line(f"cv folds={len(folds)}", {f"cv:{k}": v["mean"] for k, v in summary.items()}),
            flush=True,
        )
    return {"k_folds": hp.k_folds, "strategy": strategy, "folds": per_fold, "summary": summary}


def final_results(
    network: torch.nn.Module,
    prepared: dict[str, Prepared],
    labels: LabelEncoding,
    objective: Objective,
    watches: dict[str, analysis.ChannelWatch] | None = None,
) -> dict[str, ChannelResult]:
    """The final model's scores on every channel; `watches` see its rows and outputs (for the analysis)."""
    results = {}
    for name, channel in prepared.items():
        watch = watches[name] if watches is not None else None
        if isinstance(channel.split, StreamedChannel):  # the watch sees each block as it is scored
            outputs, targets = channel.split.predict(network, watch)
        else:
            outputs, targets = channel.split.predict(network)
            if watch is not None and channel.dataset is not None:
                watch(channel.dataset.features, channel.dataset.labels, outputs)
        loss = float(objective.loss(outputs, targets))
        if labels.task == REGRESSION:
            values = outputs[:, 0].double().numpy() * labels.target_std + labels.target_mean
            truth = (
                channel.dataset.labels.astype(np.float64)
                if channel.dataset is not None
                else targets.double().numpy() * labels.target_std + labels.target_mean
            )
            results[name] = channel_result(labels.task, None, values, truth, loss, objective.f_beta, channel.files)
        else:
            results[name] = channel_result(
                labels.task, objective.probabilities(outputs), None, targets.numpy(), loss, objective.f_beta,
                channel.files,
            )  # fmt: skip
    return results


@dataclass
class Setup:
    """The data and everything fitted on it that the network, the loss and the saved model share."""

    task: str
    labels: LabelEncoding
    scaler: Standardizer
    spec: NetworkSpec
    prepared: dict[str, Prepared]
    objective: Objective
    feature_shape: tuple[int, ...]  # of one row of the data, as the network takes it
    feature_names: tuple[str, ...] | None
    encoder: FeatureEncoder | None
    # The train channel's batches for a network (its batch norm decides the smallest batch): the Split in
    # memory; streaming, this process's share of the stream.
    train_batches: Callable[[torch.nn.Module], Split | Batches]
    streaming: bool = False


def previous_encodings(previous: PreviousModel) -> tuple[str, LabelEncoding, Standardizer]:
    meta = previous.artifact.metadata
    labels = LabelEncoding(meta.task, tuple(meta.classes), meta.target_mean, meta.target_std)
    return meta.task, labels, Standardizer(*previous.scaling())


def check_validation(hp: Hyperparameters, task: str, has_validation: bool) -> None:
    if hp.early_stopping_patience and not has_validation:  # set explicitly (auto is resolved by now)
        raise UserError("early_stopping_patience needs a 'validation' channel to watch; add one or set it to 0")
    check_watched_metric(hp, task, has_validation=has_validation or hp.k_folds >= 2)


def set_up(hp: Hyperparameters, datasets: dict[str, Dataset], previous: PreviousModel | None) -> Setup:
    """Task, label encoding, scaling and network: fitted on the train channel, or the previous model's."""
    train_data = datasets[TRAIN]
    if previous is not None:
        task, labels, scaler = previous_encodings(previous)
    else:
        task = hp.task or infer_task(train_data.labels)
        labels = LabelEncoding.fit(task, train_data.labels, hp.num_classes)
        scaler = Standardizer.fit(train_data.features)
    prepared = prepare(datasets, labels, scaler)
    spec = previous.spec if previous is not None else network_spec(hp, train_data.features, labels.output_size)
    objective = build_objective(hp, labels, prepared[TRAIN].split.targets.numpy())  # type: ignore[union-attr]
    check_validation(hp, task, VALIDATION in prepared)
    split = prepared[TRAIN].split
    return Setup(
        task, labels, scaler, spec, prepared, objective, tuple(train_data.features.shape[1:]),
        train_data.feature_names, train_data.encoder, lambda network: split,  # type: ignore[arg-type,return-value]
    )  # fmt: skip


def set_up_stream(
    paths: Paths, job: JobConfig, hp: Hyperparameters, topology: Topology, previous: PreviousModel | None
) -> Setup:
    """`set_up` for data_loading=stream: the statistics of one pass over the train channel (on every host,
    merged) instead of the loaded channel; channels are then read block by block."""
    streamed = streaming.open_channels(
        paths, job, hp, topology, lambda name: data_options(hp, job.channels.get(name)),
        previous.encoder if previous else None,
    )  # fmt: skip
    statistics = streamed.scan.statistics
    if previous is not None:
        task, labels, scaler = previous_encodings(previous)
    else:
        task = hp.task or statistics.task()
        labels = statistics.labels(task, hp.num_classes)
        scaler = statistics.standardizer(image=streamed.image)
    empty = np.empty((0, *streamed.feature_shape), np.float32)
    spec = previous.spec if previous is not None else network_spec(hp, empty, labels.output_size)
    counts = statistics.class_counts(labels) if task != REGRESSION else None
    objective = build_objective(hp, labels, None, counts)
    prepare_block = {
        name: streaming.Prepare(source.reader, streamed.encoder, scaler, labels)
        for name, source in streamed.sources.items()
    }
    prepared = {
        name: Prepared(streamed.scored(name, prepare_block[name], spec.out_features), None, streamed.file_count(name))
        for name in streamed.sources
    }
    check_validation(hp, task, VALIDATION in prepared)

    def batches(network: torch.nn.Module) -> Batches:
        return streamed.train_batches(hp, prepare_block[TRAIN], objective.loss_targets, min_batch_rows(network))

    return Setup(
        task, labels, scaler, spec, prepared, objective, streamed.feature_shape, streamed.feature_names,
        streamed.encoder, batches, streaming=True,
    )  # fmt: skip


def check_watched_metric(hp: Hyperparameters, task: str, has_validation: bool) -> None:
    """The metric early stopping and the plateau schedule watch must be one this task logs: a typo (or auc on
    a regression) would otherwise fail the job after its first epoch."""
    watched = hp.early_stopping_patience or hp.lr_scheduler == "plateau"
    logged = [f"validation:{name}" for name in ("loss", *TASK_METRICS[task])]
    if watched and has_validation and hp.early_stopping_metric not in logged:
        raise UserError(
            f"early_stopping_metric={hp.early_stopping_metric!r} is not a metric a {task} job logs;"
            f" use one of {', '.join(logged)}"
        )


def resolve_auto_patience(hp: Hyperparameters, has_validation: bool) -> Hyperparameters:
    """early_stopping_patience=auto becomes a number once the channels are known, for the folds of
    cross-validation and the final fit alike, and so it is logged and saved with the model."""
    if hp.early_stopping_patience is not None:
        return hp
    patience = hp.patience(has_validation)
    log.info(
        "early_stopping_patience=auto: %s",
        f"{patience} epochs, watching {hp.early_stopping_metric}" if patience else "off (no validation channel)",
    )
    return dataclasses.replace(hp, early_stopping_patience=patience)


def checkpointer_for(
    paths: Paths, job: JobConfig, hp: Hyperparameters, setup: Setup, topology: Topology
) -> Checkpointer:
    directory = job.checkpoint_dir or paths.checkpoints_dir
    return Checkpointer(
        directory,
        topology.name,
        CheckpointPolicy(hp.checkpoint_every_steps, hp.checkpoint_every_seconds, hp.keep_checkpoints),
        # What must match for a checkpoint to continue this run: the network and what its outputs mean.
        config={"network": setup.spec.to_json(), "task": setup.task, "classes": list(setup.labels.classes)}
        # A stream's position is not an in-memory row order: neither continues the other. (Memory-mode
        # checkpoints have no such key, as before streaming existed.)
        | ({"data_loading": "stream"} if setup.streaming else {}),
    )


def model_metadata(hp: Hyperparameters, setup: Setup, metrics: dict[str, float]) -> ModelMetadata:
    return ModelMetadata(
        task=setup.task,
        network=setup.spec,
        feature_count=int(np.prod(setup.spec.input_shape)),
        feature_mean=setup.scaler.mean.reshape(-1).tolist(),
        feature_std=setup.scaler.std.reshape(-1).tolist(),
        classes=list(setup.labels.classes),
        feature_names=list(setup.feature_names or []),
        encoder=setup.encoder.to_json() if setup.encoder else None,
        target_mean=setup.labels.target_mean,
        target_std=setup.labels.target_std,
        hyperparameters=hp.to_json(),
        metrics=metrics,
        versions={"torch": torch.__version__, "python": sys.version.split()[0]},
    )


def run(paths: Paths, stop_requested: Callable[[], bool] | None = None, local_rank: int = 0) -> dict[str, float]:
    """Train and save; returns the final model's metrics. Raises UserError for anything the user can fix,
    TrainingStopped after a stop request (with a checkpoint and a usable model saved)."""
    job = read_job_config(paths)
    hp = parse_hyperparameters(job.hyperparameters.values)
    if job.hyperparameters.ignored_keys:
        log.info("ignoring SDK keys: %s", ", ".join(job.hyperparameters.ignored_keys))
    log.info("hyperparameters: %s", hp.to_json())
    check_rule_parameters(hp.rules, hp.rule_parameters)  # before any data is read
    distributed.check_gpus_usable()
    topology = topology_from(job.resources, os.environ).with_local_rank(local_rank)
    loading = memory.choose_loading(hp, job, paths, topology)  # before waiting for peers: a refusal is quick
    distributed.init_process_group(topology)
    try:
        return train_and_save(paths, job, hp, topology, stop_requested, loading)
    finally:
        distributed.shutdown()


def train_and_save(
    paths: Paths,
    job: JobConfig,
    hp: Hyperparameters,
    topology: Topology,
    stop_requested: Callable[[], bool] | None,
    loading: str = memory.MEMORY,
) -> dict[str, float]:
    """The job's phases: data and set-up, cross-validation, the final fit, evaluation and saving."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    previous = load_previous_model(paths.channel_dir(MODEL)) if paths.channel_dir(MODEL).is_dir() else None
    datasets: dict[str, Dataset] = {}
    if loading == memory.STREAM:
        hp = resolve_auto_patience(hp, streaming.channel_present(paths, job, VALIDATION))
        setup = set_up_stream(paths, job, hp, topology, previous)
        timings["load_data"] = time.perf_counter() - started
    else:
        guard = memory.LoadingGuard(paths.failure_file, topology.processes_per_host, writes=topology.local_rank == 0)
        with guard:  # loading and preparing the channels: the memory peak
            datasets = load_channels(paths, job, hp, guard, encoder=previous.encoder if previous else None)
            timings["load_data"] = time.perf_counter() - started
            hp = resolve_auto_patience(hp, VALIDATION in datasets)
            setup = set_up(hp, datasets, previous)
    if previous is not None:
        explicit = {key: getattr(hp, key) for key in job.hyperparameters.values}
        check_compatible(previous, explicit, hp.task, setup.feature_shape)
    bias_spec, pre_bias = bias_before_training(hp, setup)

    cv_result = None
    if hp.k_folds >= 2:
        stage = time.perf_counter()
        cv_result = cross_validate(hp, setup.spec, datasets[TRAIN], setup.labels, setup.objective, topology)
        timings["cross_validation"] = time.perf_counter() - stage

    stage = time.perf_counter()
    metric_lines = MetricLogging(job.hyperparameters.tuning_objective_metric)
    profiler = Profiler() if topology.is_master else None  # the master's log and report show its profile
    network, history = train_final_model(
        paths, job, hp, setup, previous, topology, metric_lines, stop_requested, profiler
    )
    timings["training"] = time.perf_counter() - stage
    # Scoring a streamed channel is collective (each process scores a part); in memory the master does it.
    results: dict[str, ChannelResult] = {}
    watched: dict[str, analysis.ChannelWatch] = {}
    if topology.is_master or setup.streaming:
        watches = analysis.watches(list(setup.prepared), setup.labels, bias_spec, topology.rank)
        results = final_results(network, setup.prepared, setup.labels, setup.objective, watches)
        watched = {name: watch.merged(collective=setup.streaming) for name, watch in watches.items()}
    if topology.is_master:
        outcome = Outcome(network, history, results, cv_result, profiler.epochs if profiler else [])
        findings = analysis.Findings(bias_spec, pre_bias, watched)
        save_results(paths, hp, setup, outcome, findings, metric_lines, timings, started)
    # Local mode stops every container when the first exits: workers wait until the master has saved.
    distributed.barrier()
    return history.final


def train_final_model(
    paths: Paths,
    job: JobConfig,
    hp: Hyperparameters,
    setup: Setup,
    previous: PreviousModel | None,
    topology: Topology,
    metric_lines: MetricLogging,
    stop_requested: Callable[[], bool] | None,
    profiler: Profiler | None = None,
) -> tuple[torch.nn.Module, History]:
    """The fit on the whole train channel, checkpointed and stoppable; a stopped job saves what it reached."""
    network, frozen = new_network(hp, setup.spec, previous)
    network.to(device_for(topology))
    train_batches = setup.train_batches(network)
    rows = len(train_batches) if isinstance(train_batches, Split) else train_batches.rows
    log.info("training %s on %d rows per epoch (%s), %d epochs", setup.spec.kind, rows, setup.task, hp.epochs)
    validation = setup.prepared[VALIDATION].split if VALIDATION in setup.prepared else None
    callbacks: list[Callback] = [Checkpointing(checkpointer_for(paths, job, hp, setup, topology))]
    if topology.is_master:  # the master alone logs: the tuner reads one stream
        callbacks.append(metric_lines)
    if profiler is not None:  # after the metric line: the epoch's profile line follows it
        callbacks.append(profiler)
    rules = training_rules(paths, hp, setup, topology, validation is not None)
    if rules is not None:  # after Checkpointing: a resume restores the rules' verdicts first
        callbacks.append(rules)
    board = TensorBoard.for_job(
        hp, paths.tensorboard_dir, is_master=topology.is_master, profiler=profiler, histograms=watches_tensors(hp.rules)
    )
    if board is not None:
        callbacks.append(board)
    if stop_requested is not None:
        callbacks.append(StopOnRequest(stop_requested))
    if isinstance(train_batches, streaming.StreamBatches):
        callbacks.append(streaming.StreamPosition(train_batches))
    try:
        history = Trainer(
            network, train_batches, validation, hp=hp, objective=setup.objective, callbacks=callbacks,
            frozen_blocks=frozen, topology=topology,
        ).fit()  # fmt: skip
    except TrainingStopped as stopped:
        if topology.is_master:  # a stopped job still uploads /opt/ml/model: leave the weights reached so far there
            save_model(paths.model_dir, network, model_metadata(hp, setup, stopped.metrics))
            log.info("saved the model as of the stop to %s", paths.model_dir)
        distributed.barrier()
        raise
    finally:
        if rules is not None:
            rules.close()  # the StalledTraining watchdog and the activation hooks go, whatever happened
        if board is not None:
            board.close()  # what a failed or stopped job wrote stays readable
    if topology.is_master and history.best_epoch not in (None, len(history.epochs)):
        # An earlier epoch's weights were restored: its metrics once more, so that the last value the tuner
        # reads (and its objective) is the model that ships, not the last epoch trained.
        metric_lines.print(f"restored epoch={history.best_epoch}", history.final)
    return network, history


@dataclass
class Outcome:
    """What the final fit produced, for the master to save."""

    network: torch.nn.Module
    history: History
    results: dict[str, ChannelResult]  # the final model's scores per channel
    cv_result: dict[str, object] | None
    profile: list[dict[str, Any]]  # per epoch: where the time went


def training_rules(
    paths: Paths, hp: Hyperparameters, setup: Setup, topology: Topology, has_validation: bool
) -> TrainingRules | None:
    """The Debugger-style rules callback (None for rules=none); the master writes rules.json."""
    counts = None  # streamed: ClassImbalance counts the first epoch's sampled rows
    split = setup.prepared[TRAIN].split
    if setup.task != REGRESSION and isinstance(split, Split):
        counts = tuple(torch.bincount(split.targets, minlength=len(setup.labels.classes)).tolist())
    return TrainingRules.from_hyperparameters(
        hp,
        context=RuleContext(task=setup.task, has_validation=has_validation, class_counts=counts),
        output_dir=paths.output_data_dir if topology.is_master else None,
        failure_file=paths.failure_file,
    )


def save_results(
    paths: Paths,
    hp: Hyperparameters,
    setup: Setup,
    outcome: Outcome,
    findings: analysis.Findings,
    metric_lines: MetricLogging,
    timings: dict[str, float],
    started: float,
) -> None:
    """The master's last phase: the final model's scores on every channel, the model with its SHAP
    background, analysis.json (bias, explanations), the report and plots."""
    results, history = outcome.results, outcome.history
    if TEST in results:
        metric_lines.print(
            "final", {f"test:{k}": float(v) for k, v in results[TEST].metrics.items() if isinstance(v, float)}
        )
    metadata = model_metadata(hp, setup, history.final)
    save_model(paths.model_dir, outcome.network, metadata)
    stage = time.perf_counter()
    document = findings.write(paths.model_dir, paths.output_data_dir, hp)
    timings["analysis"] = time.perf_counter() - stage
    timings["total"] = time.perf_counter() - started
    training_report = TrainingReport(
        metadata, results, history.epochs, history.best_epoch, history.stopped_early, outcome.cv_result, timings,
        profile=outcome.profile, analysis=document,
    )  # fmt: skip
    write_evaluation(paths.output_data_dir, training_report)
    write_plots(paths.output_data_dir, training_report)
    write_model_card(paths.model_dir, training_report)
    log.info("model saved to %s; report in %s", paths.model_dir, paths.output_data_dir)


def bias_before_training(hp: Hyperparameters, setup: Setup) -> tuple[bias.BiasSpec | None, bias.BiasCounts | None]:
    """With facet_column: the facets checked against the data and the train labels counted per facet
    (streaming: one more pass over the train channel, each process its part, merged) — before any epoch,
    so a facet that cannot be measured fails at once."""
    train = setup.prepared[TRAIN]
    if train.dataset is not None:
        label_name = train.dataset.label_name
        blocks: Iterable[tuple[np.ndarray, np.ndarray]] = [(train.dataset.features, train.dataset.labels)]
    else:
        assert isinstance(train.split, StreamedChannel)
        label_name, blocks = train.split.prepare.reader.label_name, train.split.encoded_blocks()
    spec = bias.resolve(hp, setup.encoder, setup.labels.classes, setup.task, label_name=label_name)
    if spec is None:
        return None, None
    return spec, analysis.pre_training_counts(spec, blocks, setup.labels, merge=setup.streaming)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    paths = Paths.from_env(os.environ)
    processes = processes_per_host(os.environ)
    if processes > 1:
        return run_processes(paths, processes)
    return run_process(paths, local_rank=0)


def run_process(paths: Paths, local_rank: int) -> int:
    """One training process, with its exit code and failure file."""
    stop = StopRequest()
    stop.install()

    def train() -> None:
        try:
            run(paths, stop, local_rank)
        except TrainingStopped as stopped:
            log.info("stopped by %s (%s); the next run resumes from the checkpoint", stop.signal_name, stopped)

    return run_reporting_failure(train, paths.failure_file, "training", log)


def _process_entry(local_rank: int, paths: Paths) -> None:
    configure_logging()
    sys.exit(run_process(paths, local_rank))


def run_processes(paths: Paths, processes: int) -> int:
    """One process per GPU on this host; SIGTERM to this process (PID 1) is passed on to each of them."""
    log.info("starting %d training processes on this host", processes)
    context = torch.multiprocessing.start_processes(
        _process_entry, args=(paths,), nprocs=processes, join=False, start_method="spawn"
    )

    def forward(signum: int, frame: object) -> None:
        for process in context.processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        while not context.join():
            pass
    except torch.multiprocessing.ProcessExitedException as error:
        log.error("training process %d exited with code %s; stopping the others", error.error_index, error.exit_code)
        return error.exit_code if isinstance(error.exit_code, int) and error.exit_code > 0 else 2
    return 0
