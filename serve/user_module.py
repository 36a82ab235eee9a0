"""The user's inference script (SageMaker script mode): where it is, and its handlers checked and bound.

Where: SAGEMAKER_PROGRAM names the module (default inference.py), looked for in SAGEMAKER_SUBMIT_DIRECTORY when
that is a local path (SDK v2 local mode mounts the source at /opt/ml/code and points it there; an s3://
sourcedir.tar.gz is the code the SDK also repacked into model.tar.gz), then /opt/ml/model/code (v2's repack,
v3's ModelBuilder), then /opt/ml/code.

What: model_fn(model_dir), input_fn(body, content_type), predict_fn(data, model), output_fn(prediction, accept),
or transform_fn(model, body, content_type, accept) alone — each optionally taking a last `context` argument,
passed when the signature has room for it (the toolkits' rule). A missing one falls back to handlers.py.
Everything is checked when the server starts, so a bad script stops it with a message, not a request.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optml.serve.invocation import RequestHeaders

log = logging.getLogger("optml.serve")

DEFAULT_PROGRAM = "inference.py"
# What SageMaker passes each handler, before the optional context.
PARAMETERS = {
    "model_fn": ("model_dir",),
    "input_fn": ("body", "content_type"),
    "predict_fn": ("data", "model"),
    "output_fn": ("prediction", "accept"),
    "transform_fn": ("model", "body", "content_type", "accept"),
}
# transform_fn is the whole request in one function, and the script that defines it defines nothing else:
# its model comes from the default model_fn (TorchScript model.pt).
NOT_WITH_TRANSFORM = ("model_fn", "input_fn", "predict_fn", "output_fn")


class UserCodeError(Exception):
    """The user's script cannot be served: the message names the file and what to change. (Not a
    ModelLoadError: that lives with torch, and `serve` raises this before gunicorn, without importing torch.)"""


@dataclass(frozen=True)
class UserCode:
    code_dir: Path
    module_name: str  # "inference"

    @property
    def file(self) -> Path:
        return self.code_dir / f"{self.module_name}.py"


def module_name(program: str) -> str:
    """SAGEMAKER_PROGRAM as the toolkits read it: a file name (or path) with .py, or a module name."""
    return Path(program.strip()).name.removesuffix(".py")


def locate_user_code(env: Mapping[str, str], model_dir: Path, code_dir: Path) -> UserCode | None:
    """The directory holding the script, or None when there is no script (the built-in or default path).
    SAGEMAKER_PROGRAM set to a script that is nowhere is an error, not a silent fallback."""
    program = env.get("SAGEMAKER_PROGRAM", "").strip()
    name = module_name(program or DEFAULT_PROGRAM)
    candidates = []
    submit = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "").strip().removeprefix("file://")
    if submit and "://" not in submit:
        candidates.append(Path(submit))
    candidates += [model_dir / "code", code_dir]
    for directory in candidates:
        if (directory / f"{name}.py").is_file():
            return UserCode(directory, name)
    if program:
        raise UserCodeError(
            f"SAGEMAKER_PROGRAM={program}: {name}.py is not in {', '.join(str(d) for d in dict.fromkeys(candidates))}"
        )
    return None


def import_user_module(code: UserCode, import_name: str | None = None) -> ModuleType:
    """Imports the script with its directory first on sys.path (so `from train import Net` works). A
    multi-model endpoint gives each model's script its own `import_name`."""
    if str(code.code_dir) not in sys.path:
        sys.path.insert(0, str(code.code_dir))
    name = import_name or code.module_name
    spec = importlib.util.spec_from_file_location(name, code.file)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"{code.file} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # anything the script raises at import: a syntax error, a missing package
        del sys.modules[name]
        raise UserCodeError(f"{code.file} failed to import: {type(error).__name__}: {error}") from error
    return module


@dataclass(frozen=True)
class Handler:
    """One handler, the user's or the default, called with or without the context as its signature says."""

    name: str
    function: Callable[..., Any]
    takes_context: bool
    from_user: bool

    def __call__(self, context: Context, *args: Any) -> Any:
        return self.function(*args, context) if self.takes_context else self.function(*args)


@dataclass(frozen=True)
class Handlers:
    model_fn: Handler
    input_fn: Handler
    predict_fn: Handler
    output_fn: Handler
    transform_fn: Handler | None  # set: it answers the request alone

    def user_defined(self) -> list[str]:
        return [h.name for h in (self.model_fn, self.input_fn, self.predict_fn, self.output_fn, self.transform_fn)
                if h is not None and h.from_user]  # fmt: skip


def bind_handlers(module: ModuleType | None, source: str) -> Handlers:
    """The module's handlers, checked, with the defaults for the missing ones (all defaults without a module)."""
    found: dict[str, Any] = {name: getattr(module, name, None) for name in PARAMETERS} if module else {}
    for name, function in found.items():
        if function is not None and not callable(function):
            raise UserCodeError(f"{source}: {name} is a {type(function).__name__}, not a function")
    if found.get("transform_fn") is not None:
        others = [name for name in NOT_WITH_TRANSFORM if found.get(name) is not None]
        if others:
            raise UserCodeError(
                f"{source} defines transform_fn together with {', '.join(others)}: transform_fn answers the whole"
                " request alone (its model comes from the default model_fn, a TorchScript model.pt). Define either"
                " transform_fn, or model_fn / input_fn / predict_fn / output_fn"
            )
    defaults = _defaults()
    bound = {
        name: Handler(name, function, _takes_context(function, name, source), True)
        if (function := found.get(name)) is not None
        else Handler(name, defaults[name], True, False)
        for name in defaults
    }
    transform = found.get("transform_fn")
    transform_fn = (
        Handler("transform_fn", transform, _takes_context(transform, "transform_fn", source), True)
        if transform is not None
        else None
    )
    return Handlers(transform_fn=transform_fn, **bound)


def _defaults() -> dict[str, Callable[..., Any]]:
    from optml.serve import handlers  # torch: imported once a script is served, not by `serve` before gunicorn

    return {
        "model_fn": handlers.default_model_fn,
        "input_fn": handlers.default_input_fn,
        "predict_fn": handlers.default_predict_fn,
        "output_fn": handlers.default_output_fn,
    }


def _takes_context(function: Callable[..., Any], name: str, source: str) -> bool:
    """The toolkits' rule: one parameter more than SageMaker's arguments is the context."""
    expected = PARAMETERS[name]
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: call it the plain way
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) in (len(expected), len(expected) + 1):
        return len(positional) == len(expected) + 1
    raise UserCodeError(
        f"{source}: {name}{inspect.signature(function)} takes {len(positional)} arguments; it is called as"
        f" {name}({', '.join(expected)}) or {name}({', '.join(expected)}, context)"
    )


@dataclass
class Context:
    """The optional last argument of every handler: the parts of the toolkits' (MMS / TorchServe) context
    that scripts use — system_properties["model_dir"] and ["gpu_id"], and the request's headers."""

    model_dir: str
    gpu_id: int | None
    model_name: str = "model"
    request_headers: RequestHeaders = field(default_factory=dict)

    @property
    def system_properties(self) -> dict[str, object]:
        return {"model_dir": self.model_dir, "gpu_id": self.gpu_id}

    def for_request(self, headers: RequestHeaders) -> Context:
        return Context(self.model_dir, self.gpu_id, self.model_name, headers)

    def get_request_header(self, index: int, name: str) -> str | None:
        return self.request_headers.get(name)

    def get_all_request_header(self, index: int) -> dict[str, str]:
        return dict(self.request_headers)
