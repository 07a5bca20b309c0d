"""Checkpoints: ``model.safetensors`` (weights) + ``model.json`` (config, feature schema, versions).

Loading never unpickles anything. ``check_schema`` refuses features whose modalities or dims differ from the
ones the model was trained on, naming the modality and both dims.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from cmamba.errors import CheckpointError
from cmamba.fusion.config import FusionConfig
from cmamba.fusion.model import FusionModel, build_model
from cmamba.io import atomic_path, atomic_write, json_text, tool_versions

WEIGHTS, META = "model.safetensors", "model.json"


def save_checkpoint(directory: str | Path, model: FusionModel, schema: dict | None = None, **extra) -> Path:
    """Write the checkpoint folder; ``schema`` defaults to the config's modality dims."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    schema = schema or {"modalities": {n: {"dim": d} for n, d in model.config.modalities.items()}}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_model(model, str(tmp))
    meta = {"format": "cmamba-checkpoint", "config": model.config.to_dict(), "schema": schema,
            "versions": tool_versions()}  # fmt: skip
    atomic_write(directory / META, json_text({**meta, **extra}))
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[FusionModel, dict]:
    """(model in eval mode, metadata) from a checkpoint folder written by ``save_checkpoint``."""
    directory = Path(directory)
    for name in (WEIGHTS, META):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a cmamba checkpoint: {name} is missing")
    try:
        meta = json.loads((directory / META).read_text())
        model = build_model(FusionConfig.from_dict(meta["config"]))
        load_model(model, str(directory / WEIGHTS), device=str(device))
    except Exception as exc:  # safetensors raises its own error type; a hand-edited model.json a KeyError
        raise CheckpointError(f"{directory} is a damaged or incomplete checkpoint ({type(exc).__name__}: {exc}); "
                              "train again, or point at another run or checkpoint") from exc  # fmt: skip
    return model.to(device).eval(), meta


def check_schema(schema: dict, dims: dict[str, int], where: str = "the checkpoint") -> None:
    """Raise if feature ``dims`` ({modality: dim}) differ from ``schema``'s modalities."""
    expected = {n: spec["dim"] for n, spec in schema["modalities"].items()}
    for name, want in expected.items():
        if name not in dims:
            raise ValueError(f"the features lack modality {name!r} ({want}-d), which {where} was trained on")
        if dims[name] != want:
            raise ValueError(
                f"modality {name!r} has {dims[name]} features but {where} expects {want}; "
                "extract the features with the same extractors and settings the model was trained with"
            )
    extra = sorted(set(dims) - set(expected))
    if extra:
        raise ValueError(f"the features have modalities {extra} that {where} does not know (it has {sorted(expected)})")
