"""A cmamba feature cache out to MMSA's feature pickle (read by MMSA's own ``MMDataLoader``) and to the
MulT / MultiBench layout (left-padded). The MMSA layout is described in ``importer``.

Export decisions:
- Sequences are zero-padded (MMSA on the right, MulT / MultiBench on the left) to the longest clip over all
  splits, or cut to ``max_len[key]`` rows, keeping the first ones (as MMSA-FET does); lengths are clipped to it.
- ``text_bert`` is float32 (MMSA casts it to float32 anyway; ids below 2**24 are exact) and written only when
  the cache holds token ids. Its axis is tokens, not the rows of ``text``: after ``word`` / ``clock`` alignment
  MMSA models that read aligned lengths from its mask (SELF_MM, MMIM) see token counts, not row counts.
- ``regression_labels_T/_A/_V`` and ``annotations`` are written only when every exported clip has them (as
  MMSA-FET drops a NaN unimodal label), never filled in from the multimodal label.
- Pickles use protocol 4 and numpy 1's ``numpy.core`` names so that numpy 1.x (MMSA's usual stack) and 2.x both
  load them.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray

from cmamba.constants import ALIGN_MODES, CLIP_ID_SEPARATOR, MODALITIES, SPLITS
from cmamba.datasets.mmsa.importer import MMSA_KEY, UNIMODAL
from cmamba.errors import MMSAFormatError
from cmamba.extractors.align import align
from cmamba.io import atomic_path, remove_stale_temporaries
from cmamba.pipeline.cache.schema import iter_shard_rows, row_sequences
from cmamba.pipeline.cache.store import read_manifest, shard_paths


@dataclass
class _Clip:
    row: dict[str, Any]  # the cache row without its sequence columns
    arrays: dict[str, np.ndarray]  # text / audio / video (T, F) after alignment, text_bert (T_tok, 3)


def _read_clips(cache: Path, mode: str, clock_rate: float) -> tuple[dict[str, Any], dict[str, list[_Clip]]]:
    """The cache's manifest and its clips per split, aligned by ``mode``; refuses what no MMSA split can hold."""
    if mode not in ALIGN_MODES:
        raise ValueError(f"alignment mode {mode!r} is not one of {ALIGN_MODES}")
    manifest = read_manifest(cache)
    if manifest.get("time_unit") == "step" and mode != "native":
        raise MMSAFormatError(
            f"{cache} was imported from an MMSA pickle: its rows are steps, not seconds, so it cannot be aligned "
            f"by {mode!r}; export it with align='native'"
        )
    absent = [MMSA_KEY[m] for m in MODALITIES if not manifest["dims"].get(m)]
    if absent:
        raise MMSAFormatError(f"{cache} has no {', '.join(absent)} features; MMSA and MulT need text, audio and vision")
    clips: dict[str, list[_Clip]] = {s: [] for s in SPLITS}
    for row in iter_shard_rows(shard_paths(cache)):
        where = f"{cache}: clip {row['clip_id']!r}"
        if row["split"] not in clips:
            raise MMSAFormatError(
                f"{where} has split {row['split']!r}; exports need train / valid / test for every clip"
            )
        if row["label"] is None:
            raise MMSAFormatError(f"{where} has no label; MMSA and MulT train on every exported clip's label")
        seqs = row_sequences(row)
        if mode != "native":
            if mode == "clock" and row["duration"] is None:
                raise MMSAFormatError(f"{where} has no duration to lay a clock grid over")
            words = np.stack([row["word_start"], row["word_end"]], 1) if row["word_start"] else None
            try:
                seqs = align(seqs, mode, row["duration"] or 0.0, words, clock_rate)
            except ValueError as exc:
                raise MMSAFormatError(f"{where}: {exc}") from exc
        arrays = {m: s.values for m, s in seqs.items()}
        if row.get("token_ids"):
            arrays["text_bert"] = np.array([row["token_ids"], row["token_mask"], row["token_type_ids"]], np.float32).T
        meta = {k: v for k, v in row.items() if not k.endswith(("_values", "_timestamps", "_mask"))}
        clips[row["split"]].append(_Clip(meta, arrays))
    return manifest, clips


