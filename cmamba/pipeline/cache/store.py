"""A feature cache folder: numbered Parquet shards, an errors table and ``manifest.json``, written atomically.

    CACHE/manifest.json           schema version, resolved config, extractor versions + model sha256s, dims,
                                  feature names, counts, the shard list, tool versions
    CACHE/shards/shard-00000.parquet ...
    CACHE/errors.parquet          clip_id, stage, reason (clips that could not be extracted)
    CACHE/parts/...               per clip × modality results (the extraction pipeline's resumable cache)

The manifest is written last and names the shards of the finished run; readers go through it, so a run killed
while writing leaves the previous complete state readable. ``cache_lock`` keeps two runs from sharing a cache.
"""

from __future__ import annotations

import fcntl
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cmamba.errors import CacheError, OutputExistsError
from cmamba.io import tool_versions, write_json_atomic
from cmamba.pipeline.cache.schema import SCHEMA_VERSION, rows_to_table, shard_schema, write_atomic

MANIFEST = "manifest.json"
ERRORS = "errors.parquet"
ERROR_SCHEMA = pa.schema([("clip_id", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``cache`` for the duration of a run (released even on kill -9: it is a flock)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle = open(cache / ".lock", "a+")
    except OSError as exc:
        raise CacheError(f"cannot write the cache folder {cache}: {exc}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise CacheError(f"another run is using the cache {cache}; wait for it or choose another --out") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def claim_cache(cache: Path, identity: Mapping[str, Any], what: str, overwrite: bool = False) -> None:
    """Refuse to write ``what`` into a cache whose manifest differs from ``identity`` (the manifest entries that
    decide its rows: an extraction's config, an import's source): it would be replaced silently. ``overwrite``
    drops the old manifest, shards and errors table (content-addressed parts stay: they are keyed by config)."""
    path = cache / MANIFEST
    if not path.is_file():
        return
    identity = json.loads(json.dumps(identity))  # as the manifest stores it (tuples become lists)
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        manifest = {}
    if isinstance(manifest, dict) and all(manifest.get(k) == v for k, v in identity.items()):
        return  # the same kind of cache: a re-run continues it
    if not overwrite:
        source = manifest.get("source", {}) if isinstance(manifest, dict) else {}
        held = "features imported from an MMSA pickle" if source.get("kind") == "mmsa-pickle" else (
            "features extracted with another config" if isinstance(manifest, dict) and "config" in manifest
            else "an unreadable manifest")  # fmt: skip
        raise OutputExistsError(f"{cache} already holds {held}; writing {what} there would replace them: choose "
                                "another --out, or pass --overwrite to replace that cache")  # fmt: skip
    path.unlink()
    (cache / ERRORS).unlink(missing_ok=True)
    for shard in (cache / "shards").glob("*.parquet"):
        shard.unlink()


def shard_file(cache: Path, index: int) -> Path:
    return cache / "shards" / f"shard-{index:05d}.parquet"


def write_shard(rows: list[dict[str, Any]], dims: Mapping[str, int], path: Path) -> None:
    """One shard, rows sorted by clip_id, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(rows_to_table(sorted(rows, key=lambda r: r["clip_id"]), shard_schema(dims)), path)


def write_manifest(
    cache: Path,
    shards: list[Path],
    dims: Mapping[str, int],
    feature_names: Mapping[str, list[str]],
    errors: list[dict[str, str]],
    splits: Mapping[str, int],
    manifest: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the errors table, then the manifest naming ``shards``; remove shards that it does not list."""
    write_atomic(pa.Table.from_pylist(errors, schema=ERROR_SCHEMA), cache / ERRORS)
    full = {
        "format": "cmamba-feature-cache",
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **manifest,
        "dims": dict(dims),
        "feature_names": {m: list(n) for m, n in feature_names.items()},
        "counts": {
            "clips": sum(splits.values()),
            "failed": len({e["clip_id"] for e in errors}),
            "by_split": dict(sorted(splits.items())),
        },
        "shards": [p.relative_to(cache).as_posix() for p in shards],
        "versions": tool_versions(),
    }
    write_json_atomic(cache / MANIFEST, full)
    keep = {p.name for p in shards}
    for stale in (cache / "shards").glob("*.parquet"):
        if stale.name not in keep:
            stale.unlink()
    return full


def finish_cache(
    cache: Path,
    rows: list[dict[str, Any]],
    dims: Mapping[str, int],
    feature_names: Mapping[str, list[str]],
    errors: list[dict[str, str]],
    manifest: Mapping[str, Any],
    clips_per_shard: int = 1000,
) -> dict[str, Any]:
    """Write in-memory ``rows`` as numbered shards of ``clips_per_shard`` (by clip_id), the errors table and the
    manifest (importers use this; the extraction pipeline writes its shards from Dask tasks). Returns the manifest."""
    if clips_per_shard < 1:
        raise ValueError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
    rows = sorted(rows, key=lambda r: r["clip_id"])
    shards = []
    for index, start in enumerate(range(0, len(rows), clips_per_shard)):
        shards.append(shard_file(cache, index))
        write_shard(rows[start : start + clips_per_shard], dims, shards[-1])
    (cache / "shards").mkdir(parents=True, exist_ok=True)
    splits = Counter(r.get("split") or "none" for r in rows)
    return write_manifest(cache, shards, dims, feature_names, errors, splits, manifest)


def read_manifest(cache: str | Path) -> dict[str, Any]:
    path = Path(cache) / MANIFEST
    if not path.is_file():
        raise CacheError(f"{cache} is not a feature cache (no {MANIFEST}); build one with `cmamba extract`")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CacheError(
            f"{cache} has cache schema {manifest.get('schema_version')}, this cmamba reads {SCHEMA_VERSION}; "
            "re-extract it"
        )
    return manifest


def shard_paths(cache: str | Path) -> list[Path]:
    return [Path(cache) / s for s in read_manifest(cache)["shards"]]


def read_errors(cache: str | Path) -> list[dict[str, str]]:
    path = Path(cache) / ERRORS
    return pq.read_table(path).to_pylist() if path.is_file() else []
