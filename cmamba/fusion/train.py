"""Training and evaluation (library functions; the CLI wraps them).

Recipe (the paper's, MMSA's selection rule): L1 loss (regression) or cross-entropy (classification), Adam
lr 5e-4 with weight decay 5e-4 (not on A_log / D), StepLR(50, 0.5) per epoch, model selection on the
validation loss only, early stopping. Seeds 1111-1115 with mean ± std. Under ``torchrun`` (WORLD_SIZE > 1)
training runs with DistributedDataParallel (NCCL on CUDA, gloo on CPU); only rank 0 writes files.

A run folder holds ``config.json`` (resolved model and training config, feature schema, versions),
``metrics.csv`` / ``metrics.json`` (one row per epoch: losses, learning rate, ``seconds`` of the epoch with its
validation, of which ``input_s`` waiting for batches and ``step_s`` in the training steps; on CUDA the copies to
the device run asynchronously and count in ``step_s``), ``best/`` (the selected checkpoint) and
``result.json`` (valid and test metrics of the best checkpoint).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import math
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from cmamba.errors import TrainingDivergedError
from cmamba.fusion.batch import collate
from cmamba.fusion.checkpoint import check_schema, load_checkpoint, save_checkpoint
from cmamba.fusion.config import DEFAULT_SEEDS, FusionConfig, TrainConfig
from cmamba.fusion.metrics import compute_metrics
from cmamba.fusion.model import FusionModel, build_model
from cmamba.io import json_text, tool_versions


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def sentiment_classes(labels: torch.Tensor) -> torch.Tensor:
    """MMSA's 3 classes from sentiment scores: negative → 0, zero → 1, positive → 2."""
    return (labels > 0).long() + (labels >= 0).long()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    count = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise ValueError(f"device {name!r} is not available: this machine has {count} CUDA device(s); use "
                         'device = "auto" (a GPU when there is one) or "cpu"')  # fmt: skip
    return device


def _to_device(batch: dict, device: torch.device) -> dict:
    """``batch`` on ``device``; float16 features (a float16 training view: half the bytes to copy) become float32
    there."""

    def move(x):
        if isinstance(x, torch.Tensor):
            x = x.to(device, non_blocking=True)
            return x.float() if x.dtype == torch.float16 else x
        return {k: move(v) for k, v in x.items()} if isinstance(x, dict) else x

    return {k: move(v) for k, v in batch.items()}


