"""MMSA feature pickles into a cmamba feature cache, read with the restricted unpickler (data only).

MMSA pickle: ``{split: {key: array}}`` for split in train / valid / test, with

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmamba.constants import CLIP_ID_SEPARATOR, MODALITIES, SPLITS
from cmamba.datasets.mmsa.safe_pickle import safe_load_pickle
from cmamba.errors import MMSAFormatError
from cmamba.extractors.base import FeatureSequence
from cmamba.io import sha256_file
from cmamba.pipeline.cache.schema import modality_columns
from cmamba.pipeline.cache.store import cache_lock, claim_cache, finish_cache

MMSA_KEY = {"text": "text", "audio": "audio", "video": "vision"}  # cmamba modality → MMSA key
REQUIRED = ("id", "text", "audio", "vision", "regression_labels")
OPTIONAL = ("raw_text", "text_bert", "text_lengths", "audio_lengths", "vision_lengths", "annotations")
UNIMODAL = ("T", "A", "V")
KNOWN = (*REQUIRED, *OPTIONAL, *(f"regression_labels_{u}" for u in UNIMODAL))


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
            "video_id": clip_id.split(CLIP_ID_SEPARATOR, 1)[0],
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


def import_mmsa(
    pkl: str | Path, out_cache: str | Path, clips_per_shard: int = 1000, overwrite: bool = False
) -> dict[str, Any]:
    """Turn an MMSA feature pickle (aligned_50, unaligned_50, unaligned_39, SIMS v2 style) into a feature cache.

    Each clip becomes one row: ``clip_id`` the MMSA id, ``video_id`` its part before ``$_$``, its split, labels,
    ``text_raw``, tokens from ``text_bert`` and, per modality (``vision`` → ``video``), the first ``length`` rows
    (T, D) with step-index timestamps. The pickle is read with ``safe_load_pickle``. Returns the manifest. A
    cache of another kind or source in ``out_cache`` is refused unless ``overwrite``.
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
        claim_cache(out_cache, {"time_unit": "step", "source": manifest["source"]}, f"the import of {pkl}", overwrite)
        return finish_cache(out_cache, rows, dims, names, [], manifest, clips_per_shard)
