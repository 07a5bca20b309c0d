"""The shard format: one Parquet row per clip, plain columns that pandas, DuckDB and HF ``datasets`` read as is.

Columns (``shard_schema``): clip_id, video_id, split, label, label_T, label_A, label_V, annotation, duration,
source, digest; text_raw, words, word_start, word_end, word_timing, token_ids, token_mask, token_type_ids; and per
modality ``m`` (text, audio, video): ``m_values`` (list of fixed-size float32 rows, (T, F)), ``m_timestamps``
(T,) seconds, ``m_mask`` (T,) observed rows, ``m_length`` T, ``m_present``, ``m_absent`` (why the clip lacks it)
and ``m_repaired`` (non-finite values replaced at write time). Sequences are stored at their native rates; the
reader aligns them (``word`` / ``clock``) on the fly, so one cache serves every alignment.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmamba.constants import MODALITIES
from cmamba.extractors.base import FeatureSequence
from cmamba.io import atomic_path

SCHEMA_VERSION = 1
ROW_GROUP = 64  # clips per Parquet row group: the unit the training reader decodes at a time
META_COLUMNS = {
    "clip_id": pa.string(),
    "video_id": pa.string(),
    "split": pa.string(),
    "label": pa.float64(),
    "label_T": pa.float64(),
    "label_A": pa.float64(),
    "label_V": pa.float64(),
    "annotation": pa.string(),
    "duration": pa.float64(),
    "start": pa.float64(),  # seconds in the source file (a whole-file clip: 0 and its duration)
    "end": pa.float64(),
    "source": pa.string(),
    "digest": pa.string(),
    "text_raw": pa.string(),
    "words": pa.list_(pa.string()),
    "word_start": pa.list_(pa.float64()),
    "word_end": pa.list_(pa.float64()),
    "word_timing": pa.string(),
    "token_ids": pa.list_(pa.int64()),
    "token_mask": pa.list_(pa.int8()),
    "token_type_ids": pa.list_(pa.int8()),
}


def _row_type(width: int) -> pa.DataType:
    """Rows of ``width`` features; a modality the cache does not extract (width 0) keeps its columns, empty (Arrow
    has no fixed-size list of size 0)."""
    return pa.list_(pa.float32(), width) if width > 0 else pa.list_(pa.float32())


def shard_schema(dims: Mapping[str, int]) -> pa.Schema:
    """The Arrow schema of a cache whose modality ``m`` has ``dims[m]`` features per row."""
    fields = [pa.field(name, kind) for name, kind in META_COLUMNS.items()]
    for m in MODALITIES:
        fields += [
            pa.field(f"{m}_values", pa.list_(_row_type(int(dims.get(m, 0))))),
            pa.field(f"{m}_timestamps", pa.list_(pa.float64())),
            pa.field(f"{m}_mask", pa.list_(pa.bool_())),
            pa.field(f"{m}_length", pa.int32()),
            pa.field(f"{m}_present", pa.bool_()),
            pa.field(f"{m}_absent", pa.string()),
            pa.field(f"{m}_repaired", pa.int32()),
        ]
    return pa.schema(fields, metadata={"cmamba_schema_version": str(SCHEMA_VERSION)})


def modality_columns(modality: str, seq: FeatureSequence | None, absent: str | None) -> dict[str, Any]:
    """The ``m_*`` cells of one clip (an absent modality has empty lists and its reason)."""
    if seq is None:
        return {
            f"{modality}_values": [],
            f"{modality}_timestamps": [],
            f"{modality}_mask": [],
            f"{modality}_length": 0,
            f"{modality}_present": False,
            f"{modality}_absent": absent or "not extracted",
            f"{modality}_repaired": 0,
        }
    return {
        f"{modality}_values": np.asarray(seq.values, dtype=np.float32),
        f"{modality}_timestamps": np.asarray(seq.timestamps, dtype=np.float64),
        f"{modality}_mask": np.asarray(seq.mask, dtype=bool),
        f"{modality}_length": seq.length,
        f"{modality}_present": True,
        f"{modality}_absent": None,
        f"{modality}_repaired": int(seq.info.get("non_finite_replaced", 0)),
    }


def _column(values: list, kind: pa.DataType) -> pa.Array:
    if pa.types.is_list(kind) and pa.types.is_fixed_size_list(kind.value_type):
        width = kind.value_type.list_size
        offsets = np.cumsum([0] + [len(v) for v in values]).astype(np.int32)
        flat = np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in values] or [np.zeros(0, np.float32)])
        rows = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)
        return pa.ListArray.from_arrays(pa.array(offsets), rows)
    return pa.array([v.tolist() if isinstance(v, np.ndarray) else v for v in values], type=kind)


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts keyed by column name; missing keys are null) → an Arrow table of ``schema``."""
    return pa.Table.from_arrays([_column([r.get(f.name) for r in rows], f.type) for f in schema], schema=schema)


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that readers see the old file or the whole new one, never a partial one."""
    # Dictionary encoding only pays for repeated strings; on float features it costs read time and space.
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP, use_dictionary=strings)


def row_sequences(row: Mapping[str, Any], modalities: tuple[str, ...] = MODALITIES) -> dict[str, FeatureSequence]:
    """The stored sequences of one row (present modalities only); text rows carry their word ends for alignment."""
    out = {}
    for m in modalities:
        if not row.get(f"{m}_present"):
            continue
        values = np.asarray(row[f"{m}_values"], dtype=np.float32)
        values = np.stack(values) if values.dtype == object else values
        T = int(row[f"{m}_length"])
        values = values.reshape(T, -1)
        info = (
            {"word_end": np.asarray(row["word_end"], dtype=np.float64)} if m == "text" and row.get("word_end") else {}
        )
        names = tuple(f"{m}_{i}" for i in range(values.shape[1]))
        out[m] = FeatureSequence(
            values, np.asarray(row[f"{m}_timestamps"], np.float64), np.asarray(row[f"{m}_mask"], bool), names, info
        )
    return out


def iter_shard_rows(paths: list[Path], columns: list[str] | None = None, batch_size: int = 256) -> Iterator[dict]:
    """Rows of the given shards in order, streamed a record batch at a time."""
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()
