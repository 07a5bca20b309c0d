"""Building feature caches, the library functions behind ``cmamba extract`` and ``cmamba prepare``.

extract(INPUT, CACHE)               a file, a folder of videos, or a label.csv + Raw/ corpus → feature cache
prepare("mosi", CORPUS, CACHE)      a benchmark corpus in MMSA's raw layout → feature cache
find_clips(INPUT)                   what ``extract`` (and ``score``) read from INPUT
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmamba.constants import DATASETS
from cmamba.errors import NoMediaError
from cmamba.pipeline.config import ExtractionConfig, SegmentConfig
from cmamba.pipeline.layout import MEDIA_SUFFIXES, ClipSpec, benchmark_clips, folder_clips
from cmamba.pipeline.run import RunSummary, run_extraction


def find_clips(input_path: str | Path) -> tuple[list[ClipSpec], dict[str, Any]]:
    """The clips of ``input_path`` and a description of where they came from: a single media file, a benchmark
    corpus (``label.csv`` beside ``Raw/``) or a folder of media (recursive, optional ``labels.csv``)."""
    path = Path(input_path)
    if path.is_file():
        if path.suffix.lower() not in MEDIA_SUFFIXES:
            raise NoMediaError(f"{path} is not a media file this tool reads ({' '.join(sorted(MEDIA_SUFFIXES))})")
        return [ClipSpec(path.stem, path.stem, path)], {"kind": "file", "path": str(path.resolve())}
    if not path.exists():
        raise NoMediaError(f"{path} does not exist")
    if (path / "label.csv").is_file() and (path / "Raw").is_dir():
        return benchmark_clips(path), {"kind": "label.csv+Raw", "path": str(path.resolve())}
    clips = folder_clips(path)
    if not clips:
        raise NoMediaError(f"{path} contains no media files ({' '.join(sorted(MEDIA_SUFFIXES))})")
    return clips, {"kind": "folder", "path": str(path.resolve())}


def extract(
    input_path: str | Path,
    out: str | Path,
    config: ExtractionConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    clips_per_shard: int = 1000,
    progress: bool = True,
    segment: SegmentConfig | None = None,
) -> RunSummary:
    """Extract every clip of ``input_path`` into the cache ``out`` (resumable; see ``run_extraction``); long
    recordings are cut into utterance clips as ``segment`` says (default: files longer than 30 s)."""
    clips, source = find_clips(input_path)
    segment = segment or SegmentConfig()
    return run_extraction(clips, out, config, workers, scheduler, clips_per_shard, source, progress, segment)


def prepare(
    dataset: str,
    corpus_dir: str | Path,
    out: str | Path,
    config: ExtractionConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    clips_per_shard: int = 1000,
    progress: bool = True,
) -> RunSummary:
    """Extract a benchmark corpus (MOSI, MOSEI, CH-SIMS, CH-SIMS v2) from its ``label.csv`` + ``Raw/`` layout."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r} is not one of {DATASETS}")
    clips = benchmark_clips(corpus_dir)
    source = {"kind": "benchmark", "dataset": dataset, "path": str(Path(corpus_dir).resolve())}
    return run_extraction(clips, out, config, workers, scheduler, clips_per_shard, source, progress)
