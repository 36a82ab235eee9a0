"""optml's own models, the ones `train` saves, as a ServedModel: options → response type → decode →
predict → shape (→ explain, when asked) → encode. The cheap checks of the headers come before decoding the
body (which the app has already read, within the payload limit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from werkzeug.utils import get_content_type

from optml.container.artifact import ModelArtifact, load_model
from optml.serve.codecs import FeatureSchema, decode_request, encode_response
from optml.serve.explain import LazyExplainer, check_explained_type
from optml.serve.invocation import InferenceRequest, InferenceResponse
from optml.serve.negotiation import RESPONSE_TYPES, choose_response_type, parse_custom_attributes
from optml.serve.outputs import check_options, shape_result
from optml.serve.settings import ServerSettings

# Each response type's Content-Type header as werkzeug writes it for a bare media type (text types name
# their charset), resolved once rather than per response.
CONTENT_TYPES = {media_type: get_content_type(media_type, "utf-8") for media_type in RESPONSE_TYPES}


class BuiltinModel:
    def __init__(self, artifact: ModelArtifact, model_dir: Path | None = None) -> None:
        """`model_dir`: where the model was loaded from, whose background explanations need (none: the
        model answers explain=true with a 400)."""
        self.artifact = artifact
        self.schema = FeatureSchema.for_model(artifact)
        self.explainer = LazyExplainer(artifact, model_dir)  # builds nothing until a client asks

    @classmethod
    def load(cls, model_dir: Path) -> BuiltinModel:
        """Raises ModelLoadError naming what is missing or wrong in `model_dir`."""
        return cls(load_model(model_dir), model_dir)

    def invoke(self, request: InferenceRequest, settings: ServerSettings) -> InferenceResponse:
        options = parse_custom_attributes(request.custom_attributes)
        check_options(options, self.artifact.task)
        response_type = choose_response_type(request.accept, settings.default_accept, request.content_type)
        if options.explain:
            check_explained_type(response_type)
        records = decode_request(
            request.body, request.content_type, request.content_type_params, self.schema, settings.batch
        )
        predictions = self.artifact.predict(records.features)
        result = shape_result(predictions, self.artifact.metadata.classes, options)
        if options.explain:  # the scores predict computed, not a second pass through the network
            scores = predictions.scores if predictions.scores is not None else np.asarray(predictions.labels)
            result.explanations = self.explainer.explain(records.features, scores)
        body = encode_response(result, response_type, options.output, settings.batch and records.one_per_line)
        return InferenceResponse(body, CONTENT_TYPES[response_type])

    def describe(self) -> dict[str, object]:
        return {"task": self.artifact.task, "featureCount": self.artifact.feature_count}
