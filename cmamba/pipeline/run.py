"""The extraction graph on Dask: clip × modality tasks → a per-clip join → shard writers → manifest.

    run_extraction(clips, "cache/", config)                    # LocalCluster: processes, 1 thread each
    run_extraction(clips, "cache/", config, scheduler="tcp://host:8786")   # an existing Dask cluster

Modality tasks write their result to the part cache (``cache/parts.py``) and return only a small status, so no
feature array travels through the scheduler until the join; each shard writer joins its clips (validation,
native sequences) and writes one Parquet shard. Shard membership is fixed by the sorted clip list, so a re-run
after any interruption writes the same shards, with every clip exactly once. Workers pin torch/BLAS to one
thread and load each model once (``shared_model``). The driver holds the cache lock for the whole run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
from distributed import WorkerPlugin
from tqdm import tqdm

from cmamba.constants import CLIP_ID_SEPARATOR, MODALITIES
from cmamba.errors import CacheError, ModelNotFoundError, SchedulerError
from cmamba.extractors.decode import probe
from cmamba.extractors.transcripts import find_transcript
from cmamba.extractors.transcripts.asr import asr_status, describe_asr
from cmamba.io import sha256_file, write_json_atomic
from cmamba.pipeline.cache.parts import load_part, part_key, part_path, save_part
from cmamba.pipeline.cache.schema import modality_columns
from cmamba.pipeline.cache.store import cache_lock, claim_cache, shard_file, write_manifest, write_shard
from cmamba.pipeline.clip import ClipError, ModalityResult, extract_modality, join_clip
from cmamba.pipeline.config import ExtractionConfig, SegmentConfig
from cmamba.pipeline.layout import LABEL_COLUMNS, ClipSpec
from cmamba.pipeline.segment import cache_key_fields as segment_key_fields
from cmamba.pipeline.segment import segment_recording, should_segment

log = logging.getLogger("cmamba.pipeline")


@dataclass
class RunSummary:
    cache: Path
    clips: int
    extracted: int  # modality results computed in this run
    cached: int  # modality results reused from the part cache
    failed: dict[str, int] = field(default_factory=dict)  # failed clips by stage
    seconds: float = 0.0
    worker_peak_mb: dict[str, float] = field(default_factory=dict)  # peak resident memory of each worker
    manifest: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        failed = sum(self.failed.values())
        by_stage = ", ".join(f"{stage} {n}" for stage, n in sorted(self.failed.items())) or "none"
        return (
            f"{self.clips - failed}/{self.clips} clips in {self.cache} ({self.seconds:.1f} s): modality results "
            f"extracted {self.extracted}, reused from cache {self.cached}; failed clips {failed} (by stage: {by_stage})"
        )


def _modality_config(config: ExtractionConfig, modality: str) -> dict[str, Any]:
    settings = {"extractor": dataclasses.asdict(getattr(config, modality))}
    if config.extractor(modality).input_spec().kind == "words":  # how the words were found and timed
        settings.update(asr=dataclasses.asdict(config.asr), use_asr=config.use_asr)
    return settings


def _part_keys(spec: ClipSpec, digest: str, config: ExtractionConfig) -> dict[str, str]:
    keys = {}
    for m in config.modalities:
        extractor = config.extractor(m)
        extra: dict[str, Any] = {}
        if extractor.input_spec().kind == "words":
            sidecar = find_transcript(spec.path) if spec.text is None else None
            extra = {"text": spec.text, "sidecar": sha256_file(sidecar) if sidecar else None}
        if spec.start is not None:  # a segment: its range decides its features (whole files keep their keys)
            extra.update(start=spec.start, end=spec.end)
        keys[m] = part_key(digest=digest, modality=m, name=extractor.name, version=extractor.version,
                           settings=_modality_config(config, m), **extra)  # fmt: skip
    return keys


def modality_task(spec: ClipSpec, modality: str, config: ExtractionConfig, part: str) -> dict:
    """Extract one modality of one clip into ``part``; returns a small status (no arrays cross the scheduler)."""
    clip_id = spec.clip_id
    result = extract_modality(spec.path, modality, config, spec.text, spec.start, spec.end)
    error = None if result.error is None else [result.error.stage, result.error.reason]
    if error is None:
        try:
            save_part(Path(part), result)
        except OSError as exc:  # e.g. a full disk: this clip's problem, retried on the next run
            error = ["cache", f"cannot write {part}: {exc}"]
    return {"clip_id": clip_id, "modality": modality, "error": error}


def _load_or_extract(spec: ClipSpec, modality: str, part: Path, config: ExtractionConfig) -> ModalityResult:
    """The cached result in ``part``; a part that cannot be read (truncated by a crash or a full disk, damaged on
    disk) is discarded and extracted again, so a damaged cache heals instead of failing the clip on every run."""
    try:
        return load_part(part)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable part %s (%s): extracting %s again", spec.clip_id, part, exc, modality)
        part.unlink(missing_ok=True)
        result = extract_modality(spec.path, modality, config, spec.text, spec.start, spec.end)
        if result.error is None:
            save_part(part, result)
        return result


def _clip_row(job: dict, config: ExtractionConfig) -> tuple[dict | None, list[ClipError]]:
    """(row, errors) of one clip: its cached parts joined and validated, at native rates."""
    spec: ClipSpec = job["spec"]
    duration = probe(spec.path).duration if spec.start is None else spec.end - spec.start
    results = [_load_or_extract(spec, m, Path(p), config) for m, p in job["parts"].items()]
    clip = join_clip(spec.clip_id, spec.path, duration, results, config, align_output=False)
    if not clip.ok:
        return None, clip.errors
    transcript = clip.transcript
    times = transcript.times if transcript is not None else None
    text_bert = clip.sequences["text"].info.get("text_bert") if "text" in clip.sequences else None
    row: dict[str, Any] = {
        "clip_id": spec.clip_id,
        "video_id": spec.video_id,
        "split": spec.split,
        **{c: spec.labels.get(c) for c in LABEL_COLUMNS},
        "annotation": spec.annotation,
        "duration": duration,
        "start": spec.start or 0.0,
        "end": duration if spec.end is None else spec.end,
        "source": str(spec.path),
        "digest": job["digest"],
        "text_raw": spec.text if spec.text is not None else (transcript.text if transcript else None),
        "words": list(transcript.words) if transcript is not None else [],
        "word_start": [] if times is None else times[:, 0],
        "word_end": [] if times is None else times[:, 1],
        "word_timing": transcript.timing if transcript is not None else None,
    }
    for column, index in (("token_ids", 0), ("token_mask", 1), ("token_type_ids", 2)):
        row[column] = [] if text_bert is None else text_bert[index]
    for m in MODALITIES:
        absent = clip.absent.get(m, None if m in config.modalities else "not extracted")
        row.update(modality_columns(m, clip.sequences.get(m), absent))
    return row, []


def shard_task(jobs: list[dict], dims: dict[str, int], path: str, config: ExtractionConfig, statuses: list) -> list:
    """Join the clips of one shard and write it; returns the error records of its failed clips."""
    failed: dict[str, list] = {}
    for status in statuses:
        if status["error"] is not None:
            failed.setdefault(status["clip_id"], []).append(status["error"])
    rows, errors = [], []
    for job in jobs:
        clip_id = job["spec"].clip_id
        problems = job["errors"] + failed.get(clip_id, [])
        if not problems:
            try:
                row, clip_errors = _clip_row(job, config)
            except Exception as exc:  # a bug or an unwritable cache: reported, the other clips go on
                row, clip_errors = None, [ClipError("join", f"{type(exc).__name__}: {exc}")]
            problems = [[e.stage, e.reason] for e in clip_errors]
            if row is not None:
                rows.append(row)
        unique = dict.fromkeys((stage, reason) for stage, reason in problems)  # one record per distinct problem
        errors += [{"clip_id": clip_id, "stage": stage, "reason": reason} for stage, reason in unique]
    write_shard(rows, dims, Path(path))
    return errors


def _digests(cache: Path, clips: list[ClipSpec], rehash: bool = False) -> tuple[dict[str, str | None], dict[str, list]]:
    """Content digests of the clips' media. An index keyed by path, size, mtime, inode and ctime avoids re-hashing
    on re-runs: a file replaced by another (even with the same size and a restored mtime) has a new inode or
    ctime and is hashed again. ``rehash`` ignores the index; an unreadable index is rebuilt. Returns the digests
    (None for a clip whose file cannot be read) and, per such clip, its problem."""
    index_path = cache / "digests.json"
    try:
        index = {} if rehash or not index_path.is_file() else json.loads(index_path.read_text())
    except (ValueError, UnicodeDecodeError):  # truncated or garbled: rebuilt below, never blocks a run
        log.warning("%s is unreadable: hashing every file again", index_path)
        index = {}
    index = index if isinstance(index, dict) else {}
    digests, unreadable = {}, {}
    for spec in clips:
        digests[spec.clip_id] = None
        path = Path(spec.path) if spec.path is not None else None
        if path is None or not path.is_file():
            where = spec.path or "none"
            why = f"{where} is a symlink to nothing (or a symlink loop)" if path and path.is_symlink() else (
                f"media file not found for clip {spec.clip_id} ({where})")  # fmt: skip
            unreadable[spec.clip_id] = [["open", why]]
            continue
        try:
            stat, name = path.stat(), str(path.resolve())
            stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
            known = index.get(name)
            if not isinstance(known, list) or len(known) != 5 or known[:4] != stamp:
                index[name] = known = [*stamp, sha256_file(path)]
        except OSError as exc:  # unreadable (permissions, I/O error): this clip's problem, not the run's
            unreadable[spec.clip_id] = [["open", f"cannot read {path}: {exc.strerror or exc}"]]
            continue
        digests[spec.clip_id] = known[4]
    write_json_atomic(index_path, index)
    return digests, unreadable


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class _PinThreads(WorkerPlugin):
    """Dask worker plugin: one torch thread per worker process (workers of an external cluster, whose
    environment cmamba does not set)."""

    def setup(self, worker: Any) -> None:
        import torch

        torch.set_num_threads(1)


@contextmanager
def _dask_client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:  # refused, unresolvable or timed out: not a disk problem
            raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start it (`dask "
                                 "scheduler`) or drop --scheduler to use local workers") from exc  # fmt: skip
        with client:
            client.register_plugin(_PinThreads(), name="cmamba-pin-threads")
            yield client
        return
    one_thread = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": one_thread}):
        processes = workers != 0  # 0: one in-process worker thread (debugging, small jobs)
        cluster = LocalCluster(n_workers=1 if workers == 0 else workers or os.cpu_count() or 1, threads_per_worker=1,
                               processes=processes, dashboard_address=":0", silence_logs=logging.ERROR)  # fmt: skip
        with cluster, Client(cluster) as client:  # the environment above already gives torch one thread
            yield client


def _preflight(config: ExtractionConfig) -> tuple[dict[str, int], dict[str, list[str]], dict[str, Any]]:
    """Dims, feature names and extractor descriptions (with the sha256 of every model file); fails fast, before
    any work, when a model is missing."""
    dims, names, described = {}, {}, {}
    for m in config.modalities:
        extractor = config.extractor(m)
        for role, path in extractor.model_files().items():
            described[role] = {"path": str(path), "sha256": sha256_file(path)}
        dims[m], names[m] = extractor.feature_dim, list(extractor.feature_names)
        described[m] = extractor.describe()
    words = any(config.extractor(m).input_spec().kind == "words" for m in config.modalities)
    if words and config.use_asr:
        described["asr"] = describe_asr(config.asr) if asr_status(config.asr)[0] else None
    return dims, names, described


def segment_task(path: str, config: SegmentConfig, use_asr: bool, target: str) -> dict[str, Any]:
    """Segment one recording and cache the result at ``target`` (JSON, atomic); returns it."""
    result = segment_recording(path, config, use_asr).to_dict()
    write_json_atomic(Path(target), result)
    return result


def _segment_recordings(
    client: Any,
    cache: Path,
    clips: list[ClipSpec],
    digests: dict,
    config: SegmentConfig,
    use_asr: bool,
    progress: bool,
) -> tuple[list[ClipSpec], dict[str, list], dict[str, dict]]:
    """The clips with every long recording replaced by its segments (``<id>$_$<NNNN>``, a range of the file), the
    errors of recordings that could not be segmented, and per recording how it was cut. Segmentations run as
    parallel tasks and are cached by content (the media digest, the settings, the sidecar and ASR model)."""
    out, problems, recordings, pending = [], {}, {}, {}
    for spec in clips:
        digest = digests.get(spec.clip_id)
        if config.mode == "none" or digest is None or spec.start is not None:
            out.append(spec)
            continue
        try:
            if not should_segment(probe(spec.path), config):
                out.append(spec)
                continue
            key = part_key(digest=digest, kind="segments", **segment_key_fields(Path(spec.path), config, use_asr))
        except Exception:  # unreadable media: the clip's own extraction reports it
            out.append(spec)
            continue
        target = cache / "parts" / "segments" / key[:2] / f"{key}.json"
        if target.is_file():
            try:
                recordings[spec.clip_id] = json.loads(target.read_text())
                continue
            except ValueError:  # a damaged cache file: segment again
                pass
        pending[client.submit(segment_task, str(spec.path), config, use_asr, str(target), pure=False)] = spec
    from dask.distributed import as_completed

    for future in tqdm(as_completed(pending), total=len(pending), desc="segment", unit="file",
                       disable=not progress or not pending, file=sys.stderr):  # fmt: skip
        spec = pending[future]
        try:
            recordings[spec.clip_id] = future.result()
        except Exception as exc:  # the recording fails alone, named
            problems[spec.clip_id] = [["segment", f"{type(exc).__name__}: {exc}"]]
            out.append(spec)
    by_id = {spec.clip_id: spec for spec in clips}
    for recording, cut in recordings.items():
        spec = by_id[recording]
        for index, (start, end) in enumerate(cut["intervals"]):
            segment_id = f"{recording}{CLIP_ID_SEPARATOR}{index:04d}"
            out.append(dataclasses.replace(spec, clip_id=segment_id, video_id=recording, text=None, start=start,
                                           end=end))  # fmt: skip
            digests[segment_id] = digests[recording]
    summary = {r: {k: v for k, v in cut.items() if k != "intervals"} | {"segments": len(cut["intervals"])}
               for r, cut in recordings.items()}  # fmt: skip
    return out, problems, summary


def _plan(
    cache: Path, clips: list[ClipSpec], config: ExtractionConfig, digests: dict, problems: dict
) -> tuple[dict[str, dict], list[tuple]]:
    """Per clip (sorted by id): its media digest, part files and known errors; plus the (clip, modality, part)
    work items whose part is not cached yet."""
    jobs, todo = {}, []
    for spec in sorted(clips, key=lambda c: c.clip_id):
        digest = digests.get(spec.clip_id)
        job = {"spec": spec, "digest": digest, "parts": {}, "errors": list(problems.get(spec.clip_id, []))}
        if job["errors"]:
            digest = None  # unreadable, or the recording could not be segmented: reported, not extracted
        if digest is not None:
            for m, key in _part_keys(spec, digest, config).items():
                job["parts"][m] = str(part_path(cache, m, key))
                if not Path(job["parts"][m]).is_file():
                    todo.append((spec, m, job["parts"][m]))
        jobs[spec.clip_id] = job
    return jobs, todo


def run_extraction(
    clips: list[ClipSpec],
    out: str | Path,
    config: ExtractionConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    clips_per_shard: int = 1000,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    segment: SegmentConfig | None = None,
    overwrite: bool = False,
    rehash: bool = False,
) -> RunSummary:
    """Extract ``clips`` into the cache folder ``out``; re-running skips finished work (see the module doc).

    workers: local worker processes (default: one per core; 0 runs one worker thread in this process);
    scheduler: the address of an existing Dask scheduler instead of a local cluster; segment: how long
    recordings are cut into utterance clips (``cmamba.pipeline.segment``; None: every file is one clip);
    overwrite: replace a cache of another kind or config in ``out`` (refused otherwise); rehash: hash every media
    file again instead of trusting the index of unchanged files (size, mtime, inode, ctime).
    """
    segment = segment or SegmentConfig(mode="none")
    config = config or ExtractionConfig()
    cache, start = Path(out), time.perf_counter()
    if clips_per_shard < 1:
        raise ValueError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
    try:
        with cache_lock(cache):
            claim_cache(cache, {"time_unit": "seconds", "config": config.to_dict()}, "this extraction", overwrite)
            for leftover in cache.rglob(".tmp-*"):  # a killed run's half-written files
                leftover.unlink()
            dims, names, described = _preflight(config)
            digests, unreadable = _digests(cache, clips, rehash)
            with _dask_client(workers, scheduler) as client:
                clips, problems, recordings = _segment_recordings(client, cache, clips, digests, segment,
                                                                  config.use_asr, progress)  # fmt: skip
                jobs, todo = _plan(cache, clips, config, digests, {**unreadable, **problems})
                statuses = _run_modalities(client, todo, config, len(jobs), progress)
                peaks = client.run(_peak_rss_mb)
                errors, shard_paths = _write_shards(client, list(jobs.values()), statuses, dims, cache, config,
                                                    clips_per_shard, progress)  # fmt: skip
            failed_ids = {e["clip_id"] for e in errors}
            splits = Counter(j["spec"].split or "none" for j in jobs.values() if j["spec"].clip_id not in failed_ids)
            manifest = write_manifest(cache, shard_paths, dims, names, errors, splits, {
                "config": config.to_dict(),
                "align": config.align,
                "clock_rate": config.clock_rate,
                "time_unit": "seconds",
                "extractors": described,
                "source": source or {},
                "clips_per_shard": clips_per_shard,
                "segment": {"config": dataclasses.asdict(segment), "recordings": recordings},
            })  # fmt: skip
    except ModelNotFoundError:  # a FileNotFoundError, but not about the cache: its own message says what to install
        raise
    except OSError as exc:  # full disk, read-only or unwritable output: parts and shards are written atomically
        raise CacheError(
            f"cannot write the cache {cache}: {exc}; what finished is kept and consistent — free space or fix "
            "permissions, then re-run to continue"
        ) from exc

    failed = Counter(next(e["stage"] for e in errors if e["clip_id"] == c) for c in failed_ids)
    summary = RunSummary(cache, len(jobs), len(todo), sum(len(j["parts"]) for j in jobs.values()) - len(todo),
                         dict(failed), time.perf_counter() - start, peaks, manifest)  # fmt: skip
    log.info("%s", summary)
    return summary


def _run_modalities(client: Any, todo: list, config: ExtractionConfig, n_clips: int, progress: bool) -> list[dict]:
    """Submit the clip × modality tasks; a progress bar counts clips as their last modality finishes."""
    from dask.distributed import as_completed

    pending = Counter(spec.clip_id for spec, _, _ in todo)
    bar = tqdm(total=n_clips, unit="clip", desc="extract", disable=not progress, file=sys.stderr)
    bar.update(n_clips - len(pending))  # clips fully served from the cache
    futures = {client.submit(modality_task, spec, m, config, part, pure=False): (spec, m) for spec, m, part in todo}
    statuses = []
    for future in as_completed(futures):
        spec, m = futures[future]
        try:
            statuses.append(future.result())
        except Exception as exc:  # the worker died on this item (e.g. killed, out of memory): record it
            statuses.append(
                {"clip_id": spec.clip_id, "modality": m, "error": ["worker", f"{type(exc).__name__}: {exc}"]}
            )
        pending[spec.clip_id] -= 1
        if pending[spec.clip_id] == 0:
            bar.update(1)
    bar.close()
    return statuses


def _write_shards(client, jobs, statuses, dims, cache, config, clips_per_shard, progress) -> tuple[list, list[Path]]:
    by_clip: dict[str, list] = {}
    for status in statuses:
        by_clip.setdefault(status["clip_id"], []).append(status)
    futures = {}
    for index, begin in enumerate(range(0, len(jobs), clips_per_shard)):
        chunk = jobs[begin : begin + clips_per_shard]
        chunk_statuses = [s for job in chunk for s in by_clip.get(job["spec"].clip_id, [])]
        path = shard_file(cache, index)
        futures[client.submit(shard_task, chunk, dims, str(path), config, chunk_statuses, pure=False)] = (path, chunk)
    errors, written = [], []
    for future, (path, chunk) in tqdm(
        futures.items(), desc="shards", unit="shard", disable=not progress, file=sys.stderr
    ):
        try:
            errors += future.result()
            written.append(path)
        except Exception as exc:
            errors += [{"clip_id": j["spec"].clip_id, "stage": "shard", "reason": f"{type(exc).__name__}: {exc}"}
                       for j in chunk]  # fmt: skip
    return errors, written
