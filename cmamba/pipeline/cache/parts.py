"""The resumable per clip × modality cache: one ``.npz`` (no pickles) per extraction result, written atomically.

A part's key hashes the media's content digest, the modality, its extractor's name, version and config, and
what else decides the output (the label text or sidecar transcript for text), so a re-run skips finished work
and a changed config re-extracts only the modalities it affects. Errors are never cached: they are retried.
Stores the extraction result type of ``cmamba.pipeline.clip`` (``ModalityResult``); computes nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from cmamba.extractors.base import FeatureSequence
from cmamba.extractors.transcripts import Transcript
from cmamba.io import atomic_path
from cmamba.pipeline.clip import ModalityResult


def part_key(**fields: Any) -> str:
    """A stable hash of JSON-able ``fields``."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def part_path(cache: Path, modality: str, key: str) -> Path:
    return cache / "parts" / modality / key[:2] / f"{key}.npz"


def save_part(path: Path, result: ModalityResult) -> None:
    """Store a successful (or absent) result; arrays as arrays, everything else as one JSON string."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"modality": result.modality, "absent": result.absent}
    if result.sequence is not None:
        seq = result.sequence
        arrays.update(values=seq.values, timestamps=seq.timestamps, mask=seq.mask)
        meta["names"], meta["info"] = list(seq.names), {}
        for key, value in seq.info.items():
            if isinstance(value, np.ndarray):
                arrays[f"info.{key}"] = value
            else:
                meta["info"][key] = value
    if result.transcript is not None:
        t = result.transcript
        meta["transcript"] = {k: getattr(t, k) for k in ("words", "source", "timing", "adjusted", "interpolated")}
        if t.times is not None:
            arrays["transcript_times"] = np.asarray(t.times)
    arrays["meta"] = np.array(json.dumps(meta, default=_json_scalar))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a part")


def load_part(path: Path) -> ModalityResult:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        result = ModalityResult(meta["modality"], absent=meta["absent"])
        if "values" in data:
            info = {**meta["info"], **{k[5:]: data[k] for k in data.files if k.startswith("info.")}}
            result.sequence = FeatureSequence(
                data["values"], data["timestamps"], data["mask"], tuple(meta["names"]), info
            )
        if "transcript" in meta:
            t = meta["transcript"]
            times = data["transcript_times"] if "transcript_times" in data else None
            result.transcript = Transcript(tuple(t["words"]), times, t["source"], t["timing"], t["adjusted"],
                                           t["interpolated"])  # fmt: skip
    return result