def _seq_lens(
    clips: dict[str, list[_Clip]], keys: tuple[str, ...], max_len: Mapping[str, int] | None, allowed: tuple[str, ...]
) -> dict[str, int]:
    """Padded length per key: ``max_len[key]`` or the longest clip of any split (at least 1 row, so that no
    model meets a zero-length axis)."""
    limits = {("video" if k == "vision" else k): int(v) for k, v in (max_len or {}).items()}
    if set(limits) - set(allowed) or any(v < 1 for v in limits.values()):
        raise ValueError(f"max_len takes positive lengths for {allowed}, got {dict(max_len or {})}")
    every = [c for split in clips.values() for c in split]
    return {k: limits.get(k) or max([1] + [len(c.arrays[k]) for c in every if k in c.arrays]) for k in keys}


def _pad(clips: list[_Clip], key: str, length: int, dim: int, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, length, dim) float32 of each clip's first ``length`` rows of ``key``, zero-padded on the right (or
    left), and the (N,) int64 row counts."""
    out = np.zeros((len(clips), length, dim), np.float32)
    counts = np.zeros(len(clips), np.int64)
    for i, clip in enumerate(clips):
        rows = clip.arrays.get(key, np.zeros((0, dim), np.float32))[:length]
        counts[i] = len(rows)
        if left:
            out[i, length - len(rows) :] = rows
        else:
            out[i, : len(rows)] = rows
    return out, counts


class _Numpy1Pickler(pickle._Pickler):
    """Writes the array rebuilders under numpy 1's ``numpy.core`` names, which numpy 2 still loads (and numpy 1
    cannot load numpy 2's ``numpy._core``). The pure-Python pickler is the one whose global naming can be
    overridden; arrays still go out as single large byte strings."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is not multiarray._reconstruct:  # ndarray and dtype have the same names in numpy 1 and 2
            return super().save_global(obj, name)
        self.save("numpy.core.multiarray")
        self.save("_reconstruct")
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def _write(payload: dict[str, Any], out_pkl: str | Path) -> None:
    remove_stale_temporaries(out_pkl)  # what a killed export of the same file left
    with atomic_path(out_pkl) as tmp, open(tmp, "wb") as handle:
        _Numpy1Pickler(handle, protocol=4).dump(payload)


def _provenance(cache: Path, manifest: dict[str, Any], fmt: str, mode: str, seq_lens: dict[str, int]) -> dict:
    keep = ("source", "time_unit", "align", "extractors", "dims", "versions", "created")
    return {
        "cmamba": {
            "format": fmt,
            "cache": str(cache.resolve()),
            "cache_manifest": {k: manifest[k] for k in keep if k in manifest},
            "align": mode,
            "seq_lens": seq_lens,
        }
    }


