"""cmamba: raw multimodal sentiment analysis with a Coupled Mamba fusion model.

The public API, loaded on first use (PEP 562), so ``import cmamba`` stays light (no torch, dask or media libraries
until a name is used)::

    from cmamba import coupled_scan, FusionConfig, build_model, ExtractionConfig, run_extraction, ShardDataset

Kernels: ``coupled_scan``, ``coupled_scan_ref``, ``coupled_step``. Model: ``FusionConfig``, ``build_model``,
``load_checkpoint``, ``TrainConfig``, ``train``, ``train_seeds``, ``evaluate``, ``predict``, ``compute_metrics``.
Features: ``ExtractionConfig``, ``extract_clip``, ``run_extraction``. Data: ``ShardDataset``, ``training_view``,
``collate``, ``import_mmsa``, ``export_mmsa``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "coupled_scan": "cmamba.fusion.ops",
    "coupled_scan_ref": "cmamba.fusion.ops",
    "coupled_step": "cmamba.fusion.ops",
    "FusionConfig": "cmamba.fusion.config",
    "TrainConfig": "cmamba.fusion.config",
    "build_model": "cmamba.fusion.model",
    "load_checkpoint": "cmamba.fusion.checkpoint",
    "train": "cmamba.fusion.train",
    "train_seeds": "cmamba.fusion.train",
    "evaluate": "cmamba.fusion.train",
    "predict": "cmamba.fusion.train",
    "compute_metrics": "cmamba.fusion.metrics",
    "collate": "cmamba.fusion.batch",
    "ExtractionConfig": "cmamba.pipeline.config",
    "extract_clip": "cmamba.pipeline.clip",
    "run_extraction": "cmamba.pipeline.run",
    "ShardDataset": "cmamba.datasets.shards",
    "training_view": "cmamba.datasets.view",
    "import_mmsa": "cmamba.datasets.mmsa",
    "export_mmsa": "cmamba.datasets.mmsa",
}
__all__ = [
    "ExtractionConfig",
    "FusionConfig",
    "ShardDataset",
    "TrainConfig",
    "__version__",
    "build_model",
    "collate",
    "compute_metrics",
    "coupled_scan",
    "coupled_scan_ref",
    "coupled_step",
    "evaluate",
    "export_mmsa",
    "extract_clip",
    "import_mmsa",
    "load_checkpoint",
    "predict",
    "run_extraction",
    "train",
    "train_seeds",
    "training_view",
]

if TYPE_CHECKING:
    from cmamba.datasets.mmsa import export_mmsa, import_mmsa
    from cmamba.datasets.shards import ShardDataset
    from cmamba.datasets.view import training_view
    from cmamba.fusion.batch import collate
    from cmamba.fusion.checkpoint import load_checkpoint
    from cmamba.fusion.config import FusionConfig, TrainConfig
    from cmamba.fusion.metrics import compute_metrics
    from cmamba.fusion.model import build_model
    from cmamba.fusion.ops import coupled_scan, coupled_scan_ref, coupled_step
    from cmamba.fusion.train import evaluate, predict, train, train_seeds
    from cmamba.pipeline.clip import extract_clip
    from cmamba.pipeline.config import ExtractionConfig
    from cmamba.pipeline.run import run_extraction


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cmamba' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
