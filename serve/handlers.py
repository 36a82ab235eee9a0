"""The default handlers of script mode: what serves a user's model when inference.py leaves a handler out.

- model_fn: the TorchScript `model.pt` in the model directory, or its single `*.pt` / `*.pth` (torch.jit.load;
  on the worker's GPU when there is one). optml's own models carry a `model.pt` export too.
- input_fn: CSV, JSON, JSON Lines or NPY into a float32 tensor. There is no feature schema for a user's
  model, so the data decides the shape: CSV rows (rows, width of the first line); JSON as given (nested
  lists keep their shape, `{"instances": [...]}` and `{"features": [...]}` unwrapped); JSON Lines one record
  per line, stacked; NPY as saved.
- predict_fn: model(tensor) under torch.inference_mode, the tensor moved to the model's device.
- output_fn: a tensor, array, list or number encoded per Accept (JSON, CSV, JSON Lines, NPY).

Each takes the context last; client mistakes raise RequestError, whose message reaches the client.
"""

from __future__ import annotations

import io
import itertools
import json
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from optml.container.artifact import EXPORT_FILE, ModelLoadError
from optml.serve.builtin import CONTENT_TYPES
from optml.serve.codecs import FLOAT32_MAX, FeatureSchema, decode_csv, decode_text, load_json, load_npy
from optml.serve.errors import RequestError, bad_request
from optml.serve.negotiation import choose_response_type

if TYPE_CHECKING:
    from optml.serve.user_module import Context

_DEVICES: weakref.WeakKeyDictionary[torch.nn.Module, torch.device] = weakref.WeakKeyDictionary()
INPUT_TYPES = ("text/csv", "application/json", "application/jsonlines", "application/x-npy")
MODEL_SUFFIXES = (".pt", ".pth")


def default_model_fn(model_dir: str, context: Context) -> torch.nn.Module:
    directory = Path(model_dir)
    path = directory / EXPORT_FILE
    if not path.is_file():
        candidates = sorted(p for p in directory.glob("*") if p.suffix in MODEL_SUFFIXES and p.is_file())
        if len(candidates) != 1:
            present = ", ".join(sorted(p.name for p in directory.iterdir())) if directory.is_dir() else "nothing"
            raise ModelLoadError(
                f"the default model_fn loads a TorchScript {EXPORT_FILE} (or the single *.pt / *.pth) from"
                f" {model_dir}; found: {present or 'nothing'}. Define model_fn in inference.py to load anything else"
            )
        path = candidates[0]
    device = torch.device("cpu") if context.gpu_id is None else torch.device("cuda", context.gpu_id)
    try:
        with warnings.catch_warnings():
            # torch 2.13 marks TorchScript deprecated; loading the format the user chose is not news to them.
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device)
    except RuntimeError as error:
        raise ModelLoadError(
            f"{path} is not a TorchScript model (torch.jit.save); define model_fn in inference.py to load it"
            f" another way ({str(error).splitlines()[0][:200]})"
        ) from error
    return model.eval()


def default_input_fn(body: str | bytes, content_type: str, context: Context) -> torch.Tensor:
    if content_type == "application/x-npy":
        array = load_npy(body if isinstance(body, bytes) else body.encode())
        if array.dtype.kind not in "biuf":
            raise bad_request(f"the .npy array has dtype {array.dtype}; expected numbers")
        return _tensor(array.astype(np.float64, copy=False), "the .npy array")
    if content_type not in INPUT_TYPES:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"Content-Type {content_type or '(none)'!r} is not supported by the default input_fn; send one of"
            f" {', '.join(INPUT_TYPES)}, or define input_fn in inference.py",
        )
    text = body if isinstance(body, str) else decode_text(body, None)
    if content_type == "text/csv":
        first = next((line for line in text.splitlines() if line.strip()), "")
        rows = decode_csv(text, FeatureSchema(count=first.count(",") + 1))
        assert isinstance(rows, np.ndarray), "a schema without an encoder decodes to an array"
        return _tensor(rows, "the CSV body")
    if content_type == "application/jsonlines":
        records = [_unwrap(load_json(line, f"JSON Lines line {n}")) for n, line in enumerate(text.splitlines(), 1)
                   if line.strip()]  # fmt: skip
        if not records:
            raise bad_request("empty JSON Lines body: expected one JSON record per line")
        return _tensor(_numbers(records, "the JSON Lines records"), "the JSON Lines records")
    document = load_json(text, "JSON body")
    if isinstance(document, dict) and "instances" in document:
        document = document["instances"]
    elif isinstance(document, dict) and "features" in document:
        document = [document["features"]]
    return _tensor(_numbers(document, "the JSON body"), "the JSON body")


