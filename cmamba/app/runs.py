"""Training runs, the library functions behind ``cmamba train`` and ``cmamba evaluate``.

train_cache(CACHE, RUN)             train (one run per seed) on a cache's train/valid/test splits
open_run(RUN)                       a trained run's best checkpoint, model and recorded extraction (align, clock)
evaluate_run(RUN, CACHE)            MMSA metrics of a trained run on a cache split (optionally with missing data)

``evaluate`` and ``score`` open a run the same way (``open_run``), so both read features on the checkpoint's
own time axis (its alignment and clock rate).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmamba.constants import SPLITS
from cmamba.errors import OutputExistsError
from cmamba.fusion.checkpoint import check_schema, load_checkpoint
from cmamba.fusion.config import DEFAULT_SEEDS, FusionConfig, TrainConfig
from cmamba.fusion.model import FusionModel
from cmamba.fusion.train import evaluate, train_seeds


def _splits(cache: str | Path, align: str | None, label: str = "label", view: bool = True,
            view_dtype: str = "float32") -> dict[str, Any]:  # fmt: skip
    """The splits with clips, as training views (built on first use, memory-mapped; features stored as
    ``view_dtype``) or, with ``view=False``, streamed from the shards."""
    from cmamba.datasets.shards import ShardDataset
    from cmamba.datasets.view import training_view

    by_split = read_split_counts(cache)
    missing = [s for s in SPLITS[:2] if not by_split.get(s)]
    if missing:
        raise ValueError(f"{cache} has no clips in split(s) {missing} (it has {by_split}); label the splits first")
    present = [s for s in SPLITS if by_split.get(s)]
    if view:
        return {s: training_view(cache, split=s, align=align, label=label, dtype=view_dtype) for s in present}
    return {s: ShardDataset(cache, split=s, align=align, label=label) for s in present}


def read_split_counts(cache: str | Path) -> dict[str, int]:
    """Clips per split, from the cache's manifest."""
    from cmamba.pipeline.cache.store import read_manifest

    return read_manifest(cache)["counts"]["by_split"]


