"""Training, evaluation, checkpoints and the DDP path (gloo, 2 processes) on tiny synthetic data."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from cmamba.datasets.memory import FeatureDataset
from cmamba.datasets.synthetic import CUE_FLIP_DIMS, cue_flip
from cmamba.errors import TrainingDivergedError
from cmamba.fusion.checkpoint import check_schema, load_checkpoint, save_checkpoint
from cmamba.fusion.config import FusionConfig, TrainConfig
from cmamba.fusion.model import build_model
from cmamba.fusion.train import drop_elements, evaluate, predict, train, train_seeds

TINY = dict(modalities=dict(CUE_FLIP_DIMS), d_model=8, d_state=4, n_layers=1, n_heads=2)
RECIPE = TrainConfig(epochs=2, batch_size=16, progress=False, patience=None)


@pytest.fixture(scope="module")
def splits():
    return cue_flip(48, 1), cue_flip(16, 2), cue_flip(16, 3)


def test_train_writes_a_complete_run_folder(tmp_path, splits):
    result = train(FusionConfig(**TINY), RECIPE, *splits[:2], tmp_path, splits[2])
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "metrics.csv", "metrics.json", "best", "result.json"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["dt_rank"] == 1 and config["train"]["seed"] == 1111 and config["versions"]["torch"]
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["valid_Loss"]) for r in rows)
    header = "epoch,train_loss,lr,seconds,input_s,step_s,valid_"
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith(header)
    assert all(0 <= r["input_s"] and 0 < r["step_s"] and r["input_s"] + r["step_s"] <= r["seconds"] for r in rows)
    assert {p.name for p in (tmp_path / "best").iterdir()} == {"model.safetensors", "model.json"}
    assert result["best_epoch"] in (1, 2)
    assert result["valid"]["Loss"] == min(r["valid_Loss"] for r in rows)  # selected on valid only
    assert set(result["test"]) >= {"Has0_acc_2", "Non0_acc_2", "Mult_acc_7", "MAE", "Corr", "Loss"}


def test_same_seed_same_training(tmp_path, splits):
    a = train(FusionConfig(**TINY), RECIPE, *splits[:2], tmp_path / "a")
    b = train(FusionConfig(**TINY), RECIPE, *splits[:2], tmp_path / "b")
    assert a["valid"] == b["valid"]


def test_seeds_are_summarised_with_mean_and_std(tmp_path, splits):
    summary = train_seeds(FusionConfig(**TINY), RECIPE, *splits[:2], tmp_path, splits[2], seeds=(1111, 1112))
    assert (tmp_path / "seed-1111" / "result.json").is_file() and (tmp_path / "seed-1112" / "result.json").is_file()
    maes = [r["test"]["MAE"] for r in summary["runs"]]
    assert summary["test"]["MAE"]["mean"] == pytest.approx(np.mean(maes))
    assert summary["test"]["MAE"]["std"] == pytest.approx(np.std(maes))
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [1111, 1112]


def test_checkpoint_round_trip_is_exact(tmp_path, splits):
    model = build_model(FusionConfig(**TINY, fusion="released", coupling="learned")).eval()
    save_checkpoint(tmp_path, model, splits[0].schema())
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["schema"]["modalities"]["text"]["dim"] == 16 and meta["versions"]["cmamba"]
    torch.testing.assert_close(predict(loaded, splits[1])[0], predict(model, splits[1])[0], rtol=0, atol=0)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".safetensors"]  # nothing to unpickle


def test_schema_mismatch_names_modality_and_dims(tmp_path, splits):
    schema = splits[0].schema()
    with pytest.raises(ValueError, match="modality 'audio' has 74 features but the checkpoint expects 8"):
        check_schema(schema, {"text": 16, "audio": 74, "vision": 8})
    with pytest.raises(ValueError, match="the features lack modality 'vision'"):
        check_schema(schema, {"text": 16, "audio": 8})
    with pytest.raises(ValueError, match=r"modalities \['depth'\] that the checkpoint does not know"):
        check_schema(schema, {"text": 16, "audio": 8, "vision": 8, "depth": 3})
    wrong = FusionConfig(**{**TINY, "modalities": {"text": 16, "audio": 74, "vision": 8}})
    with pytest.raises(ValueError, match="modality 'audio' has 8 features but the model config expects 74"):
        train(wrong, RECIPE, *splits[:2], tmp_path)


def test_nan_loss_stops_with_a_message(tmp_path, splits):
    train_set = splits[0]
    bad = FeatureDataset(train_set.features, np.full(len(train_set), np.nan))
    with pytest.raises(TrainingDivergedError, match=r"training loss became nan in epoch 1; stopping \(no checkpoint"):
        train(FusionConfig(**TINY), RECIPE, bad, splits[1], tmp_path)
    assert not (tmp_path / "best").exists()


def test_missing_rate_protocol(splits):
    x = {"text": torch.ones(4, 50, 16)}
    dropped = drop_elements(x, ["text"], 0.3, torch.Generator().manual_seed(0))["text"]
    assert abs(float((dropped == 0).float().mean()) - 0.3) < 0.02
    model = build_model(FusionConfig(**TINY))
    clean = evaluate(model, splits[1], "mosei", missing_rate=0.0)
    noisy = evaluate(model, splits[1], "mosei", missing_rate=0.7)
    assert clean["MAE"] != noisy["MAE"]
    assert evaluate(model, splits[1], "mosei", missing_rate=0.7, seed=0) == noisy  # seeded, reproducible


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_gloo_with_two_processes(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from cmamba.datasets.synthetic import cue_flip
            from cmamba.fusion.config import FusionConfig
            from cmamba.fusion.train import TrainConfig, train
            train(FusionConfig(**{TINY!r}), TrainConfig(epochs=2, batch_size=8, progress=False),
                  cue_flip(32, 1), cue_flip(8, 2), sys.argv[1])
            """
        )
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", str(script), str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert np.isfinite(result["valid"]["MAE"])


def test_ddp_over_a_training_view(tmp_path):
    """Both ranks ask for the same views at once (one builds, the other waits and maps them), and each trains on
    its half of every epoch."""
    from cmamba.datasets.synthetic import synthetic_cache

    cache = synthetic_cache(tmp_path / "cache", 60, {"text": (6, 4), "audio": (12, 3), "video": (5, 2)})
    script = tmp_path / "ddp_view.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from cmamba.app.runs import train_cache
            from cmamba.fusion.train import TrainConfig
            train_cache({str(cache)!r}, sys.argv[1], {{"d_model": 8, "d_state": 4, "n_layers": 1, "n_heads": 2}},
                        TrainConfig(dataset="mosi", epochs=2, batch_size=4, progress=False), seeds=(1,))
            """
        )
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", str(script), str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "seed-1" / "config.json").read_text())["world_size"] == 2
    assert len([p for p in (cache / "views").iterdir() if p.is_dir()]) == 3  # one view per split, built once


def test_evaluation_follows_the_amp_setting(tmp_path, splits, monkeypatch):
    """bf16 autocast on CUDA only when the recipe asks for it: predict used to enable it for every evaluation."""
    import dataclasses

    from cmamba.fusion import train as train_module

    seen, real = [], train_module._autocast
    monkeypatch.setattr(
        train_module, "_autocast", lambda device, enabled: seen.append(enabled) or real(device, enabled)
    )
    train(FusionConfig(**TINY), dataclasses.replace(RECIPE, amp=False, epochs=1), *splits[:2], tmp_path)
    assert seen and not any(seen)
