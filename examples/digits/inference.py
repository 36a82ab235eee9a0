"""Serve the digits CNN — SageMaker script mode's inference handlers, as AWS's PyTorch examples write them.

``model_fn`` loads model.pth into ``Net``, imported from train.py (both files are in the same source
directory, which the container puts on the import path). ``input_fn`` takes images as JSON (a list of rows
of 64 pixel values 0-16, or of 8x8 lists), NumPy's .npy (what the SDK's NumpySerializer sends) or CSV.
``predict_fn`` returns the predicted digit of each image. There is no ``output_fn``: the container's default
encodes the returned tensor per the request's Accept header (JSON: ``[3, 9, 1]``).
"""

import io
import json
import logging
import os

import numpy as np
import torch

from train import Net, to_images

logger = logging.getLogger(__name__)


def model_fn(model_dir):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Net()
    with open(os.path.join(model_dir, "model.pth"), "rb") as f:
        model.load_state_dict(torch.load(f, map_location=device, weights_only=True))
    logger.info(f"loaded the digits model on {device}")
    return model.to(device).eval()


def input_fn(request_body, request_content_type):
    content_type = request_content_type.split(";")[0].strip().lower()
    if content_type == "application/json":
        pixels = np.asarray(json.loads(request_body), dtype=np.float32)
    elif content_type == "application/x-npy":
        pixels = np.load(io.BytesIO(request_body), allow_pickle=False).astype(np.float32)
    elif content_type == "text/csv":
        text = request_body.decode("utf-8") if isinstance(request_body, bytes) else request_body
        pixels = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, dtype=np.float32)
    else:
        raise ValueError(f"unsupported content type {request_content_type!r}: send application/json, npy or csv")
    if pixels.size == 0 or pixels.size % 64 != 0:
        raise ValueError(f"expected images of 64 pixels (8x8), got an array of shape {pixels.shape}")
    return to_images(pixels.reshape(-1, 64))


def predict_fn(input_data, model):
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(input_data.to(device)).argmax(dim=1).cpu()
