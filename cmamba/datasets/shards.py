"""Training reader over a feature cache: a map-style PyTorch Dataset that streams Parquet row groups.

Only the small columns (clip_id, split, labels) are read up front; feature columns are decoded one row group at
a time, kept in a bounded LRU, and sliced per sample with numpy (no Python objects per value). Pair it with
``sampler()`` — row groups in random order, samples shuffled inside each — so an epoch decodes each row group
about once; ``train`` uses it automatically.

Items have the layout of ``FeatureDataset`` (``features``, ``present``, ``label``, ``id``), so ``collate`` and
the training functions consume them unchanged. Alignment (``native`` / ``word`` / ``clock``) is applied per item.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, Sampler

from cmamba.constants import ALIGN_MODES, MODALITIES
from cmamba.extractors.align import align
from cmamba.extractors.base import FeatureSequence
from cmamba.pipeline.cache.store import read_manifest

LABELS = ("label", "label_T", "label_A", "label_V")


def _lists(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (N+1,), flat values) of a list column; fixed-size inner lists are flattened to rows."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy()
    values = array.values
    if pa.types.is_fixed_size_list(values.type):
        width = values.type.list_size
        flat = values.values.to_numpy(zero_copy_only=False).reshape(-1, width) if width else np.zeros((len(values), 0))
        return offsets, flat
    return offsets, values.to_numpy(zero_copy_only=False)


class ShardDataset(Dataset):
    """Samples of one split of a cache.

    cache: the folder ``cmamba extract`` wrote; split: train / valid / test (None: every clip); align: native, word
    or clock (default: the manifest's); modalities: default every modality with features; max_len: keep at most
    this many steps per modality (an int or {modality: int}); label: which label column is the target
    (unlabelled clips are refused unless ``require_labels=False``, which gives them NaN).
    """

    def __init__(
        self,
        cache: str | Path,
        split: str | None = None,
        align: str | None = None,
        modalities: tuple[str, ...] | None = None,
        max_len: int | Mapping[str, int] | None = None,
        label: str = "label",
        clock_rate: float | None = None,
        cache_groups: int = 8,
        require_labels: bool = True,
    ):
        self.cache = Path(cache)
        self.manifest = read_manifest(cache)
        self.align = align or self.manifest.get("align", "native")
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align={self.align!r} is not one of {ALIGN_MODES}")
        if self.align != "native" and self.manifest.get("time_unit") != "seconds":
            raise ValueError(f"{cache} holds features without timestamps (imported); only align='native' works")
        dims = self.manifest["dims"]
        self.names = list(modalities or [m for m in MODALITIES if dims.get(m)])
        unknown = [m for m in self.names if not dims.get(m)]
        if unknown:
            raise ValueError(f"{cache} has no features for {unknown}; it has {[m for m in dims if dims[m]]}")
        if label not in LABELS:
            raise ValueError(f"label={label!r} is not one of {LABELS}")
        self.label, self.clock_rate = label, clock_rate or self.manifest.get("clock_rate", 10.0)
        self.max_len = {m: max_len for m in self.names} if isinstance(max_len, int) else dict(max_len or {})
        self._groups: OrderedDict[tuple[int, int], dict] = OrderedDict()
        self._cache_groups = cache_groups
        self._index(split, require_labels)

    def _index(self, split: str | None, require_labels: bool) -> None:
        self.files = [self.cache / s for s in self.manifest["shards"]]
        locations, ids, labels = [], [], []
        for f, path in enumerate(self.files):
            parquet = pq.ParquetFile(path)
            for g in range(parquet.num_row_groups):
                small = parquet.read_row_group(g, columns=["clip_id", "split", self.label]).to_pydict()
                for r, (clip_id, clip_split, value) in enumerate(zip(*small.values(), strict=True)):
                    if split is None or clip_split == split:
                        if value is None and require_labels:
                            raise ValueError(
                                f"{path}: clip {clip_id} has no {self.label}; choose another label, or pass "
                                "require_labels=False to read unlabelled clips (their label is NaN)"
                            )
                        locations.append((f, g, r))
                        ids.append(clip_id)
                        labels.append(np.nan if value is None else value)
        self.locations, self.ids = locations, ids
        self.labels = np.asarray(labels, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.locations)

    def decode_group(self, f: int, g: int) -> dict:
        """Row group ``g`` of shard ``f``, decoded (no caching; safe to call from several threads)."""
        scalars = [f"{m}_present" for m in self.names] + ["duration"]
        lists = [f"{m}_{c}" for m in self.names for c in ("values", "timestamps", "mask")] + ["word_start", "word_end"]
        table = pq.ParquetFile(self.files[f]).read_row_group(g, columns=lists + scalars)
        decoded = {c: _lists(table[c]) for c in lists}
        decoded.update({c: table[c].to_numpy(zero_copy_only=False) for c in scalars})
        return decoded

    def _group(self, f: int, g: int) -> dict:
        key = (f, g)
        if key in self._groups:
            self._groups.move_to_end(key)
            return self._groups[key]
        decoded = self._groups[key] = self.decode_group(f, g)
        if len(self._groups) > self._cache_groups:
            self._groups.popitem(last=False)
        return decoded

    def _sequence(self, group: dict, m: str, r: int) -> FeatureSequence:
        (offsets, values), stamps, mask = group[f"{m}_values"], group[f"{m}_timestamps"], group[f"{m}_mask"]
        a, b = offsets[r], offsets[r + 1]
        info = {}
        if m == "text":
            info["word_end"] = group["word_end"][1][group["word_end"][0][r] : group["word_end"][0][r + 1]]
        return FeatureSequence(values[a:b], stamps[1][a:b], mask[1][a:b], (), info)

    def __getitem__(self, i: int) -> dict:
        f, g, r = self.locations[i]
        group = self._group(f, g)
        present = {m: bool(group[f"{m}_present"][r]) for m in self.names}
        sequences = {m: self._sequence(group, m, r) for m in self.names if present[m]}
        if self.align != "native" and sequences:
            starts, ends = group["word_start"], group["word_end"]
            words = np.stack([starts[1][starts[0][r] : starts[0][r + 1]], ends[1][ends[0][r] : ends[0][r + 1]]], 1)
            duration = float(group["duration"][r])
            sequences = align(sequences, self.align, duration, words if len(words) else None, self.clock_rate)
        features = {}
        for m in self.names:
            seq = sequences.get(m)
            dim = self.manifest["dims"][m]
            x = np.zeros((0, dim), np.float32) if seq is None else np.asarray(seq.values, np.float32)
            features[m] = x[: self.max_len[m]] if m in self.max_len else x
        return {"features": features, "present": present, "label": float(self.labels[i]), "id": self.ids[i]}

    def dims(self) -> dict[str, int]:
        return {m: int(self.manifest["dims"][m]) for m in self.names}

    def schema(self) -> dict:
        return {
            "modalities": {m: {"dim": d} for m, d in self.dims().items()},
            "label_range": [float(np.nanmin(self.labels)), float(np.nanmax(self.labels))]
            if np.isfinite(self.labels).any()
            else None,
            # what ``score`` needs to extract new clips exactly like these: config, extractor versions, alignment
            "extraction": {
                "align": self.align,
                "clock_rate": self.clock_rate,
                "config": self.manifest.get("config"),
                "extractors": self.manifest.get("extractors", {}),
                "time_unit": self.manifest.get("time_unit"),
            },
        }

    def sampler(self, generator: torch.Generator | None = None) -> Sampler:
        return GroupShuffleSampler(self.locations, generator)


class GroupShuffleSampler(Sampler):
    """Row groups in random order, samples shuffled within each: random enough, and each group decoded once."""

    def __init__(self, locations: list[tuple[int, int, int]], generator: torch.Generator | None = None):
        self.groups: dict[tuple[int, int], list[int]] = {}
        for i, (f, g, _) in enumerate(locations):
            self.groups.setdefault((f, g), []).append(i)
        self.generator, self.count = generator, len(locations)

    def __iter__(self) -> Iterator[int]:
        keys = list(self.groups)
        for k in torch.randperm(len(keys), generator=self.generator).tolist():
            members = self.groups[keys[k]]
            yield from (members[j] for j in torch.randperm(len(members), generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.count
