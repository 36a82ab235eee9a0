"""The HTTP app — the map of the server. Every route, and where its request goes:

  GET  /ping                    200 once a model is loaded (multi-model: once the app is up)
  POST /invocations             invoke(): custom attributes → Accept → read body → decode → predict → encode
  GET  /execution-parameters    batch transform settings (batch.py)
  multi-model endpoints only (registry in multimodel.py):
  POST /models  GET /models  GET|DELETE /models/<name>  POST /models/<name>/invoke → invoke()

Client mistakes raise RequestError (errors.py) anywhere below; every error leaves as one JSON shape.
"""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from container.artifact import ModelArtifact
from serve.body import payload_too_large, read_body
from serve.codecs import FeatureSchema, decode_request, encode_response
from serve.errors import RequestError, bad_request
from serve.multimodel import ModelRegistry
from serve.negotiation import CUSTOM_ATTRIBUTES_HEADER, choose_response_type, parse_custom_attributes
from serve.outputs import check_options, shape_result
from serve.settings import ServerSettings

log = logging.getLogger("optml.serve")

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"


def json_response(document: object, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")


def _json_error(status: int, error: str, message: str) -> Response:
    return json_response({"error": error, "message": message}, status)


def create_app(
    model: ModelArtifact | None, settings: ServerSettings | None = None, registry: ModelRegistry | None = None
) -> Flask:
    """A single-model server over `model`, or with `registry` (and no model) a multi-model one."""
    if (model is None) == (registry is None):
        raise ValueError("create_app needs exactly one of a model and a multi-model registry")
    settings = settings or ServerSettings()
    schema = FeatureSchema.for_model(model) if model else None
    app = Flask("optml")  # every body is read through read_body, which enforces the payload limit

    @app.before_request
    def refuse_oversized_body() -> None:
        # Decided from the header alone: the body is never read (bodies without one: read_body).
        if request.content_length is not None and request.content_length > settings.max_payload_bytes:
            raise payload_too_large(settings.max_payload_bytes)

    @app.get("/ping")
    def ping() -> Response:
        # The app only exists once the model is loaded, so being able to answer means healthy.
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return json_response(settings.execution_parameters.to_json())

    def invoke(served: ModelArtifact, served_schema: FeatureSchema) -> Response:
        attributes = request.headers.get(CUSTOM_ATTRIBUTES_HEADER)
        options = parse_custom_attributes(attributes)
        check_options(options, served.task)
        response_type = choose_response_type(request.headers.get("Accept"), settings.default_accept, request.mimetype)
        records = decode_request(
            read_body(settings.max_payload_bytes),
            request.mimetype,
            request.mimetype_params,
            served_schema,
            settings.batch,
        )
        predictions = served.predict(records.features)
        result = shape_result(predictions, served.metadata.classes, options)
        body = encode_response(result, response_type, options.output, settings.batch and records.one_per_line)
        response = Response(body, status=200, mimetype=response_type)
        if attributes:
            response.headers[CUSTOM_ATTRIBUTES_HEADER] = attributes  # SageMaker returns it only if echoed
        return response

    @app.post("/invocations")
    def invocations() -> Response:
        if model is not None and schema is not None:
            return invoke(model, schema)
        assert registry is not None
        target = request.headers.get(TARGET_MODEL_HEADER)
        if not target:
            raise bad_request(
                f"this is a multi-model endpoint: POST /models/<name>/invoke or set {TARGET_MODEL_HEADER}"
            )
        entry = registry.get(target)
        return invoke(entry.model, entry.schema)

    if registry is not None:

        @app.post("/models")
        def load_model() -> Response:
            try:
                document = json.loads(read_body(settings.max_payload_bytes))
            except ValueError:  # not JSON, or not UTF-8
                document = None
            if not isinstance(document, dict) or not all(
                isinstance(document.get(key), str) for key in ("model_name", "url")
            ):
                raise bad_request('POST /models needs a JSON body {"model_name": "...", "url": "..."}')
            entry = registry.load(document["model_name"], document["url"])
            return json_response({"message": f"model {entry.name!r} loaded", **entry.describe()})

        @app.get("/models")
        def list_models() -> Response:
            entries, next_token = registry.page(request.args.get("limit"), request.args.get("next_page_token"))
            page: dict[str, object] = {"models": [entry.summary() for entry in entries]}
            if next_token is not None:
                page["nextPageToken"] = next_token
            return json_response(page)

        @app.get("/models/<name>")
        def describe_model(name: str) -> Response:
            return json_response(registry.get(name).describe())

        @app.delete("/models/<name>")
        def unload_model(name: str) -> Response:
            registry.unload(name)
            return json_response({"message": f"model {name!r} unloaded"})

        @app.post("/models/<name>/invoke")
        def invoke_model(name: str) -> Response:
            entry = registry.get(name)
            return invoke(entry.model, entry.schema)

    def client_error(status: int, error: str, message: str) -> Response:
        log.info("%s %s -> %d %s: %s", request.method, request.path, status, error, message)
        return _json_error(status, error, message)

    @app.errorhandler(RequestError)
    def request_error(error: RequestError) -> Response:
        return client_error(error.status, error.error, error.message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return client_error(error.code or 500, error.name.lower().replace(" ", "_"), error.description or error.name)

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json_error(500, "internal_error", "the model server failed on this request; see the endpoint logs")

    return app
