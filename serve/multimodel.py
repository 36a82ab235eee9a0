"""Multi-model endpoints: the registry of models loaded at run time through POST /models.

SageMaker places each model under /opt/ml/models/... (a directory, or a model.tar.gz) and asks the
server to load it by name. A model that fails to load or to predict affects only its own requests.
The registry lives in one process (the server runs one gunicorn worker with threads in this mode), so
every request sees every loaded model.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optml.container.archive import ArchiveError, safe_extract
from optml.container.artifact import WEIGHTS_FILE, ModelLoadError
from optml.serve.errors import RequestError, bad_request
from optml.serve.invocation import ServedModel

MAX_NAME_LENGTH = 256
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass
class LoadedModel:
    name: str
    url: str
    model: ServedModel
    memory_bytes: int
    extracted_dir: Path | None  # our copy of a tarball's contents, removed on unload

    def summary(self) -> dict[str, object]:
        return {"modelName": self.name, "modelUrl": self.url}

    def describe(self) -> dict[str, object]:
        return {**self.summary(), **self.model.describe(), "memoryBytes": self.memory_bytes}


class ModelRegistry:
    def __init__(
        self,
        models_root: Path,
        memory_budget_bytes: int,
        load: Callable[[Path], ServedModel],
        scratch_dir: Path | None = None,
    ) -> None:
        """`load` makes a model directory a ServedModel, raising ModelLoadError when it cannot."""
        self.models_root = models_root
        self.memory_budget_bytes = memory_budget_bytes
        self.load_model_dir = load
        self.scratch_dir = scratch_dir
        self._models: dict[str, LoadedModel] = {}
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    def load(self, name: str, url: str) -> LoadedModel:
        if not name or len(name) > MAX_NAME_LENGTH or "/" in name or not name.isprintable():
            raise bad_request(f"model_name must be 1-{MAX_NAME_LENGTH} printable characters without '/'")
        source = self._source_path(url)
        with self._lock:
            if name in self._models or name in self._loading:
                raise RequestError(409, "conflict", f"model {name!r} is already loaded")
            self._loading.add(name)
        extracted: Path | None = None
        try:
            model_dir = source
            tarball = source if source.is_file() else source / "model.tar.gz"
            if tarball.is_file() and not (source.is_dir() and (source / WEIGHTS_FILE).is_file()):
                extracted = Path(tempfile.mkdtemp(prefix="optml-model-", dir=self.scratch_dir))
                try:
                    safe_extract(tarball, extracted)
                except ArchiveError as error:
                    raise bad_request(f"cannot extract {url}: {error}") from None
                model_dir = extracted
            memory = self._estimate_memory(model_dir)
            with self._lock:
                used = sum(entry.memory_bytes for entry in self._models.values())
            if used + memory > self.memory_budget_bytes:
                raise RequestError(
                    507,
                    "insufficient_storage",
                    f"model {name!r} needs about {memory} bytes; {used} of the {self.memory_budget_bytes}"
                    " byte budget are in use: unload a model first",
                )
            try:
                model = self.load_model_dir(model_dir)
            except ModelLoadError as error:
                raise bad_request(f"cannot load model {name!r}: {error}") from None
            entry = LoadedModel(name, url, model, memory, extracted)
            with self._lock:
                self._models[name] = entry
            extracted = None  # owned by the entry now
            return entry
        finally:
            with self._lock:
                self._loading.discard(name)
            if extracted is not None:
                shutil.rmtree(extracted, ignore_errors=True)

    def get(self, name: str) -> LoadedModel:
        with self._lock:
            entry = self._models.get(name)
        if entry is None:
            raise RequestError(404, "model_not_found", f"model {name!r} is not loaded")
        return entry

    def unload(self, name: str) -> None:
        with self._lock:
            entry = self._models.pop(name, None)
        if entry is None:
            raise RequestError(404, "model_not_found", f"model {name!r} is not loaded")
        if entry.extracted_dir is not None:
            shutil.rmtree(entry.extracted_dir, ignore_errors=True)

    def page(self, limit: str | None, token: str | None) -> tuple[list[LoadedModel], str | None]:
        """Models in name order, `limit` at a time; the token is the offset of the next page."""
        size = _integer(limit, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        start = _integer(token, "next_page_token", 0, 0, None)
        with self._lock:
            names = sorted(self._models)
            entries = [self._models[n] for n in names[start : start + size]]
        return entries, (str(start + size) if start + size < len(names) else None)

    def _source_path(self, url: str) -> Path:
        root = self.models_root.resolve()
        try:
            resolved = (root / url.removeprefix("file://")).resolve()  # an absolute url replaces root
            exists = resolved.exists()
        except (OSError, ValueError) as error:  # NUL bytes, names too long
            raise bad_request(f"url {url[:200]!r} is not a usable path: {error}") from None
        if not resolved.is_relative_to(root):
            raise bad_request(f"url {url[:200]!r} must be a path under {self.models_root}")
        if not exists:
            raise bad_request(f"url {url[:200]!r}: no such file or directory")
        return resolved

    @staticmethod
    def _estimate_memory(model_dir: Path) -> int:
        """The weights' size: a loaded model holds its tensors in memory, plus little else."""
        weights = model_dir / WEIGHTS_FILE
        return weights.stat().st_size if weights.is_file() else 0


def _integer(text: str | None, name: str, default: int, minimum: int, maximum: int | None) -> int:
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < minimum or (maximum and int(text) > maximum):
        upper = f" to {maximum}" if maximum else " or more"
        raise bad_request(f"{name}={text!r}: expected an integer from {minimum}{upper}")
    return int(text)
