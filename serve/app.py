"""The HTTP app — the map of the server. Every route, and where its request goes:

  GET  /ping                    200: the app exists only once its model is loaded (multi-model: once it is up);
                                script mode: 503 until model_fn has returned in every worker (readiness.py)
  POST /invocations             invoke(): read the body → ServedModel.invoke (invocation.py) → response;
                                multi-model: the model X-Amzn-SageMaker-Target-Model names
  GET  /execution-parameters    batch transform settings (batch.py)
  multi-model endpoints only (registry in multimodel.py):
  POST /models  GET /models  GET|DELETE /models/<name>  POST /models/<name>/invoke → invoke()

optml's own models answer in builtin.py: custom attributes → Accept → decode → predict → shape → encode.
A user's inference.py (script mode) answers in script.py: input_fn → predict_fn → output_fn, or transform_fn;
user_module.py finds and checks the script, handlers.py holds the defaults for the handlers it leaves out.
Client mistakes raise RequestError (errors.py) anywhere below; every error leaves as one JSON shape.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from optml.serve.body import payload_too_large, read_body
from optml.serve.errors import RequestError, bad_request
from optml.serve.invocation import InferenceRequest, ServedModel
from optml.serve.multimodel import ModelRegistry
from optml.serve.negotiation import CUSTOM_ATTRIBUTES_HEADER
from optml.serve.settings import ServerSettings

if TYPE_CHECKING:
    from optml.serve.readiness import WorkerReadiness

log = logging.getLogger("optml.serve")

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"


def create_app(
    model: ServedModel | None,
    settings: ServerSettings | None = None,
    registry: ModelRegistry | None = None,
    readiness: WorkerReadiness | None = None,
) -> Flask:
    """A single-model server over `model`, or with `registry` (and no model) a multi-model one. With
    `readiness`, /ping waits for every worker to have loaded the model (script mode's model_fn)."""
    if (model is None) == (registry is None):
        raise ValueError("create_app needs exactly one of a model and a multi-model registry")
    routes = Routes(settings or ServerSettings(), model, registry)
    app = Flask("optml")  # every body is read through read_body, which enforces the payload limit
    app.before_request(routes.refuse_oversized_body)
    if readiness is None:
        app.add_url_rule("/ping", view_func=ping, methods=["GET"])
    else:
        app.add_url_rule("/ping", "ping", lambda: ping_when_loaded(readiness), methods=["GET"])
    app.add_url_rule("/execution-parameters", view_func=routes.execution_parameters, methods=["GET"])
    app.add_url_rule("/invocations", view_func=routes.invocations, methods=["POST"])
    if registry is not None:
        app.add_url_rule("/models", view_func=routes.load_model, methods=["POST"])
        app.add_url_rule("/models", view_func=routes.list_models, methods=["GET"])
        app.add_url_rule("/models/<name>", view_func=routes.describe_model, methods=["GET"])
        app.add_url_rule("/models/<name>", view_func=routes.unload_model, methods=["DELETE"])
        app.add_url_rule("/models/<name>/invoke", view_func=routes.invoke_model, methods=["POST"])
    app.register_error_handler(RequestError, request_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, internal_error)
    return app


class Routes:
    """The app's state — its settings, and its one model or its registry of models — with the routes that
    use it as methods."""

    def __init__(self, settings: ServerSettings, model: ServedModel | None, registry: ModelRegistry | None) -> None:
        self.settings = settings
        self.model = model
        self._registry = registry

    def refuse_oversized_body(self) -> None:
        # Decided from the header alone: the body is never read (bodies without one: read_body).
        if request.content_length is not None and request.content_length > self.settings.max_payload_bytes:
            raise payload_too_large(self.settings.max_payload_bytes)

    def execution_parameters(self) -> Response:
        return json_response(self.settings.execution_parameters.to_json())

    def invocations(self) -> Response:
        if self.model is not None:
            return self.invoke(self.model)
        target = request.headers.get(TARGET_MODEL_HEADER)
        if not target:
            raise bad_request(
                f"this is a multi-model endpoint: POST /models/<name>/invoke or set {TARGET_MODEL_HEADER}"
            )
        return self.invoke(self.registry.get(target).model)

    def invoke(self, model: ServedModel) -> Response:
        attributes = request.headers.get(CUSTOM_ATTRIBUTES_HEADER)
        body = read_body(self.settings.max_payload_bytes)
        inference = InferenceRequest(
            body, request.mimetype, request.mimetype_params, request.headers.get("Accept"), attributes, request.headers
        )
        answer = model.invoke(inference, self.settings)
        response = Response(answer.body, status=200, content_type=answer.content_type)
        if attributes:
            response.headers[CUSTOM_ATTRIBUTES_HEADER] = attributes  # SageMaker returns it only if echoed
        return response

    # ---- multi-model endpoints only ----------------------------------------------------------------------

    @property
    def registry(self) -> ModelRegistry:
        assert self._registry is not None, "create_app adds the registry's routes only when it has one"
        return self._registry

    def load_model(self) -> Response:
        try:
            document = json.loads(read_body(self.settings.max_payload_bytes))
        except ValueError:  # not JSON, or not UTF-8
            document = None
        if not isinstance(document, dict) or not all(
            isinstance(document.get(key), str) for key in ("model_name", "url")
        ):
            raise bad_request('POST /models needs a JSON body {"model_name": "...", "url": "..."}')
        entry = self.registry.load(document["model_name"], document["url"])
        return json_response({"message": f"model {entry.name!r} loaded", **entry.describe()})

    def list_models(self) -> Response:
        entries, next_token = self.registry.page(request.args.get("limit"), request.args.get("next_page_token"))
        page: dict[str, object] = {"models": [entry.summary() for entry in entries]}
        if next_token is not None:
            page["nextPageToken"] = next_token
        return json_response(page)

    def describe_model(self, name: str) -> Response:
        return json_response(self.registry.get(name).describe())

    def unload_model(self, name: str) -> Response:
        self.registry.unload(name)
        return json_response({"message": f"model {name!r} unloaded"})

    def invoke_model(self, name: str) -> Response:
        return self.invoke(self.registry.get(name).model)


def ping() -> Response:
    return Response(status=200)


def ping_when_loaded(readiness: WorkerReadiness) -> Response:
    if readiness.all_loaded():
        return Response(status=200)
    return json_response(
        {"error": "loading", "message": f"model_fn has returned in {readiness.loaded} of {readiness.workers} workers"},
        503,
    )


def json_response(document: object, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")


def request_error(error: RequestError) -> Response:
    return client_error(error.status, error.error, error.message)


def http_error(error: HTTPException) -> Response:
    return client_error(error.code or 500, error.name.lower().replace(" ", "_"), error.description or error.name)


def client_error(status: int, error: str, message: str) -> Response:
    log.info("%s %s -> %d %s: %s", request.method, request.path, status, error, message)
    return json_response({"error": error, "message": message}, status)


def internal_error(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return json_response(
        {"error": "internal_error", "message": "the model server failed on this request; see the endpoint logs"}, 500
    )
