"""MMSA feature pickles into and out of a cmamba feature cache, and the MulT / MultiBench pickle layout.

MMSA pickle (docs/ecosystem.md §2.1): ``{split: {key: array}}`` for split in train / valid / test, with

    id (N,) str "<video_id>$_$<clip_id>"   raw_text (N,) str           annotations (N,) str (optional)
    text (N, L_t, D_t) float               text_bert (N, 3, L_t) ids / attention mask / token types (optional)
    audio (N, L_a, D_a) float              audio_lengths (N,) int   (unaligned pickles only)
    vision (N, L_v, D_v) float             vision_lengths (N,) int  (unaligned pickles only)
    regression_labels (N,) float           regression_labels_T / _A / _V (N,) float (SIMS family)

Import decisions:
- Kept rows per clip: ``audio_lengths`` / ``vision_lengths`` when present. The text length is the attention-mask
  sum of ``text_bert`` (all of L_t without it): MMSA's models (SELF_MM, MMIM) take it so. An *aligned* pickle
  (neither lengths key) gives audio and vision the text length too, as those models do when
  ``need_data_aligned`` is set and MMSA's data_loader does for missing-modality runs; this assumes right padding.
  ``manifest["mmsa"]["nonzero_rows_dropped"]`` counts clips whose dropped rows were not all zero, which flags a
  pickle padded some other way.
- Non-finite values (COVAREP's -inf; MMSA zero-fills only audio -inf, at load time) become 0 in every modality,
  counted per clip in ``m_repaired``. A modality of length 0 is stored as absent.
- MMSA features carry no times: row k gets timestamp k and the manifest says ``"time_unit": "step"``, so such a
  cache exports only unaligned (``native``).

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

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray

from cmamba.datasets.safe_pickle import safe_load_pickle
from cmamba.extractors.align import ALIGN_MODES, align
from cmamba.extractors.base import FeatureSequence
from cmamba.models import sha256_file
from cmamba.pipeline.cache import cache_lock, finish_cache, read_manifest, shard_paths
from cmamba.pipeline.shards import MODALITIES, iter_shard_rows, modality_columns, row_sequences

SPLITS = ("train", "valid", "test")
MMSA_KEY = {"text": "text", "audio": "audio", "video": "vision"}  # cmamba modality → MMSA key
REQUIRED = ("id", "text", "audio", "vision", "regression_labels")
OPTIONAL = ("raw_text", "text_bert", "text_lengths", "audio_lengths", "vision_lengths", "annotations")
UNIMODAL = ("T", "A", "V")
KNOWN = (*REQUIRED, *OPTIONAL, *(f"regression_labels_{u}" for u in UNIMODAL))
SEPARATOR = "$_$"


class MMSAFormatError(ValueError):
    """A pickle or cache that does not fit the MMSA / MulT layout; the message names the split and key."""


# --- import -------------------------------------------------------------------------------------------------


def _string(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _feature_names(modality: str, dim: int) -> tuple[str, ...]:
    """MMSA features are anonymous: ``video_0 ... video_{dim-1}``, the names ``row_sequences`` also gives them."""
    return tuple(f"{modality}_{j}" for j in range(dim))


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass
class _Split:
    """One split of a pickle, checked: arrays with N clips along axis 0 and the rows to keep per clip."""

    pkl: Path
    name: str
    part: dict[str, Any]

    def fail(self, key: str, problem: str) -> MMSAFormatError:
        return MMSAFormatError(f"{self.pkl}: split {self.name!r}, key {key!r}: {problem}")

    def array(self, key: str, ndim: int, n: int | None = None) -> np.ndarray:
        value = np.asarray(self.part[key])
        if ndim == 1:
            value = value.reshape(-1) if value.ndim == 2 and value.shape[1:] == (1,) else value
        if value.ndim != ndim:
            raise self.fail(key, f"shape {value.shape}, expected {ndim} dimensions")
        if n is not None and value.shape[0] != n:
            raise self.fail(key, f"{value.shape[0]} entries but the split has {n} ids")
        return value

    def token_counts(self, n: int) -> np.ndarray:
        """(N,) tokens per clip: the attention-mask sum of ``text_bert``."""
        tokens = self.array("text_bert", 3, n)
        if tokens.shape[1] != 3:
            raise self.fail("text_bert", f"shape {tokens.shape}, expected (N, 3, L): ids, mask, token types")
        return np.rint(tokens[:, 1, :].sum(1)).astype(np.int64)

    def lengths(self, n: int, rows: dict[str, int]) -> tuple[dict[str, np.ndarray], bool]:
        """(N,) rows to keep per modality, and whether the pickle is aligned (no audio/vision lengths)."""
        if "text_lengths" in self.part:  # cmamba's exports: text rows are words, not the text_bert tokens
            text = self.array("text_lengths", 1, n).astype(np.int64)
        elif "text_bert" in self.part:
            text = self.token_counts(n)
        else:
            text = np.full(n, rows["text"], np.int64)
        has = ["audio_lengths" in self.part, "vision_lengths" in self.part]
        if has[0] != has[1]:
            present, absent = ("audio_lengths", "vision_lengths") if has[0] else ("vision_lengths", "audio_lengths")
            raise self.fail(absent, f"missing while {present!r} is present (unaligned pickles carry both)")
        aligned = not has[0]
        lengths = {"text": text}
        for m in ("audio", "video"):
            key = f"{MMSA_KEY[m]}_lengths"
            lengths[m] = np.minimum(text, rows[m]) if aligned else self.array(key, 1, n).astype(np.int64)
        for m, length in lengths.items():
            key = "text_bert" if m == "text" and "text_lengths" not in self.part else f"{MMSA_KEY[m]}_lengths"
            if length.size and (length.min() < 0 or length.max() > rows[m]):
                raise self.fail(
                    key, f"lengths span [{length.min()}, {length.max()}] but {MMSA_KEY[m]} has {rows[m]} rows"
                )
        return lengths, aligned


def _import_split(split: _Split) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The cache rows of one split and what the manifest records about it."""
    missing = [k for k in REQUIRED if k not in split.part]
    if missing:
        raise split.fail(missing[0], "missing (required: " + ", ".join(REQUIRED) + ")")
    ids = [_string(v) for v in split.array("id", 1)]
    empty = [i for i, clip_id in enumerate(ids) if not clip_id]
    if empty:
        raise split.fail("id", f"entry {empty[0]} is empty")
    n = len(ids)
    feats = {}
    for m in MODALITIES:
        split.array(MMSA_KEY[m], 3, n)
        # a float32 copy we may repair in place; popping frees a float64 original as soon as it is converted
        feats[m] = np.array(split.part.pop(MMSA_KEY[m]), dtype=np.float32)
    lengths, aligned = split.lengths(n, {m: feats[m].shape[1] for m in MODALITIES})
    names = {m: _feature_names(m, feats[m].shape[2]) for m in MODALITIES}
    labels = split.array("regression_labels", 1, n).astype(np.float64)
    unimodal = {
        u: split.array(f"regression_labels_{u}", 1, n) for u in UNIMODAL if f"regression_labels_{u}" in split.part
    }
    raw = split.array("raw_text", 1, n) if "raw_text" in split.part else [None] * n
    notes = split.array("annotations", 1, n) if "annotations" in split.part else [None] * n
    tokens = np.rint(split.array("text_bert", 3, n)).astype(np.int64) if "text_bert" in split.part else None
    token_counts = split.token_counts(n) if tokens is not None else None
    dropped = {}
    for m in MODALITIES:
        beyond = np.arange(feats[m].shape[1])[None, :] >= lengths[m][:, None]  # (N, L) padding rows
        dropped[m] = int(((feats[m] != 0).any(2) & beyond).any(1).sum())
    rows = []
    for i, clip_id in enumerate(ids):
        row = {
            "clip_id": clip_id,
            "video_id": clip_id.split(SEPARATOR, 1)[0],
            "split": split.name,
            "label": _finite_or_none(labels[i]),
            **{f"label_{u}": _finite_or_none(float(v[i])) for u, v in unimodal.items()},
            "annotation": _string(notes[i]),
            "text_raw": _string(raw[i]),
            "words": [],
            "word_start": [],
            "word_end": [],
        }
        for m in MODALITIES:
            T = int(lengths[m][i])
            if T == 0:
                row.update(modality_columns(m, None, "length 0 in the MMSA pickle"))
                continue
            values = feats[m][i, :T]  # a view: the repair below writes into feats
            bad = ~np.isfinite(values)
            values[bad] = 0.0
            info = {"non_finite_replaced": int(bad.sum())}
            seq = FeatureSequence(values, np.arange(T, dtype=np.float64), np.ones(T, bool), names[m], info)
            row.update(modality_columns(m, seq, None))
        if tokens is not None:
            kept = tokens[i, :, : token_counts[i]]
            row.update(token_ids=kept[0], token_mask=kept[1].astype(np.int8), token_type_ids=kept[2].astype(np.int8))
        rows.append(row)
    summary = {
        "aligned": aligned,
        "seq_lens": {m: int(feats[m].shape[1]) for m in MODALITIES},
        "dims": {m: int(feats[m].shape[2]) for m in MODALITIES},
        "unimodal_labels": sorted(unimodal),
        "nonzero_rows_dropped": dropped,
        "ignored_keys": sorted(k for k in split.part if k not in KNOWN),
    }
    return rows, summary