def _loss(model: FusionModel, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if model.config.task == "classification":
        return F.cross_entropy(out.float(), sentiment_classes(labels))
    return F.l1_loss(out.float(), labels)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def drop_elements(batch: dict, names: list[str], missing_rate: float, generator: torch.Generator) -> dict:
    """The paper's Table 12 protocol: multiply every input by an element-wise Bernoulli(1 - rate) keep mask."""
    if missing_rate <= 0:
        return batch
    out = dict(batch)
    for name in names:
        x = batch[name]
        keep = torch.rand(x.shape, generator=generator) >= missing_rate
        out[name] = x * keep.to(x.device, x.dtype)
    return out


def _batches(dataset: Dataset, batch_size: int, device: torch.device) -> Iterator[dict]:
    """``dataset`` in order, in batches: gathered whole from a training view, collated sample by sample otherwise."""
    if hasattr(dataset, "loader"):
        return dataset.loader(batch_size, shuffle=False, workers=1, pin_memory=device.type == "cuda")
    return iter(DataLoader(dataset, batch_size=batch_size, collate_fn=collate))


@torch.no_grad()
def predict(model: FusionModel, dataset: Dataset, batch_size: int = 256, device: str = "auto",
            missing_rate: float = 0.0, seed: int = 0,
            amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(outputs, labels) over ``dataset``; ``missing_rate`` applies the Table 12 element-wise drop; ``amp``: bf16
    autocast on CUDA (as ``TrainConfig.amp`` for training; False keeps float32)."""
    if not 0.0 <= missing_rate <= 1.0:  # also refuses NaN
        raise ValueError(f"missing_rate must lie in [0, 1], got {missing_rate}")
    dev = _device(device)
    model = model.to(dev).eval()
    generator = torch.Generator().manual_seed(seed)
    outs, labels = [], []
    for batch in _batches(dataset, batch_size, dev):
        batch = drop_elements(batch, model.names, missing_rate, generator)
        with _autocast(dev, amp):
            outs.append(model(_to_device(batch, dev)).float().cpu())
        labels.append(batch["labels"])
    return torch.cat(outs), torch.cat(labels)


def evaluate(model: FusionModel, dataset: Dataset, dataset_name: str, batch_size: int = 256, device: str = "auto",
             missing_rate: float = 0.0, seed: int = 0, mmsa_compat: bool = False,
             amp: bool = True) -> dict[str, float]:  # fmt: skip
    """MMSA metrics of ``model`` on ``dataset`` plus its ``Loss`` (L1 or cross-entropy); ``amp`` as ``predict``."""
    outs, labels = predict(model, dataset, batch_size, device, missing_rate, seed, amp)
    task = model.config.task
    targets = sentiment_classes(labels) if task == "classification" else labels
    metrics = compute_metrics(outs, targets, dataset_name, task, mmsa_compat)
    metrics["Loss"] = round(float(_loss(model, outs, labels)), 6)
    return metrics


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for p in model.parameters() if not getattr(p, "_no_weight_decay", False)]
    no_decay = [p for p in model.parameters() if getattr(p, "_no_weight_decay", False)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    (run_dir / "metrics.json").write_text(json_text(rows, indent=1))
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def train(model_config: FusionConfig, train_config: TrainConfig, train_set: Dataset, valid_set: Dataset,
          run_dir: str | Path, test_set: Dataset | None = None) -> dict:  # fmt: skip
    """Train one model, select it on ``valid_set``, write the run folder; returns ``result.json``'s content."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    device = _device(train_config.device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    seed_everything(train_config.seed, train_config.deterministic)
    run_dir = Path(run_dir)
    schema = train_set.schema() if hasattr(train_set, "schema") else None
    if schema:
        check_schema({"modalities": {n: {"dim": d} for n, d in model_config.modalities.items()}},
                     {n: s["dim"] for n, s in schema["modalities"].items()}, "the model config")  # fmt: skip
    model = build_model(model_config).to(device)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {"model": model.config.to_dict(), "train": dataclasses.asdict(train_config), "schema": schema,
                  "versions": tool_versions(), "world_size": dist.get_world_size() if distributed else 1}  # fmt: skip
        (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    generator = torch.Generator().manual_seed(train_config.seed)
    sampler = DistributedSampler(train_set, seed=train_config.seed) if distributed else None
    if sampler is None and hasattr(train_set, "sampler"):  # a streaming dataset's locality-preserving shuffle
        sampler = train_set.sampler(generator)
    loader = DataLoader(train_set, batch_size=train_config.batch_size, shuffle=sampler is None, sampler=sampler,
                        collate_fn=collate, generator=generator)  # fmt: skip

    def batches(epoch: int) -> Iterator[dict]:
        if hasattr(train_set, "loader"):  # a training view gathers whole batches from memory-mapped arrays
            world = dist.get_world_size() if distributed else 1
            return train_set.loader(train_config.batch_size, shuffle=True, seed=train_config.seed * 100_003 + epoch,
                                    rank=rank, world_size=world, workers=train_config.input_threads,
                                    pin_memory=device.type == "cuda")  # fmt: skip
        return iter(loader)

    optimizer = torch.optim.Adam(_param_groups(model, train_config.weight_decay), lr=train_config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, train_config.lr_step, train_config.lr_gamma)
    best_loss, best_epoch, rows = math.inf, 0, []
    epochs = tqdm(range(1, train_config.epochs + 1), desc="epochs", disable=not train_config.progress or rank != 0)
    for epoch in epochs:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        net.train()
        start, total, count, waited = time.perf_counter(), 0.0, 0, 0.0
        feed = batches(epoch)
        while True:  # the time spent waiting for input, apart from the steps (``input_s`` in metrics.json)
            ready = time.perf_counter()
            batch = next(feed, None)
            if batch is None:
                break
            batch = _to_device(batch, device)
            waited += time.perf_counter() - ready
            with _autocast(device, train_config.amp):
                loss = _loss(model, net(batch), batch["labels"])
            if not torch.isfinite(loss):
                kept = (f"the best checkpoint so far (epoch {best_epoch}) is in {run_dir / 'best'}" if best_epoch
                        else "no checkpoint was saved")  # fmt: skip
                raise TrainingDivergedError(
                    f"the training loss became {float(loss.detach())} in epoch {epoch}; stopping ({kept}). Check "
                    "the labels and features for NaN or infinite values, or lower the learning rate (train.lr)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch["labels"])
            count += len(batch["labels"])
        scheduler.step()
        trained = time.perf_counter() - start
        valid = evaluate(model, valid_set, train_config.dataset, device=str(device), amp=train_config.amp)
        row = {"epoch": epoch, "train_loss": round(total / count, 6), "lr": scheduler.get_last_lr()[0]}
        row.update(seconds=round(time.perf_counter() - start, 3), input_s=round(waited, 3),
                   step_s=round(trained - waited, 3), **{f"valid_{k}": v for k, v in valid.items()})  # fmt: skip
        rows.append(row)
        if valid["Loss"] < best_loss:
            best_loss, best_epoch = valid["Loss"], epoch
            if rank == 0:
                save_checkpoint(run_dir / "best", model, schema, epoch=epoch, valid=valid)
        if rank == 0:
            _write_metrics(run_dir, rows)
        epochs.set_postfix(loss=row["train_loss"], valid=valid["Loss"], best=best_epoch)
        if train_config.patience is not None and epoch - best_epoch >= train_config.patience:
            break
    if distributed:
        dist.barrier()
    best, _ = load_checkpoint(run_dir / "best", device)
    scores = functools.partial(evaluate, best, dataset_name=train_config.dataset, device=str(device),
                               amp=train_config.amp)  # fmt: skip
    result = {"best_epoch": best_epoch, "epochs_run": len(rows), "seed": train_config.seed, "valid": scores(valid_set)}
    if test_set is not None:
        result["test"] = scores(test_set)
    if rank == 0:
        (run_dir / "result.json").write_text(json_text(result))
    if distributed:
        dist.barrier()
    return result


def summarize(results: list[dict], split: str) -> dict[str, dict[str, float]]:
    """mean and (population) std over seeds of every metric of ``split`` ("valid" or "test")."""
    keys = results[0][split].keys()
    return {
        k: {
            "mean": float(np.mean([r[split][k] for r in results])),
            "std": float(np.std([r[split][k] for r in results])),
        }
        for k in keys
    }


def train_seeds(model_config: FusionConfig, train_config: TrainConfig, train_set: Dataset, valid_set: Dataset,
                run_dir: str | Path, test_set: Dataset | None = None,
                seeds: tuple[int, ...] = DEFAULT_SEEDS) -> dict:  # fmt: skip
    """``train`` once per seed into ``run_dir/seed-<seed>``; writes and returns ``summary.json`` (mean ± std)."""
    run_dir = Path(run_dir)
    results = [
        train(
            model_config,
            dataclasses.replace(train_config, seed=s),
            train_set,
            valid_set,
            run_dir / f"seed-{s}",
            test_set,
        )
        for s in seeds
    ]
    summary = {"seeds": list(seeds), "runs": results, "valid": summarize(results, "valid")}
    if test_set is not None:
        summary["test"] = summarize(results, "test")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json_text(summary))
    return summary
