"""Building feature caches, the library functions behind ``cmamba extract`` and ``cmamba prepare``.

extract(INPUT, CACHE)               a file, a folder of videos, or a label.csv + Raw/ corpus → feature cache
prepare("mosi", CORPUS, CACHE)      a benchmark corpus in MMSA's raw layout → feature cache
find_clips(INPUT)                   what ``extract`` (and ``score``) read from INPUT
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cmamba.assets import install_missing
from cmamba.constants import DATASETS
from cmamba.errors import ModelNotFoundError, NoMediaError
from cmamba.pipeline.config import ExtractionConfig, SegmentConfig
from cmamba.pipeline.layout import MEDIA_SUFFIXES, ClipSpec, benchmark_clips, folder_clips
from cmamba.pipeline.run import RunSummary, run_extraction


def find_clips(input_path: str | Path) -> tuple[list[ClipSpec], dict[str, Any]]:
    """The clips of ``input_path`` and a description of where they came from: a single media file, a benchmark
    corpus (``label.csv`` beside ``Raw/``) or a folder of media (recursive, optional ``labels.csv``)."""
    if not str(input_path).strip():  # Path("") is the current directory: never scan it by accident
        raise NoMediaError("the input path is empty; name a media file or a folder of media")
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


def install_models_on_first_use(config: ExtractionConfig, echo: Callable[[str], None] | None = None) -> None:
    """Install the pinned model files the configured extractors miss (a first run after ``pip install``); a model
    that is still missing afterwards raises its own ModelNotFoundError (how to install it by hand)."""
    for m in config.modalities:
        try:
            config.extractor(m).model_files()
        except ModelNotFoundError:
            if not install_missing(echo or (lambda line: print(line, file=sys.stderr))):
                raise
            config.extractor(m).model_files()


def extract(
    input_path: str | Path,
    out: str | Path,
    config: ExtractionConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    clips_per_shard: int = 1000,
    progress: bool = True,
    segment: SegmentConfig | None = None,
    overwrite: bool = False,
    rehash: bool = False,
) -> RunSummary:
    """Extract every clip of ``input_path`` into the cache ``out`` (resumable; see ``run_extraction``); long
    recordings are cut into utterance clips as ``segment`` says (default: files longer than 30 s). ``overwrite``
    replaces a cache of another kind or config in ``out`` (refused otherwise); ``rehash`` hashes every file again."""
    clips, source = find_clips(input_path)
    segment = segment or SegmentConfig()
    install_models_on_first_use(config or ExtractionConfig())
    return run_extraction(clips, out, config, workers, scheduler, clips_per_shard, source, progress, segment,
                          overwrite, rehash)  # fmt: skip


def prepare(
    dataset: str,
    corpus_dir: str | Path,
    out: str | Path,
    config: ExtractionConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    clips_per_shard: int = 1000,
    progress: bool = True,
    overwrite: bool = False,
    rehash: bool = False,
) -> RunSummary:
    """Extract a benchmark corpus (MOSI, MOSEI, CH-SIMS, CH-SIMS v2) from its ``label.csv`` + ``Raw/`` layout
    (never segmented; ``overwrite`` and ``rehash`` as for ``extract``)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r} is not one of {DATASETS}")
    clips = benchmark_clips(corpus_dir)
    install_models_on_first_use(config or ExtractionConfig())
    source = {"kind": "benchmark", "dataset": dataset, "path": str(Path(corpus_dir).resolve())}
    return run_extraction(clips, out, config, workers, scheduler, clips_per_shard, source, progress,
                          overwrite=overwrite, rehash=rehash)  # fmt: skip