def import_mmsa(pkl: str | Path, out_cache: str | Path, clips_per_shard: int = 1000) -> dict[str, Any]:
    """Turn an MMSA feature pickle (aligned_50, unaligned_50, unaligned_39, SIMS v2 style) into a feature cache.

    Each clip becomes one row: ``clip_id`` the MMSA id, ``video_id`` its part before ``$_$``, its split, labels,
    ``text_raw``, tokens from ``text_bert`` and, per modality (``vision`` → ``video``), the first ``length`` rows
    (T, D) with step-index timestamps. The pickle is read with ``safe_load_pickle``. Returns the manifest.
    """
    pkl, out_cache = Path(pkl), Path(out_cache)
    data = safe_load_pickle(pkl)
    splits = [s for s in SPLITS if isinstance(data, dict) and s in data]
    if not splits:
        raise MMSAFormatError(f"{pkl} is not an MMSA feature pickle: expected a dict with train / valid / test")
    dims, rows, info = None, [], {}
    for name in splits:
        if not isinstance(data[name], dict):
            raise MMSAFormatError(f"{pkl}: split {name!r} is a {type(data[name]).__name__}, expected a dict")
        split_rows, info[name] = _import_split(_Split(pkl, name, data[name]))
        if dims is not None and info[name]["dims"] != dims:
            raise MMSAFormatError(f"{pkl}: split {name!r} has feature dims {info[name]['dims']}, {splits[0]!r} {dims}")
        dims = info[name]["dims"]
        rows += split_rows
    aligned = {name: s["aligned"] for name, s in info.items()}
    if len(set(aligned.values())) > 1:
        raise MMSAFormatError(f"{pkl}: some splits carry audio/vision lengths and some do not: {aligned}")
    seen = set()
    for row in rows:
        if row["clip_id"] in seen:
            raise MMSAFormatError(f"{pkl}: the id {row['clip_id']!r} occurs twice")
        seen.add(row["clip_id"])
    is_aligned = next(iter(aligned.values()))
    config = data.get("config")
    try:
        json.dumps(config)
    except (TypeError, ValueError):
        config = f"present but not JSON-serialisable ({type(config).__name__})"
    manifest = {
        "source": {"kind": "mmsa-pickle", "path": str(pkl.resolve()), "sha256": sha256_file(pkl)},
        "time_unit": "step",
        "align": "word" if is_aligned else "native",
        "aligned": is_aligned,
        "extractors": {},
        "note": "features imported from an MMSA pickle: the extractors that made them are unknown and timestamps "
        "are row indices (time_unit 'step')",
        "mmsa": {
            "splits": {name: {k: v for k, v in s.items() if k not in ("aligned", "dims")} for name, s in info.items()},
            "ignored_top_level_keys": sorted(str(k) for k in data if k not in (*SPLITS, "config")),
            "config": config,
            "repaired": {m: sum(r[f"{m}_repaired"] for r in rows) for m in MODALITIES},
        },
    }
    names = {m: list(_feature_names(m, dims[m])) for m in MODALITIES}
    with cache_lock(out_cache):
        return finish_cache(out_cache, rows, dims, names, [], manifest, clips_per_shard)


# --- export -------------------------------------------------------------------------------------------------


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
    out = Path(out_pkl)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    with open(tmp, "wb") as handle:
        _Numpy1Pickler(handle, protocol=4).dump(payload)
    os.replace(tmp, out)


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
    keys = ("text", "audio", "video") + (("text_bert",) if any("text_bert" in c.arrays for c in every) else ())
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
            if key in ("text", "audio", "video"):  # MMSA reads audio/vision_lengths; text_lengths is for re-import
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
        fields = [(c.row.get("video_id") or i, i.split(SEPARATOR, 1)[-1], i) for c, i in zip(split, ids, strict=True)]
        part["id"] = np.array([[f.encode("utf-8") for f in row] for row in fields], dtype=bytes).reshape(-1, 3)
        payload[name] = part
    provenance = _provenance(cache, manifest, "mult-pkl", align, seq_lens)
    provenance["cmamba"]["clips"] = {name: len(split) for name, split in clips.items()}
    payload["config"] = provenance
    _write(payload, out_pkl)
    return provenance
