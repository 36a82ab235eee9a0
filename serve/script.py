"""A user's inference script (script mode) as a ServedModel: context → body → input_fn → predict_fn →
output_fn (or transform_fn) → response.

As the toolkits do, input_fn gets a JSON or CSV body as str and any other body as bytes, the media type
alone as content_type, and the Accept header (SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT, else application/json,
when the client sent none or */*); output_fn may return a body or (body, content_type).

An exception in a handler answers 500 with the one JSON error shape and a request id, never the
traceback, which goes to the log under that id; the worker keeps serving. An exception carrying an
integer `status_code` from 400 to 499 (the inference toolkit's own errors do) answers that status with
its message: the way a script says "bad input".
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from optml.container.artifact import ModelLoadError
from optml.serve.codecs import decode_text
from optml.serve.errors import RequestError
from optml.serve.invocation import InferenceRequest, InferenceResponse
from optml.serve.settings import ServerSettings
from optml.serve.user_module import (
    Context,
    Handler,
    Handlers,
    UserCode,
    UserCodeError,
    bind_handlers,
    import_user_module,
)

log = logging.getLogger("optml.serve")

TEXT_TYPES = ("application/json", "text/csv")  # handed to input_fn as str, as the toolkits do
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"
CLIENT_MESSAGE_LIMIT = 1000


class ScriptModel:
    def __init__(
        self, model_dir: Path, handlers: Handlers, source: str, default_accept: str | None, name: str = "model"
    ) -> None:
        self.model_dir = model_dir
        self.handlers = handlers
        self.source = source  # the script's path, for messages
        self.default_accept = default_accept or "application/json"
        self.name = name
        self.model: Any = None
        self.context: Context | None = None  # set once model_fn has returned in this process

    @classmethod
    def prepare(
        cls, model_dir: Path, code: UserCode | None, default_accept: str | None, import_name: str | None = None
    ) -> ScriptModel:
        """Imports and checks the script (no model_fn yet): raises UserCodeError saying what is wrong."""
        module = import_user_module(code, import_name) if code is not None else None
        source = str(code.file) if code is not None else "the default handlers"
        return cls(model_dir, bind_handlers(module, source), source, default_accept, import_name or "model")

    def load(self, gpu_id: int | None = None) -> None:
        """Runs model_fn. Raises UserCodeError for the user's own exception (chained to it), ModelLoadError
        from the default model_fn."""
        context = Context(str(self.model_dir), gpu_id, self.name)
        try:
            self.model = self.handlers.model_fn(context, str(self.model_dir))
        except ModelLoadError:
            raise
        except Exception as error:
            raise UserCodeError(f"{self.source}: model_fn raised {type(error).__name__}: {error}") from error
        self.context = context

    def invoke(self, request: InferenceRequest, settings: ServerSettings) -> InferenceResponse:
        if self.context is None:
            raise RequestError(503, "loading", "the model is still loading: model_fn has not returned in this worker")
        request_id = request.headers.get(INFERENCE_ID_HEADER) or uuid.uuid4().hex
        context = self.context.for_request(request.headers)
        accept = request.accept if request.accept and request.accept != "*/*" else self.default_accept
        body: str | bytes = request.body
        if request.content_type in TEXT_TYPES:
            body = decode_text(request.body, request.content_type_params.get("charset"))
        handlers = self.handlers
        if handlers.transform_fn is not None:
            result = _call(handlers.transform_fn, context, request_id, self.model, body, request.content_type, accept)
            return _response(result, accept, "transform_fn", request_id)
        data = _call(handlers.input_fn, context, request_id, body, request.content_type)
        prediction = _call(handlers.predict_fn, context, request_id, data, self.model)
        result = _call(handlers.output_fn, context, request_id, prediction, accept)
        return _response(result, accept, "output_fn", request_id)

    def describe(self) -> dict[str, object]:
        return {"task": "script", "script": self.source, "handlers": self.handlers.user_defined()}


def _call(handler: Handler, context: Context, request_id: str, *args: Any) -> Any:
    try:
        return handler(context, *args)
    except RequestError:  # the defaults' own client errors, already worded for the client
        raise
    except Exception as error:
        raise handler_failure(handler.name, error, request_id) from None


def handler_failure(name: str, error: Exception, request_id: str) -> RequestError:
    """The answer to an exception in a handler: its own 4xx status_code, else a 500 that points at the log."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 499:
        message = str(getattr(error, "message", None) or error) or type(error).__name__
        log.info("request %s: %s raised %s (status %d): %s", request_id, name, type(error).__name__, status, message)
        error_name = HTTP_STATUS_CODES.get(status, "client error").lower().replace(" ", "_")
        return RequestError(status, error_name, message[:CLIENT_MESSAGE_LIMIT])
    log.error("request %s: %s raised %s", request_id, name, type(error).__name__, exc_info=error)
    return RequestError(
        500,
        "model_error",
        f"{name} failed ({type(error).__name__}); the endpoint's log has the traceback under request id {request_id}",
    )


def _response(result: Any, accept: str, name: str, request_id: str) -> InferenceResponse:
    content_type = accept
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
        result, content_type = result
    if isinstance(result, bytes):
        return InferenceResponse(result, content_type)
    if isinstance(result, str):
        return InferenceResponse(result.encode("utf-8"), content_type)
    if isinstance(result, bytearray | memoryview):
        return InferenceResponse(bytes(result), content_type)
    try:  # any other value is sent as JSON, as TorchServe does
        return InferenceResponse(json.dumps(result).encode("utf-8"), content_type)
    except (TypeError, ValueError) as error:
        unusable = TypeError(f"{name} returned a {type(result).__name__}: {error}")
        raise handler_failure(name, unusable, request_id) from None