def train_cache(
    cache: str | Path,
    out: str | Path,
    model: Mapping[str, Any] | None = None,
    train: TrainConfig | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    align: str | None = None,
    overwrite: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one model per seed on the cache's splits into ``out/seed-<seed>``; returns ``out/summary.json``.

    model: FusionConfig fields other than ``modalities`` (taken from the cache); train: the recipe. A run folder
    belongs to one training: a non-empty ``out`` is refused unless ``overwrite`` (which empties it first).
    settings: the resolved config to save as ``out/cmamba-config.json``. The splits are read through training
    views (``cmamba.datasets.view``: built once, then memory speed; stored as ``train.view_dtype``) unless
    ``train.view`` is false, which streams the shards.
    """
    train = train or TrainConfig()
    sets = _splits(cache, align, view=train.view, view_dtype=train.view_dtype)
    model_config = FusionConfig(modalities=sets["train"].dims(), **dict(model or {}))
    out = Path(out)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun the other ranks must not see rank 0's first files
        claim_run_folder(out, overwrite)
    if settings is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "cmamba-config.json").write_text(json.dumps(dict(settings), indent=2))
    return train_seeds(model_config, train, sets["train"], sets["valid"], out, sets.get("test"),
                       tuple(seeds))  # fmt: skip


RUN_FILES = ("summary.json", "cmamba-config.json")  # with seed-*/ folders and cmamba-*.log: what a run folder holds


def claim_run_folder(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that already holds a training (its old seeds would mix with the new ones), or empty it
    when ``overwrite``; a folder holding anything else is never emptied. Log files (this command's among them)
    stay."""
    if not out.is_dir():
        return
    held = [p for p in out.iterdir() if not (p.name.startswith("cmamba-") and p.name.endswith(".log"))]
    if not held:
        return
    foreign = sorted(p.name for p in held if p.name not in RUN_FILES and not p.name.startswith("seed-"))
    if foreign:
        raise OutputExistsError(f"{out} holds files that are not a training run's ({', '.join(foreign[:3])}); "
                                "choose an empty or new --out")  # fmt: skip
    if not overwrite:
        raise OutputExistsError(f"{out} already holds a training run; choose another --out, or pass --overwrite to "
                                "delete it first")  # fmt: skip
    for path in held:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def best_checkpoint(run: str | Path) -> Path:
    """The checkpoint folder of a run: ``run`` itself when it is a checkpoint folder, ``run/best``, or the ``best``
    of the seed with the lowest valid loss (only the seeds the run's ``summary.json`` lists, when it has one)."""
    run = Path(run)
    if (run / "model.json").is_file():
        return run
    if (run / "best" / "model.json").is_file():
        return run / "best"
    results = sorted(run.glob("seed-*/result.json"))
    if (run / "summary.json").is_file():
        listed = {f"seed-{s}" for s in json.loads((run / "summary.json").read_text()).get("seeds", [])}
        results = [p for p in results if p.parent.name in listed]
    if not results:
        raise FileNotFoundError(f"{run} is not a training run (no best/ or seed-*/result.json); run `cmamba train`")
    best = min(results, key=lambda p: _valid_loss(json.loads(p.read_text())))
    return best.parent / "best"


def _valid_loss(result: dict[str, Any]) -> float:
    loss = result["valid"]["Loss"]
    return math.inf if loss is None else loss  # null: the loss was not finite (results are strict JSON)


@dataclass
class TrainedRun:
    """A trained run opened for use: its best checkpoint's model (eval mode) and metadata."""

    path: Path
    checkpoint: Path
    model: FusionModel
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def extraction(self) -> dict[str, Any]:
        """How the training features were made (config, align, clock rate, extractors); {} for in-memory data."""
        return (self.meta.get("schema") or {}).get("extraction") or {}

    @property
    def train_config(self) -> dict[str, Any]:
        """The seed's resolved training recipe (``config.json`` beside the checkpoint); {} when absent."""
        path = self.checkpoint.parent / "config.json"
        return json.loads(path.read_text()).get("train", {}) if path.is_file() else {}

    def read(self, cache: str | Path, split: str | None = None, require_labels: bool = True) -> Any:
        """A ``ShardDataset`` over ``cache`` on the checkpoint's own time axis (alignment and clock rate) with
        the model's modalities; refuses a cache whose feature dims differ from the checkpoint's."""
        from cmamba.datasets.shards import ShardDataset

        data = ShardDataset(cache, split=split, align=self.extraction.get("align"), modalities=tuple(self.model.names),
                            clock_rate=self.extraction.get("clock_rate"), require_labels=require_labels)  # fmt: skip
        check_schema(self.meta["schema"], data.dims(), f"the checkpoint {self.checkpoint}")
        return data


def open_run(run: str | Path) -> TrainedRun:
    """The run folder ``run`` (or a checkpoint folder) with its best checkpoint loaded (``best_checkpoint``)."""
    checkpoint = best_checkpoint(run)
    model, meta = load_checkpoint(checkpoint)
    return TrainedRun(Path(run), checkpoint, model, meta)


def evaluate_run(
    run: str | Path, cache: str | Path, split: str = "test", missing_rate: float = 0.0, dataset: str | None = None
) -> dict[str, float]:
    """MMSA metrics of the run's best checkpoint on ``split`` of ``cache`` (Table 12 drop at ``missing_rate``),
    reading the cache exactly as the checkpoint was trained (its alignment and clock rate)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    trained = open_run(run)
    data = trained.read(cache, split=split)
    if not len(data):
        raise ValueError(f"{cache} has no clips in split {split!r}")
    name = dataset or trained.train_config.get("dataset")
    if name is None:
        raise ValueError(
            f"{trained.checkpoint.parent} has no config.json naming the run's dataset; pass the metric conventions "
            "explicitly (evaluate_run(..., dataset='mosi'))"
        )
    return evaluate(trained.model, data, name, missing_rate=missing_rate)
