"""What the HTTP app and a served model exchange: a request in, a response out.

The app reads the body and the headers SageMaker forwards; the model decodes the body, predicts and
encodes its answer itself. optml's own trained models are one kind of ServedModel (builtin.py); a user's
inference script, which decodes and encodes in its own input_fn / output_fn, is another (script.py). The
multi-model registry holds ServedModels by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from werkzeug.datastructures import Headers

from optml.serve.settings import ServerSettings

RequestHeaders = Mapping[str, str] | Headers  # werkzeug's (case-insensitive), or a plain dict in tests


@dataclass(slots=True)
class InferenceRequest:
    body: bytes
    content_type: str  # the media type alone, lower case: "text/csv"
    content_type_params: Mapping[str, str]  # its parameters: {"charset": "utf-8"}
    accept: str | None  # the Accept header as sent
    custom_attributes: str | None  # X-Amzn-SageMaker-Custom-Attributes as sent
    headers: RequestHeaders = field(default_factory=dict)  # all of them, for a script's context


@dataclass(slots=True)
class InferenceResponse:
    body: bytes
    content_type: str  # the whole Content-Type header: "text/csv; charset=utf-8"


class ServedModel(Protocol):
    def invoke(self, request: InferenceRequest, settings: ServerSettings) -> InferenceResponse:
        """The answer to one request. A client mistake raises RequestError (its status and message reach
        the client); any other exception is logged and answered with a generic 500."""
        ...

    def describe(self) -> dict[str, object]:
        """What GET /models/<name> shows about the model besides its name and URL."""
        ...
