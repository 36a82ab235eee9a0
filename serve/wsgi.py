"""The WSGI entry point gunicorn calls once, in the master, before forking workers.

Which model serves: a user's inference script when there is one (user_module.py says where it is looked
for), else optml's own model when the model directory holds one, else a TorchScript model with the default
handlers. The built-in model is loaded here, in the master, and shared by the forked workers; a script is
imported and checked here, and its model_fn runs in each worker after the fork (readiness.py).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from flask import Flask

from optml.container.artifact import METADATA_FILE, ModelLoadError
from optml.container.errors import UserError
from optml.container.logs import configure_logging
from optml.container.paths import Paths
from optml.container.user_code import install_requirements
from optml.serve.app import create_app
from optml.serve.builtin import BuiltinModel
from optml.serve.codecs import warm_up_csv
from optml.serve.invocation import ServedModel
from optml.serve.multimodel import ModelRegistry
from optml.serve.readiness import WORKER_START, WorkerReadiness, gpu_id, start_worker
from optml.serve.script import ScriptModel
from optml.serve.settings import ServerSettings
from optml.serve.user_module import UserCode, UserCodeError, locate_user_code, module_name

log = logging.getLogger("optml.serve")


def create_app_from_environment() -> Flask:
    configure_logging()
    settings = ServerSettings.from_env(os.environ)
    paths = Paths.from_env(os.environ)
    if settings.safe_port_range is not None:
        log.info("SAGEMAKER_SAFE_PORT_RANGE=%s-%s: no auxiliary port is opened", *settings.safe_port_range)
    if settings.multi_model:
        log.info("multi-model endpoint: models load through POST /models from %s", paths.models_dir)
        load = functools.partial(load_any_model, settings=settings, program=os.environ.get("SAGEMAKER_PROGRAM", ""))
        registry = ModelRegistry(paths.models_dir, settings.model_memory_mb << 20, load)
        return create_app(None, settings, registry=registry)
    try:
        code = locate_user_code(os.environ, paths.model_dir, paths.code_dir)
        if code is not None or not is_builtin_model(paths.model_dir):
            return create_script_app(paths.model_dir, code, settings)
        model = BuiltinModel.load(paths.model_dir)
    except (ModelLoadError, UserCodeError) as error:
        log.error("cannot start: %s", error, exc_info=error.__cause__)
        raise SystemExit(3) from None
    artifact = model.artifact
    log.info("loaded %s model from %s (%d features)", artifact.task, paths.model_dir, artifact.feature_count)
    warm_up_csv(model.schema)
    return create_app(model, settings)


def is_builtin_model(model_dir: Path) -> bool:
    """optml's own model — or a directory with no model at all, whose error the built-in loader words."""
    has_torchscript = model_dir.is_dir() and any(p.suffix in (".pt", ".pth") for p in model_dir.iterdir())
    return (model_dir / METADATA_FILE).is_file() or not has_torchscript


def create_script_app(model_dir: Path, code: UserCode | None, settings: ServerSettings) -> Flask:
    import torch

    model = ScriptModel.prepare(model_dir, code, settings.default_accept)
    if torch.cuda.is_initialized():  # the workers are forked from this process: CUDA must wait for model_fn
        raise UserCodeError(f"{model.source} initialised CUDA when imported: move that into model_fn")
    readiness = WorkerReadiness(settings.workers)
    app = create_app(model, settings, readiness=readiness)
    app.extensions[WORKER_START] = functools.partial(start_worker, model, readiness, max(1.0, settings.timeout / 4))
    log.info(
        "script mode: %s (its own handlers: %s); model_fn runs in each of the %d workers",
        model.source, ", ".join(model.handlers.user_defined()) or "none", settings.workers,
    )  # fmt: skip
    return app


def load_any_model(model_dir: Path, settings: ServerSettings, program: str) -> ServedModel:
    """Multi-model endpoints: one model directory, with its own code/ (requirements installed first), or
    optml's own model, or a TorchScript model with the default handlers."""
    name = module_name(program or "inference.py")
    code = UserCode(model_dir / "code", name) if (model_dir / "code" / f"{name}.py").is_file() else None
    if code is None and is_builtin_model(model_dir):
        return BuiltinModel.load(model_dir)
    import_name = f"optml_model_{abs(hash(model_dir.resolve()))}_{name}"  # each model's script its own module
    try:
        if code is not None:
            install_requirements(code.code_dir)
        model = ScriptModel.prepare(model_dir, code, settings.default_accept, import_name)
        model.load(gpu_id(1))  # the one worker of a multi-model endpoint, after the fork
    except (UserError, UserCodeError) as error:
        log.error("cannot load %s: %s", model_dir, error, exc_info=error.__cause__)
        raise ModelLoadError(str(error)) from None  # the registry's 400 for a model that cannot be loaded
    return model
