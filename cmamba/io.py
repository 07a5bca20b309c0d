"""File mechanics shared by every layer, one copy each: atomic writes, content hashing, tool versions.

Imports only the standard library (and ``cmamba.__version__``), so any module may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"  # temporary files beside their target; a killed run's leftovers start with this
TOOLS = ("numpy", "torch", "pyarrow", "dask", "av", "librosa", "mediapipe", "transformers", "faster-whisper",
         "opensmile", "safetensors")  # fmt: skip


def temporary_name(target: Path) -> Path:
    """The temporary file an atomic write of ``target`` goes through (same folder, so the rename is atomic)."""
    return target.with_name(f"{TMP_PREFIX}{os.getpid()}-{target.name}")


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``target``'s new content to; on success it is fsynced and renamed over
    ``target``, so readers see the old file or the whole new one, never a partial one (even after power loss).
    On failure the temporary file is removed and the error propagates."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(target: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``target`` atomically; returns ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(target)


def write_json_atomic(target: str | Path, payload: Any) -> Path:
    """``payload`` as indented JSON (non-JSON values via ``str``), written atomically."""
    return atomic_write(target, json.dumps(payload, indent=2, default=str))


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of cmamba, Python and the tools that shape features and models, from package metadata (nothing
    heavy is imported); saved with every output."""
    from cmamba import __version__

    found = {"cmamba": __version__, "python": platform.python_version()}
    for name in TOOLS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
