"""Writing files that a reader may open at any moment: the saved model (read by serving, tarred by SageMaker)
and checkpoints (uploaded to S3 while training runs, resumed after a kill)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# mkstemp creates 0600 files (and some writers, safetensors' among them, recreate the file the same way): a
# model tarred into model.tar.gz and extracted elsewhere must be readable by a server running as another user.
FILE_MODE = 0o644


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temp)` fills a new file in `path`'s directory, which is then fsynced and renamed over `path`.

    A kill at any moment leaves either the old file or the new one, never half of one, and a failed write
    leaves no temp file behind. The temp file is in the same directory because a rename is atomic only
    within one file system, and its name starts with a dot so that nothing listing `path`'s kind finds it.
    """
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    temp = Path(name)
    try:
        write(temp)
        os.chmod(temp, FILE_MODE)
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
