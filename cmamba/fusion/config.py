"""``FusionConfig`` (the fusion model's architecture knobs) and ``TrainConfig`` (the training recipe), both with
the Coupled Mamba paper's defaults. Plain dataclasses: importing this module loads no torch."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmamba.constants import DATASETS, TASKS, VIEW_DTYPES

FUSIONS = ("coupled", "mamba", "average", "concat", "cross_attention", "released")
COUPLINGS = ("mean", "sum", "none", "learned")
POOLINGS = ("max", "mean")


@dataclass(frozen=True)
class FusionConfig:
    """Fusion model configuration. Round-trips through JSON (``to_json`` / ``from_json``).

    ``modalities`` maps each modality name to its input feature dim, e.g. {"text": 768, "audio": 74, "vision": 35};
    any number M >= 1 of modalities. ``fusion`` picks the architecture:

    - ``coupled``: Coupled Mamba layers (one block per modality, states coupled by ``coupling`` at every step)
    - ``mamba``: one independent Mamba chain per modality (coupling "none", no "Cat"; the paper's "Mamba Fusion")
    - ``average`` / ``concat``: early fusion of the projected modalities into a single Mamba stack
    - ``cross_attention``: MulT-style crossmodal transformer at the same d_model (the paper's Table 8 baseline)
    - ``released``: the authors' public code: independent chains + between-layer concat→Linear "Cat" and a shared
      post-LayerNorm

    ``coupling`` ("mean", "sum" = the paper's literal Eq. 6, "none", "learned" = convex weights per layer) applies
    to ``fusion="coupled"`` only.
    """

    modalities: dict[str, int]
    fusion: str = "coupled"
    coupling: str = "mean"
    task: str = "regression"
    num_classes: int | None = None  # None: 1 output for regression, 3 classes (MMSA) for classification
    d_model: int = 128
    d_state: int = 64
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | None = None  # None: ceil(d_model / 8) = 16, the released code's "Δ" (paper: "d_state/8")
    n_layers: int = 3
    enhance: bool = True  # cross-layer "Cat": each modality adds Linear(concat of the others) between layers
    # LayerNorm (one, shared by all blocks) on each Mamba block's output before the residual add, as the released
    # code does (Algorithm 1 has none). On by default: on the synthetic ablation task it trains markedly better.
    # fusion="released" always uses it.
    post_norm: bool = True
    seq_len: int = 50  # common length unaligned modalities are averaged onto (the paper's resampling)
    pooling: str = "max"
    head_hidden: int = 64
    n_heads: int = 4  # cross_attention only
    dropout: float = 0.0  # the paper trains without dropout
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata carried into checkpoints

    def __post_init__(self):
        if not isinstance(self.modalities, dict) or not self.modalities:
            raise ValueError("modalities must map each modality name to its feature dim, e.g. {'text': 768}")
        for name, dim in self.modalities.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"modality names must be non-empty strings, got {name!r}")
            if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
                raise ValueError(f"modalities[{name!r}] = {dim!r}: feature dims must be positive integers")
        for key, value, allowed in (
            ("fusion", self.fusion, FUSIONS),
            ("coupling", self.coupling, COUPLINGS),
            ("task", self.task, TASKS),
            ("pooling", self.pooling, POOLINGS),
        ):
            if value not in allowed:
                raise ValueError(f"{key}={value!r} is not one of {allowed}")
        for key in ("d_model", "d_state", "expand", "d_conv", "n_layers", "seq_len", "head_hidden", "n_heads"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.num_classes is not None and (self.task == "regression") != (self.num_classes == 1):
            raise ValueError(f"num_classes={self.num_classes} does not fit task={self.task!r}")
        if not (isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 8)

    @property
    def outputs(self) -> int:
        if self.num_classes is not None:
            return self.num_classes
        return 1 if self.task == "regression" else 3

    def resolved(self) -> FusionConfig:
        """A copy with every derived value filled in (what a run actually used); self is left unchanged."""
        return dataclasses.replace(self, dt_rank=self.resolved_dt_rank, num_classes=self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown FusionConfig keys {sorted(unknown)}; valid: {[f.name for f in dataclasses.fields(cls)]}"
            )
        return cls(**data)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> FusionConfig:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))


DEFAULT_SEEDS = (1111, 1112, 1113, 1114, 1115)


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe; defaults from the paper (batch size: 1024 MOSEI, 128 SIMS, 256 SIMSv2)."""

    dataset: str = "mosei"  # which metric family to report: mosi | mosei | sims | simsv2
    epochs: int = 150
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 5e-4
    lr_step: int = 50
    lr_gamma: float = 0.5
    patience: int | None = 8  # epochs without a better valid loss before stopping; None: never stop early
    seed: int = 1111
    deterministic: bool = False
    amp: bool = True  # bf16 autocast, on CUDA only
    device: str = "auto"
    progress: bool = True
    view: bool = True  # `train_cache` reads the splits through training views; false: streams the shards
    view_dtype: str = "float32"  # how those views store features: float32 | float16 (half the size)
    input_threads: int = 1  # threads gathering the next batches from a training view while a step runs (0: none)

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is not one of {DATASETS}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if self.patience is not None and self.patience < 0:
            raise ValueError(f"patience must be >= 0 (or none), got {self.patience}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not 0 <= self.input_threads <= 32:
            raise ValueError(f"input_threads must lie in [0, 32], got {self.input_threads}")
        if self.view_dtype not in VIEW_DTYPES:
            raise ValueError(f"view_dtype must be one of {VIEW_DTYPES}, got {self.view_dtype!r}")