def export_mmsa(
    cache: str | Path,
    out_pkl: str | Path,
    align: str = "native",
    max_len: Mapping[str, int] | None = None,
    clock_rate: float = 10.0,
) -> dict[str, Any]:
    """Write ``cache`` as an MMSA feature pickle that MMSA's ``MMDataLoader`` reads unchanged.

    Per split: id, raw_text (N,) str; text (N, L_t, D_t), audio (N, L_a, D_a), vision (N, L_v, D_v) float32
    right-padded; audio_lengths, vision_lengths (N,) int64; regression_labels (N,) float32; text_bert (N, 3, L_tok)
    float32 when the cache has tokens; regression_labels_T/_A/_V and annotations when every clip has them.
    ``align``: native / word / clock (``clock_rate`` Hz). ``max_len``: rows per key (text, text_bert, audio,
    video or vision), else the longest clip. A top-level ``config`` records the provenance, which is returned.
    """
    cache = Path(cache)
    manifest, clips = _read_clips(cache, align, clock_rate)
    every = [c for split in clips.values() for c in split]
    keys = MODALITIES + (("text_bert",) if any("text_bert" in c.arrays for c in every) else ())
    seq_lens = _seq_lens(clips, keys, max_len, (*MODALITIES, "vision", "text_bert"))
    dims = {**{m: int(manifest["dims"][m]) for m in MODALITIES}, "text_bert": 3}
    unimodal = [u for u in UNIMODAL if every and all(c.row.get(f"label_{u}") is not None for c in every)]
    annotated = bool(every) and all(c.row.get("annotation") is not None for c in every)
    payload: dict[str, Any] = {}
    for name, split in clips.items():
        part = {
            "id": np.array([c.row["clip_id"] for c in split], dtype=str),
            "raw_text": np.array([c.row.get("text_raw") or "" for c in split], dtype=str),
            "regression_labels": np.array([c.row["label"] for c in split], np.float32),
        }
        for key in keys:
            values, counts = _pad(split, key, seq_lens[key], dims[key])
            if key == "text_bert":
                part["text_bert"] = values.transpose(0, 2, 1)  # (N, 3, L_tok), MMSA's row order
            else:
                part[MMSA_KEY[key]] = values
            if key in MODALITIES:  # MMSA reads audio/vision_lengths; text_lengths is for re-import
                part[f"{MMSA_KEY[key]}_lengths"] = counts
        for u in unimodal:
            part[f"regression_labels_{u}"] = np.array([c.row[f"label_{u}"] for c in split], np.float32)
        if annotated:
            part["annotations"] = np.array([c.row["annotation"] for c in split], dtype=str)
        payload[name] = part
    provenance = _provenance(cache, manifest, "mmsa-pkl", align, seq_lens)
    provenance["cmamba"]["clips"] = {name: len(split) for name, split in clips.items()}
    provenance["cmamba"]["unimodal_labels"] = unimodal
    payload["config"] = provenance
    _write(payload, out_pkl)
    return provenance


def export_mult(
    cache: str | Path,
    out_pkl: str | Path,
    align: str = "native",
    max_len: Mapping[str, int] | None = None,
    clock_rate: float = 10.0,
) -> dict[str, Any]:
    """Write ``cache`` in the MulT / MultiBench layout (``{split}_data.pkl`` / ``_noalign.pkl`` of MulT).

    Per split: text (N, L_t, D_t), audio (N, L_a, D_a), vision (N, L_v, D_v) float32 LEFT-padded (MultiBench
    finds the start as the first non-zero row, so a clip without a modality has none there); labels (N, 1, 1)
    float32; id (N, 3) UTF-8 bytes (video_id, clip part, full clip id), since MulT reads three fields and decodes
    them for MOSI. ``align`` / ``max_len`` / ``clock_rate`` as in ``export_mmsa``. Returns the provenance.
    """
    cache = Path(cache)
    manifest, clips = _read_clips(cache, align, clock_rate)
    seq_lens = _seq_lens(clips, MODALITIES, max_len, (*MODALITIES, "vision"))
    payload: dict[str, Any] = {}
    for name, split in clips.items():
        part = {MMSA_KEY[m]: _pad(split, m, seq_lens[m], int(manifest["dims"][m]), left=True)[0] for m in MODALITIES}
        part["labels"] = np.array([c.row["label"] for c in split], np.float32).reshape(-1, 1, 1)
        ids = [c.row["clip_id"] for c in split]
        fields = [
            (c.row.get("video_id") or i, i.split(CLIP_ID_SEPARATOR, 1)[-1], i) for c, i in zip(split, ids, strict=True)
        ]
        part["id"] = np.array([[f.encode("utf-8") for f in row] for row in fields], dtype=bytes).reshape(-1, 3)
        payload[name] = part
    provenance = _provenance(cache, manifest, "mult-pkl", align, seq_lens)
    provenance["cmamba"]["clips"] = {name: len(split) for name, split in clips.items()}
    payload["config"] = provenance
    _write(payload, out_pkl)
    return provenance