def _unwrap(record: Any) -> Any:
    return record["features"] if isinstance(record, dict) and "features" in record else record


def _numbers(document: Any, what: str) -> np.ndarray:
    if isinstance(document, dict | str):
        raise bad_request(f'{what} must be numbers: nested lists, {{"instances": [...]}} or {{"features": [...]}}')
    try:
        return np.asarray(document, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(f"{what} must be numbers in lists of equal length (one shape for every record)") from None


def _tensor(array: np.ndarray, what: str) -> torch.Tensor:
    if array.size == 0:
        raise bad_request(f"{what} holds no data")
    in_range = np.abs(array) <= FLOAT32_MAX  # False for NaN and inf too
    if not in_range.all():
        where = tuple(int(i) for i in np.argwhere(~in_range)[0])
        raise bad_request(f"{what}: the value at {where} ({array[where]}) is not a finite float32 number")
    return torch.from_numpy(array.astype(np.float32))


def default_predict_fn(data: Any, model: Any, context: Context) -> Any:
    with torch.inference_mode():
        if isinstance(data, torch.Tensor) and isinstance(model, torch.nn.Module):
            data = data.to(_device(model))
        try:
            return model(data)
        except RuntimeError as error:  # a TorchScript model refusing the input's shape says so on its last line
            if not isinstance(data, torch.Tensor):
                raise
            reason = [line for line in str(error).splitlines() if line.strip()][-1:] or ["(no message)"]
            raise bad_request(
                f"the model cannot take an input of shape {tuple(data.shape)}: {reason[0].strip()[:300]}"
            ) from None


def _device(model: torch.nn.Module) -> torch.device:
    """Where the model's tensors are: found once per model (walking its modules took ~5% of a request)."""
    device = _DEVICES.get(model)
    if device is None:
        first = next(itertools.chain(model.parameters(), model.buffers()), None)
        device = _DEVICES[model] = first.device if first is not None else torch.device("cpu")
    return device


def default_output_fn(prediction: Any, accept: str, context: Context) -> tuple[bytes, str]:
    response_type = choose_response_type(accept, None, "application/json")
    if isinstance(prediction, torch.Tensor):
        prediction = prediction.detach().cpu().numpy()
    if response_type == "application/json" and not isinstance(prediction, np.ndarray):
        return json.dumps(prediction).encode("utf-8"), CONTENT_TYPES[response_type]  # lists, dicts as they are
    array = np.asarray(prediction)
    if response_type == "application/x-npy":
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        return buffer.getvalue(), CONTENT_TYPES[response_type]
    values = array.tolist()
    if response_type == "application/json":
        body = json.dumps(values)
    elif response_type == "application/jsonlines":
        body = "".join(json.dumps(record) + "\n" for record in (values if array.ndim else [values]))
    else:  # text/csv: one line per record, its values comma-separated
        rows = array.reshape(len(array), -1).tolist() if array.ndim > 1 else [[v] for v in array.reshape(-1).tolist()]
        body = "".join(",".join(map(str, row)) + "\n" for row in rows)
    return body.encode("utf-8"), CONTENT_TYPES[response_type]
