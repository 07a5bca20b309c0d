"""A training view of a cache: one (split, alignment, clock rate, max_len, label) materialised once into
memory-mapped arrays, so later epochs and later runs read at memory speed instead of decoding Parquet.

``training_view(cache, split="train", align="native", max_len=None, label="label")`` builds the view the first
time (streaming ``ShardDataset``'s samples, so its values are exactly the reader's) into
``cache/views/<key>/`` and maps it afterwards:

    <modality>.f32 / .f16   the rows of every sample, concatenated (rows, dim) float32 (or float16 with
                            ``dtype="float16"``: half the disk, the page cache and the read time), ``np.memmap``
    <modality>_offsets.npy  (N + 1,) int64: sample i owns rows [offsets[i], offsets[i + 1])
    present.npy             (N, M) bool;  labels.npy (N,) float32;  ids.json
    view.json               the key's fields, shapes and sizes; written last, so a view without it (or whose
                            files do not match it) is incomplete and is built again, never read

Processes asking for the same view at once (the ranks of a DDP run) take turns on ``views/<key>.lock``: one builds,
the others map what it built.

The key hashes the cache's manifest file and the view's parameters: a re-extracted or re-imported cache (a new
manifest) never serves a stale view. ``view.loader(batch_size, shuffle, seed)`` gathers each batch with one
vectorised index per modality (no per-sample Python work) into the dict ``collate`` makes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import shutil
import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cmamba.constants import VIEW_DTYPES
from cmamba.errors import CacheError
from cmamba.io import atomic_path, sha256_file, write_json_atomic
from cmamba.pipeline.cache.store import MANIFEST

VIEW_VERSION = 1  # bump when the layout changes: old views are then rebuilt
SUFFIXES = {"float32": ".f32", "float16": ".f16"}  # storage dtype (VIEW_DTYPES) → the values files' suffix


def view_key(cache: Path, params: Mapping[str, Any]) -> str:
    """The view's folder name: the manifest's content and the parameters that decide the samples."""
    text = json.dumps({"manifest": sha256_file(cache / MANIFEST), "version": VIEW_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class TrainingView(Dataset):
    """The mapped arrays of one view; items have ``ShardDataset``'s layout, ``batch`` / ``loader`` gather whole
    batches. Build it with ``training_view``."""

    def __init__(self, directory: Path, meta: dict[str, Any], source: Any):
        self.directory, self.meta, self.names = directory, meta, list(meta["names"])
        self.dtype = np.dtype(meta["dtype"])
        self.values = {m: _rows(self.values_file(m), meta["rows"][m], meta["dims"][m], self.dtype) for m in self.names}
        self.offsets = {m: np.load(directory / f"{m}_offsets.npy") for m in self.names}
        self.present = np.load(directory / "present.npy")
        self.labels = np.load(directory / "labels.npy")
        self.ids = json.loads((directory / "ids.json").read_text())
        self._source = source  # the ShardDataset it was built from: the cache's schema for `train`
        self._buffers = _BufferPool()

    def __reduce__(self) -> tuple:
        # a DataLoader worker started by spawn or forkserver gets the view by pickle: it maps the files again (a
        # pickled np.memmap would be a copy of the whole view) and starts an empty buffer pool
        return TrainingView, (self.directory, self.meta, self._source)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        features = {m: np.array(self.values[m][self.offsets[m][i] : self.offsets[m][i + 1]]) for m in self.names}
        present = {m: bool(self.present[i, k]) for k, m in enumerate(self.names)}
        return {"features": features, "present": present, "label": float(self.labels[i]), "id": self.ids[i]}

    def values_file(self, modality: str) -> Path:
        return self.directory / _values_name(modality, self.meta["dtype"])

    def dims(self) -> dict[str, int]:
        return dict(self.meta["dims"])

    def schema(self) -> dict:
        return self._source.schema()

    def batch(self, indices: np.ndarray, pin_memory: bool = False) -> dict:
        """The samples ``indices`` as one batch in ``collate``'s layout (right padding; features in the view's
        dtype: ``train`` casts float16 to float32 on the device), gathered per modality with one vectorised index
        into the mapped rows. ``pin_memory``: features in page-locked memory, for asynchronous copies to CUDA."""
        indices = np.asarray(indices, dtype=np.int64)
        out: dict = {"lengths": {}, "present": {}}
        for k, m in enumerate(self.names):
            starts, ends = self.offsets[m][indices], self.offsets[m][indices + 1]
            lengths = ends - starts
            width = max(1, int(lengths.max(initial=0)))
            total = int(lengths.sum())
            position = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # row within its sample
            rows = np.repeat(starts, lengths) + position  # (total,) the rows to read, sample after sample
            shape = (len(indices), width, self.meta["dims"][m])
            padded, features = self._empty(m, shape, pin_memory)
            if total == len(indices) * width:  # every sample full length (aligned data): one gather, no padding
                # mode="clip" (rows are in range) lets numpy copy straight into ``out`` instead of buffering it
                np.take(self.values[m], rows, axis=0, out=padded.reshape(total, -1), mode="clip")
            else:
                padded.fill(0)
                padded[np.repeat(np.arange(len(indices)), lengths), position] = self.values[m][rows]
            out[m] = features
            out["lengths"][m] = torch.from_numpy(lengths)
            out["present"][m] = torch.from_numpy(self.present[indices, k].copy())
        out["labels"] = torch.from_numpy(self.labels[indices].copy())
        out["ids"] = [self.ids[i] for i in indices]
        return out

    def _empty(self, modality: str, shape: tuple[int, ...], pin_memory: bool) -> tuple[np.ndarray, torch.Tensor]:
        """An uninitialised features array and the tensor sharing its memory. Pinned ones come from torch's host
        allocator, which reuses a block only once the copies reading it have finished; ordinary ones from the pool
        (fresh 100-MB arrays every batch cost more in page faults than the gather itself)."""
        if pin_memory:
            tensor = torch.empty(shape, dtype=getattr(torch, self.meta["dtype"]), pin_memory=True)
            return tensor.numpy(), tensor
        array = self._buffers.take(modality, shape, self.dtype)
        return array, torch.from_numpy(array)

    def loader(self, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
               rank: int = 0, world_size: int = 1, workers: int = 0,
               pin_memory: bool = False) -> Iterator[dict]:  # fmt: skip
        """Batches of one epoch: each index exactly once, in a seeded shuffle (``seed``: pass the epoch's), split
        across ``world_size`` ranks as ``DistributedSampler`` does (padded by repeating the first indices).
        ``workers`` threads gather the next batches ahead (numpy releases the GIL while it copies; processes would
        have to ship every batch through a pipe). ``pin_memory`` as ``batch``."""
        if pin_memory and not torch.cuda.is_available():
            raise ValueError("pin_memory=True needs CUDA (pinned memory speeds up copies to a GPU); this machine "
                             "has none: leave it False")  # fmt: skip
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed)).numpy() if shuffle else (
            np.arange(len(self)))  # fmt: skip
        if world_size > 1:
            per_rank = -(-len(order) // world_size)
            order = np.resize(order, per_rank * world_size)[rank::world_size]
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        chunks = [order[start : start + batch_size] for start in range(0, stop, batch_size)]
        if workers <= 0:
            yield from (self.batch(chunk, pin_memory) for chunk in chunks)
        else:
            yield from _in_order(lambda chunk: self.batch(chunk, pin_memory), chunks, workers)


class _BufferPool:
    """Reusable feature memory, per modality: an array is handed out again only when nothing but the pool refers to
    it (every batch tensor made from it, and every view of those, holds a reference), so a batch the caller keeps
    is never overwritten. Batches of varying width get the smallest free array that holds them."""

    KEEP = 4  # arrays kept per modality (enough for 2 loader threads); beyond them, fresh (unpooled) arrays

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, str], list[np.ndarray]] = {}
        self._lock = threading.Lock()  # loader threads take arrays concurrently
        self._free = self._refcounts([np.empty(0)])[0]  # an array only a list holds, counted as ``take`` counts

    @staticmethod
    def _refcounts(arrays: list[np.ndarray]) -> list[int]:
        return [sys.getrefcount(array) for array in arrays]

    def take(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        size = math.prod(shape)
        with self._lock:
            arrays = self._arrays.setdefault((key, dtype.str), [])
            free = [k for k, count in enumerate(self._refcounts(arrays)) if count <= self._free]
            fits = [k for k in free if arrays[k].size >= size]
            if fits:
                return arrays[min(fits, key=lambda k: arrays[k].size)][:size].reshape(shape)
            array = np.empty(size + size // 4, dtype)  # room to spare: the widths of later batches vary
            if free:  # a free array too small for this batch: replaced
                arrays[free[0]] = array
            elif len(arrays) < self.KEEP:
                arrays.append(array)
            return array[:size].reshape(shape)


def _values_name(modality: str, dtype: str) -> str:
    return f"{modality}{SUFFIXES[dtype]}"


def _rows(path: Path, rows: int, dim: int, dtype: np.dtype) -> np.ndarray:
    if rows == 0:  # np.memmap refuses empty files
        return np.zeros((0, dim), dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(rows, dim))


def training_view(
    cache: str | Path,
    split: str | None = "train",
    align: str | None = None,
    max_len: int | Mapping[str, int] | None = None,
    label: str = "label",
    clock_rate: float | None = None,
    modalities: tuple[str, ...] | None = None,
    dtype: str = "float32",
) -> TrainingView:
    """The training view of ``cache`` for these parameters (``ShardDataset``'s), built on first use (module doc).
    ``dtype``: how the features are stored, "float32" (exactly the reader's values) or "float16" (half the size;
    about 3 significant digits)."""
    from cmamba.datasets.shards import ShardDataset

    if dtype not in VIEW_DTYPES:
        raise ValueError(f"a training view stores float32 or float16 features, not {dtype!r}")
    cache = Path(cache)
    source = ShardDataset(cache, split=split, align=align, modalities=modalities, max_len=max_len, label=label,
                          clock_rate=clock_rate)  # fmt: skip
    params = {"split": split, "align": source.align, "clock_rate": source.clock_rate, "label": label,
              "max_len": source.max_len, "names": source.names, "dtype": dtype}  # fmt: skip
    directory = cache / "views" / view_key(cache, params)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with open(directory.parent / f"{directory.name}.lock", "a+") as lock:
            # blocking: the ranks of a DDP run ask for the same view at once; one builds it, the others then map it
            fcntl.flock(lock, fcntl.LOCK_EX)
            meta = _complete(directory) or _build(source, directory, params)
    except OSError as exc:  # a full disk or a read-only cache: say how big the view is and how to do without
        shards = sum((cache / s).stat().st_size for s in source.manifest["shards"])
        share = len(source) / max(1, source.manifest["counts"]["clips"])
        size = shards * share * np.dtype(dtype).itemsize / 4 / 2**20
        raise CacheError(f"cannot write the training view {directory} (about {size:,.0f} MB of {dtype} "
                         f"features): {exc}; free space, or train with --no-view to stream the "
                         "shards instead") from exc  # fmt: skip
    return TrainingView(directory, meta, source)


def _complete(directory: Path) -> dict | None:
    """The view's metadata when every file is there with the size it records; None otherwise."""
    try:
        meta = json.loads((directory / "view.json").read_text())
        sizes = {name: (directory / name).stat().st_size for name in meta["sizes"]}
    except (OSError, ValueError, KeyError):
        return None
    return meta if sizes == meta["sizes"] else None


def _copy_groups(source: Any, handles: dict, offsets: dict, present: np.ndarray, dtype: np.dtype) -> None:
    """Native rows need no per-sample work: each row group's decoded rows of the split are copied in one gather
    per modality (what ``ShardDataset.__getitem__`` would slice, sample by sample)."""
    locations = np.asarray(source.locations)  # (N, 3): file, row group, row; in storage order
    starts = np.flatnonzero(np.any(np.diff(locations[:, :2], axis=0) != 0, axis=1)) + 1
    blocks = np.split(np.arange(len(locations)), starts)
    keys = [(int(locations[b[0], 0]), int(locations[b[0], 1])) for b in blocks]
    for block, group in zip(blocks, _in_order(lambda key: source.decode_group(*key), keys, 2), strict=True):
        rows = locations[block, 2]
        for k, m in enumerate(source.names):
            flags = np.asarray(group[f"{m}_present"], bool)[rows]
            group_offsets, values = group[f"{m}_values"]
            lengths = np.where(flags, group_offsets[rows + 1] - group_offsets[rows], 0)
            first = np.repeat(group_offsets[rows], lengths)
            taken = first + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            handles[m].write(_stored(values[taken], dtype, m))
            offsets[m].extend((offsets[m][-1] + np.cumsum(lengths)).tolist())
            present[block, k] = flags


def _stored(values: np.ndarray, dtype: np.dtype, modality: str) -> bytes:
    """``values`` as ``dtype``'s bytes; refuses finite values float16 cannot hold (they would become infinite)."""
    with np.errstate(over="ignore"):  # checked just below, with a message that says what to do
        stored = np.ascontiguousarray(values, dtype)
    if dtype.itemsize < 4 and (np.isinf(stored) & np.isfinite(values)).any():
        largest = np.abs(values[np.isfinite(values)]).max()
        raise ValueError(f"the {modality} features reach {largest:.6g}, beyond float16's range (±65,504): store the "
                         "training view as float32 (the default)")  # fmt: skip
    return stored.tobytes()


def _in_order(fn: Any, items: list, threads: int) -> Iterator[Any]:
    """``fn(item)`` for each item, in order, computed up to ``threads`` items ahead in a thread pool (numpy copies
    and Parquet decoding release the GIL): while the caller works on one result, the next ``threads`` are being
    computed. Alive at once: those ``threads``, the result handed over, and the one the caller may still hold while
    it asks for the next."""
    with ThreadPoolExecutor(threads) as pool:
        pending = deque(pool.submit(fn, item) for item in items[:threads])
        for item in items[threads:]:
            ready = pending.popleft()
            pending.append(pool.submit(fn, item))  # before yielding: it runs while the caller uses ``ready``
            yield ready.result()
        while pending:
            yield pending.popleft().result()


def _build(source: Any, directory: Path, params: dict) -> dict:
    """Build the view in ``directory`` (replacing an incomplete one); a build that fails leaves nothing."""
    if directory.exists():
        shutil.rmtree(directory)  # an incomplete or damaged earlier build
    directory.mkdir(parents=True)
    try:
        return _write(source, directory, params)
    except BaseException:  # a refused value, a full disk, an interrupt: no partial view stays behind
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _write(source: Any, directory: Path, params: dict) -> dict:
    """Stream ``source``'s samples into the view's files (memory: a few row groups of the cache at a time)."""
    names, dims, dtype = source.names, source.dims(), np.dtype(params["dtype"])
    values_files = [_values_name(m, params["dtype"]) for m in names]
    offsets = {m: [0] for m in names}
    present = np.zeros((len(source), len(names)), bool)
    handles = {m: open(directory / name, "wb") for m, name in zip(names, values_files, strict=True)}
    try:
        if source.align == "native" and not source.max_len:  # stored rows as they are: copy row groups whole
            _copy_groups(source, handles, offsets, present, dtype)
        else:
            for i in range(len(source)):  # storage order: the reader decodes each row group once
                item = source[i]
                for k, m in enumerate(names):
                    x = item["features"][m]
                    handles[m].write(_stored(x, dtype, m))
                    offsets[m].append(offsets[m][-1] + len(x))
                    present[i, k] = item["present"][m]
    finally:
        for handle in handles.values():
            handle.close()
    for m in names:
        np.save(directory / f"{m}_offsets.npy", np.asarray(offsets[m], np.int64))
    np.save(directory / "present.npy", present)
    np.save(directory / "labels.npy", source.labels)
    with atomic_path(directory / "ids.json") as tmp:
        tmp.write_text(json.dumps(source.ids))
    files = [*values_files, *(f"{m}_offsets.npy" for m in names), "present.npy", "labels.npy",
             "ids.json"]  # fmt: skip
    meta = {**params, "dims": dims, "rows": {m: offsets[m][-1] for m in names}, "count": len(source),
            "sizes": {f: (directory / f).stat().st_size for f in files}}  # fmt: skip
    write_json_atomic(directory / "view.json", meta)  # last: the view is complete
    return meta
