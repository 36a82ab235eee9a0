"""The training job: read the /opt/ml contract, train, write the model, or say why not."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from container.artifact import ModelMetadata, save_model
from container.config import JobConfig, read_hyperparameters, read_input_data_config, read_resource_config
from container.errors import UserError
from container.failure import write_failure
from container.logs import configure_logging, format_metric_line
from container.networks import NetworkSpec, build_network
from container.paths import Paths
from train.data import Dataset, load_csv_channel
from train.hyperparameters import Hyperparameters, parse_hyperparameters
from train.preprocessing import LabelEncoding, Standardizer, infer_task
from train.trainer import Split, fit

log = logging.getLogger("optml.train")

TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"


def read_job_config(paths: Paths) -> JobConfig:
    return JobConfig(
        hyperparameters=read_hyperparameters(paths.hyperparameters_file),
        channels=read_input_data_config(paths.input_data_config_file),
        resources=read_resource_config(paths.resource_config_file),
    )


def load_channels(paths: Paths, job: JobConfig) -> tuple[Dataset, Dataset | None]:
    train_dir = paths.channel_dir(TRAIN_CHANNEL)
    if not train_dir.is_dir():
        declared = sorted(job.channels) or sorted(p.name for p in paths.data_dir.glob("*") if p.is_dir())
        raise UserError(
            f"required channel 'train' is missing: no directory {train_dir}"
            f" (channels present: {', '.join(declared) or 'none'}); pass the training data as channel 'train'"
        )
    train = load_csv_channel(TRAIN_CHANNEL, train_dir)
    validation = None
    validation_dir = paths.channel_dir(VALIDATION_CHANNEL)
    if validation_dir.is_dir():
        validation = load_csv_channel(VALIDATION_CHANNEL, validation_dir)
        if validation.feature_count != train.feature_count:
            raise UserError(
                f"channel 'validation' has {validation.feature_count} features but channel 'train' has"
                f" {train.feature_count}; both need the same columns in the same order"
            )
    return train, validation


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(paths: Paths) -> dict[str, float]:
    """Train and save; returns the final metrics. Raises UserError for anything the user can fix."""
    started = time.perf_counter()
    job = read_job_config(paths)
    hyperparameters: Hyperparameters = parse_hyperparameters(job.hyperparameters.values)
    if job.hyperparameters.ignored_keys:
        log.info("ignoring SDK keys: %s", ", ".join(job.hyperparameters.ignored_keys))
    log.info("hyperparameters: %s", json.dumps(hyperparameters.to_json(), sort_keys=True))

    train_data, validation_data = load_channels(paths, job)
    task = hyperparameters.task or infer_task(train_data.labels)
    labels = LabelEncoding.fit(task, train_data.labels)
    scaler = Standardizer.fit(train_data.features)
    train_split = Split.from_arrays(
        scaler.transform(train_data.features), labels.encode(train_data.labels, "train")
    )
    validation_split = None
    if validation_data is not None:
        validation_split = Split.from_arrays(
            scaler.transform(validation_data.features), labels.encode(validation_data.labels, "validation")
        )

    seed_everything(hyperparameters.seed)
    spec = NetworkSpec("mlp", train_data.feature_count, labels.output_size, hyperparameters.hidden_units)
    network = build_network(spec)
    log.info(
        "training %s on %d rows (%s), %d epochs", spec.kind, train_data.rows, task, hyperparameters.epochs
    )

    def report(epoch: int, metrics: dict[str, float]) -> None:
        print(format_metric_line(epoch, metrics), flush=True)

    history = fit(
        network,
        train_split,
        validation_split,
        task=task,
        epochs=hyperparameters.epochs,
        batch_size=hyperparameters.batch_size,
        learning_rate=hyperparameters.learning_rate,
        seed=hyperparameters.seed,
        target_std=labels.target_std,
        on_epoch_end=report,
    )

    metadata = ModelMetadata(
        task=task,
        network=spec,
        feature_count=train_data.feature_count,
        feature_mean=scaler.mean.tolist(),
        feature_std=scaler.std.tolist(),
        classes=list(labels.classes),
        target_mean=labels.target_mean,
        target_std=labels.target_std,
        hyperparameters=hyperparameters.to_json(),
        metrics=history.last,
        versions={"torch": torch.__version__, "python": sys.version.split()[0]},
    )
    if job.resources.is_master:
        save_model(paths.model_dir, network, metadata)
        write_evaluation(
            paths.output_data_dir, metadata, train_data, validation_data, time.perf_counter() - started
        )
        log.info("model saved to %s", paths.model_dir)
    return history.last


def write_evaluation(
    output_dir: Path, metadata: ModelMetadata, train: Dataset, validation: Dataset | None, seconds: float
) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "task": metadata.task,
        "metrics": metadata.to_json()["metrics"],
        "rows": {"train": train.rows, "validation": validation.rows if validation else 0},
        "hyperparameters": metadata.hyperparameters,
        "seconds": round(seconds, 3),
    }
    (output_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    paths = Paths.from_env(os.environ)
    try:
        run(paths)
    except UserError as error:
        log.error("training failed: %s", error)
        write_failure(paths.failure_file, str(error))
        return 1
    except Exception as error:  # anything else is our bug: keep the traceback in the log only
        log.error("training failed with an internal error:\n%s", traceback.format_exc())
        write_failure(paths.failure_file, f"Internal error: {type(error).__name__}: {error}")
        return 2
    return 0
