"""The user journeys as library functions — one per CLI command, so the CLI stays a thin argument parser.

extract(INPUT, CACHE)               a file, a folder of videos, or a label.csv + Raw/ corpus → feature cache
prepare("mosi", CORPUS, CACHE)      a benchmark corpus in MMSA's raw layout → feature cache
train_cache(CACHE, RUN)             train (one run per seed) on a cache's train/valid/test splits
evaluate_run(RUN, CACHE)            MMSA metrics of a trained run on a cache split (optionally with missing data)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cmamba.fusion.checkpoint import check_schema, load_checkpoint
from cmamba.fusion.config import FusionConfig
from cmamba.fusion.train import DEFAULT_SEEDS, TrainConfig, evaluate, train_seeds
from cmamba.pipeline.clip import ExtractionConfig
from cmamba.pipeline.layout import BENCHMARKS, MEDIA_SUFFIXES, ClipSpec, LayoutError, benchmark_clips, folder_clips
from cmamba.pipeline.run import RunSummary, run_extraction


class NoMediaError(LayoutError):
    """The input holds no media file at all (the CLI exits with code 2)."""


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
) -> RunSummary:
    """Extract every clip of ``input_path`` into the cache ``out`` (resumable; see ``run_extraction``)."""
    clips, source = find_clips(input_path)
    return run_extraction(clips, out, config, workers, scheduler, clips_per_shard, source, progress)


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
    if dataset not in BENCHMARKS:
        raise ValueError(f"dataset {dataset!r} is not one of {BENCHMARKS}")
    clips = benchmark_clips(corpus_dir)
    source = {"kind": "benchmark", "dataset": dataset, "path": str(Path(corpus_dir).resolve())}
    return run_extraction(clips, out, config, workers, scheduler, clips_per_shard, source, progress)


def _splits(cache: str | Path, align: str | None, label: str = "label") -> dict[str, Any]:
    from cmamba.datasets.shards import ShardDataset

    by_split = read_split_counts(cache)
    missing = [s for s in ("train", "valid") if not by_split.get(s)]
    if missing:
        raise ValueError(f"{cache} has no clips in split(s) {missing} (it has {by_split}); label the splits first")
    sets = {s: ShardDataset(cache, split=s, align=align, label=label) for s in ("train", "valid", "test")}
    return {s: d for s, d in sets.items() if len(d)}


def read_split_counts(cache: str | Path) -> dict[str, int]:
    from cmamba.pipeline.cache import read_manifest

    return read_manifest(cache)["counts"]["by_split"]


def train_cache(
    cache: str | Path,
    out: str | Path,
    model: Mapping[str, Any] | None = None,
    train: TrainConfig | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    align: str | None = None,
) -> dict[str, Any]:
    """Train one model per seed on the cache's splits into ``out/seed-<seed>``; returns ``out/summary.json``.

    model: FusionConfig fields other than ``modalities`` (taken from the cache); train: the recipe.
    """
    sets = _splits(cache, align)
    model_config = FusionConfig(modalities=sets["train"].dims(), **dict(model or {}))
    return train_seeds(model_config, train or TrainConfig(), sets["train"], sets["valid"], out, sets.get("test"),
                       tuple(seeds))  # fmt: skip


def best_checkpoint(run: str | Path) -> Path:
    """The checkpoint folder of a run: ``run/best``, or the ``best`` of the seed with the lowest valid loss."""
    run = Path(run)
    if (run / "best" / "model.json").is_file():
        return run / "best"
    seeds = sorted(run.glob("seed-*/result.json"))
    if not seeds:
        raise FileNotFoundError(f"{run} is not a training run (no best/ or seed-*/result.json); run `cmamba train`")
    best = min(seeds, key=lambda p: json.loads(p.read_text())["valid"]["Loss"])
    return best.parent / "best"


def evaluate_run(
    run: str | Path, cache: str | Path, split: str = "test", missing_rate: float = 0.0, dataset: str | None = None
) -> dict[str, float]:
    """MMSA metrics of the run's best checkpoint on ``split`` of ``cache`` (Table 12 drop at ``missing_rate``)."""
    from cmamba.datasets.shards import ShardDataset

    checkpoint = best_checkpoint(run)
    model, meta = load_checkpoint(checkpoint)
    extraction = (meta.get("schema") or {}).get("extraction") or {}
    data = ShardDataset(cache, split=split, align=extraction.get("align"), modalities=tuple(model.names))
    if not len(data):
        raise ValueError(f"{cache} has no clips in split {split!r}")
    check_schema(meta["schema"], data.dims(), f"the checkpoint in {run}")
    name = dataset or json.loads((checkpoint.parent / "config.json").read_text())["train"]["dataset"]
    return evaluate(model, data, name, missing_rate=missing_rate)
