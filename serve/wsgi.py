"""The WSGI entry point gunicorn calls once, in the master, before forking workers."""

from __future__ import annotations

import logging
import os

from flask import Flask

from optml.container.artifact import ModelLoadError
from optml.container.logs import configure_logging
from optml.container.paths import Paths
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
from optml.serve.codecs import warm_up_csv
from optml.serve.multimodel import ModelRegistry
from optml.serve.settings import ServerSettings

log = logging.getLogger("optml.serve")


def create_app_from_environment() -> Flask:
    configure_logging()
    settings = ServerSettings.from_env(os.environ)
    paths = Paths.from_env(os.environ)
    if settings.safe_port_range is not None:
        log.info("SAGEMAKER_SAFE_PORT_RANGE=%s-%s: no auxiliary port is opened", *settings.safe_port_range)
    if settings.multi_model:
        log.info("multi-model endpoint: models load through POST /models from %s", paths.models_dir)
        registry = ModelRegistry(paths.models_dir, settings.model_memory_mb << 20, BuiltinModel.load)
        return create_app(None, settings, registry=registry)
    try:
        model = BuiltinModel.load(paths.model_dir)
    except ModelLoadError as error:
        log.error("cannot start: %s", error)
        raise SystemExit(3) from None
    artifact = model.artifact
    log.info("loaded %s model from %s (%d features)", artifact.task, paths.model_dir, artifact.feature_count)
    warm_up_csv(model.schema)
    return create_app(model, settings)
