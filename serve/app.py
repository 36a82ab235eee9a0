"""The HTTP app — the map of the server. Every route, and where its request goes:

  GET  /ping                    200 once a model is loaded (multi-model: once the app is up)
  POST /invocations             invoke(): custom attributes → Accept → decode body → predict → encode
  GET  /execution-parameters    batch transform settings (batch.py)

Client mistakes raise RequestError (errors.py) anywhere below; every error leaves as one JSON shape.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from container.artifact import ModelArtifact
from serve.batch import ExecutionParameters
from serve.codecs import FeatureSchema, decode_request, encode_response
from serve.errors import RequestError
from serve.negotiation import CUSTOM_ATTRIBUTES_HEADER, choose_response_type, parse_custom_attributes
from serve.outputs import check_options, shape_result

log = logging.getLogger("optml.serve")

DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # SageMaker real-time limit: 6 MiB


@dataclass(frozen=True)
class ServeConfig:
    default_accept: str | None = None  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    batch: bool = False  # SAGEMAKER_BATCH: answer line-per-record bodies line by line
    execution_parameters: ExecutionParameters = ExecutionParameters(1, "MULTI_RECORD", 6)


def json_response(document: object, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")


def _json_error(status: int, error: str, message: str) -> Response:
    return json_response({"error": error, "message": message}, status)


def create_app(model: ModelArtifact, config: ServeConfig | None = None) -> Flask:
    config = config or ServeConfig()
    schema = FeatureSchema.of(model.feature_count, model.feature_names)
    app = Flask("optml")
    app.config["MAX_CONTENT_LENGTH"] = config.max_payload_bytes  # also caps chunked bodies

    @app.before_request
    def refuse_oversized_body() -> None:
        # Decided from the header alone: the body is never read.
        if request.content_length is not None and request.content_length > config.max_payload_bytes:
            raise RequestEntityTooLarge()

    @app.get("/ping")
    def ping() -> Response:
        # The app only exists once the model is loaded, so being able to answer means healthy.
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return json_response(config.execution_parameters.to_json())

    def invoke(served: ModelArtifact, served_schema: FeatureSchema) -> Response:
        attributes = request.headers.get(CUSTOM_ATTRIBUTES_HEADER)
        options = parse_custom_attributes(attributes)
        check_options(options, served.task)
        response_type = choose_response_type(
            request.headers.get("Accept"), config.default_accept, request.mimetype
        )
        records = decode_request(
            request.get_data(cache=False),
            request.mimetype,
            request.mimetype_params,
            served_schema,
            config.batch,
        )
        predictions = served.predict(records.features)
        result = shape_result(predictions, served.metadata.classes, options)
        body = encode_response(result, response_type, options.output, config.batch and records.one_per_line)
        response = Response(body, status=200, mimetype=response_type)
        if attributes:
            response.headers[CUSTOM_ATTRIBUTES_HEADER] = attributes  # SageMaker returns it only if echoed
        return response

    @app.post("/invocations")
    def invocations() -> Response:
        return invoke(model, schema)

    @app.errorhandler(RequestError)
    def request_error(error: RequestError) -> Response:
        return _json_error(error.status, error.error, error.message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            message = (
                f"request body is larger than the {config.max_payload_bytes} bytes this endpoint accepts"
            )
        else:
            message = error.description or error.name
        return _json_error(status, error.name.lower().replace(" ", "_"), message)

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json_error(
            500, "internal_error", "the model server failed on this request; see the endpoint logs"
        )

    return app
