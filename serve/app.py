"""The HTTP app: /ping and /invocations over a model that is already loaded."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from container.artifact import ModelArtifact
from serve.codecs import ENCODERS, RequestError, decode_request

log = logging.getLogger("optml.serve")

DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # SageMaker real-time limit: 6 MiB


@dataclass(frozen=True)
class ServeConfig:
    default_accept: str | None = None  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES


def _json_error(status: int, error: str, message: str) -> Response:
    body = json.dumps({"error": error, "message": message})
    return Response(body, status=status, mimetype="application/json")


def _choose_accept(config: ServeConfig, content_type: str) -> str:
    """The response type: the best supported match for Accept; without a preference, the configured
    default, else the request's own type, else JSON."""
    accept = request.accept_mimetypes
    if not accept or accept.best == "*/*":
        for candidate in (config.default_accept, content_type):
            if candidate in ENCODERS:
                return candidate
        return "application/json"
    best = accept.best_match(list(ENCODERS))
    if best is None:
        raise RequestError(
            406,
            "not_acceptable",
            f"Accept {request.headers.get('Accept')!r} cannot be served; this model answers {', '.join(ENCODERS)}",
        )
    return best


def create_app(model: ModelArtifact, config: ServeConfig | None = None) -> Flask:
    config = config or ServeConfig()
    app = Flask("optml")
    app.config["MAX_CONTENT_LENGTH"] = config.max_payload_bytes

    @app.get("/ping")
    def ping() -> Response:
        # The app only exists once the model is loaded, so being able to answer means healthy.
        return Response(status=200)

    @app.post("/invocations")
    def invocations() -> Response:
        content_type = request.mimetype
        accept = _choose_accept(config, content_type)
        features = decode_request(request.get_data(cache=False), content_type, model.feature_count)
        predictions = model.predict(features)
        return Response(ENCODERS[accept](predictions), status=200, mimetype=accept)

    @app.errorhandler(RequestError)
    def request_error(error: RequestError) -> Response:
        return _json_error(error.status, error.error, error.message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            message = f"request body is larger than the {config.max_payload_bytes} bytes this endpoint accepts"
        else:
            message = error.description or error.name
        return _json_error(status, error.name.lower().replace(" ", "_"), message)

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json_error(500, "internal_error", "the model server failed on this request; see the endpoint logs")

    return app
