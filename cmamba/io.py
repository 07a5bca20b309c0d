"""File mechanics shared by every layer, one copy each: atomic writes, content hashing, tool versions, and
keeping native libraries' log lines off the user's terminal.

Imports only the standard library (and ``cmamba.__version__``), so any module may use it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"  # temporary files beside their target; a killed run's leftovers start with this
TOOLS = ("numpy", "torch", "pyarrow", "dask", "av", "librosa", "mediapipe", "transformers", "faster-whisper",
         "opensmile", "safetensors")  # fmt: skip


@contextmanager
def native_stderr_to(log: logging.Logger) -> Iterator[None]:
    """Inside this block, what native code writes to file descriptor 2 (MediaPipe's C++ log lines: graph set-up
    notes on every landmarker) goes to ``log`` at debug level instead of the terminal; when the block raises, the
    lines are logged as warnings (they may explain the error). Python's ``sys.stderr`` shares the descriptor, so
    keep the block short (model creation)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                log.log(logging.WARNING if failed else logging.DEBUG, "native: %s", line)


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


def json_text(payload: Any, indent: int | None = 2) -> str:
    """``payload`` as strict JSON (RFC 8259, which every parser reads): NaN and infinities become null, values
    JSON has no type for (paths, numpy scalars) become their ``str``."""
    return json.dumps(_finite(payload), indent=indent, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return _finite(value.item())
    return value


def write_json_atomic(target: str | Path, payload: Any) -> Path:
    """``payload`` as indented strict JSON (``json_text``), written atomically."""
    return atomic_write(target, json_text(payload))


def remove_stale_temporaries(target: str | Path) -> None:
    """Remove what killed writers of ``target`` left beside it (``atomic_path`` temporaries whose process is
    gone); for outputs a user names, such as an export, so an aborted run leaves no litter behind."""
    target = Path(target)
    for leftover in target.parent.glob(f"{TMP_PREFIX}*-{glob.escape(target.name)}"):
        pid = leftover.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
