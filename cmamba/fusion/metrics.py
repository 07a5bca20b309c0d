"""Evaluation metrics with exactly MMSA's definitions and key names (MMSA ``utils/metricsTop.py``).

Every value is rounded to 4 decimals, as MMSA does; tables usually show them ×100.

MOSI / MOSEI regression (predictions and labels flattened):
    Has0_acc_2, Has0_F1_score   label >= 0 vs < 0 over all samples (zero counts as positive)
    Non0_acc_2, Non0_F1_score   samples with label == 0 removed, then > 0 vs < 0
    Mult_acc_5, Mult_acc_7      clip both to [-2, 2] / [-3, 3], np.round (half to even), exact match
    MAE, Corr                   on the unclipped values; Corr is Pearson (np.corrcoef)
SIMS / SIMSv2 regression (both clipped to [-1, 1]):
    Mult_acc_2  bins (-1.01, 0], (0, 1.01]           (zero counts as negative)
    Mult_acc_3  bins (-1.01, -0.1], (-0.1, 0.1], (0.1, 1.01]
    Mult_acc_5  bins (-1.01, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1.01]
    F1_score    weighted F1 on the Mult_acc_2 bins; MAE, Corr on the clipped values
Classification (3 classes: 0 negative, 1 neutral, 2 positive; predictions are logits (N, 3)):
    Acc_3, F1_score_3; Has0_* (argmax over the [negative, positive] logits vs label <= 1 → 0, else 1) and Non0_*
    (neutral samples removed). MMSA's Non0 compares labels {0, 2} with predictions {0, 1} without remapping, so
    positives never count as correct; ``mmsa_compat=True`` reproduces that quirk (the paper's Tables 3, 4, 13),
    the default remaps 2 → 1 and is a real binary accuracy.
All F1 scores are sklearn's ``average="weighted"``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

from cmamba.constants import DATASETS, TASKS

_SIMS_BINS = {
    "Mult_acc_2": [-1.01, 0.0, 1.01],
    "Mult_acc_3": [-1.01, -0.1, 0.1, 1.01],
    "Mult_acc_5": [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01],
}


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in values.items()}


def _exact_match(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.round(preds) == np.round(labels)))


def _binary(preds: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    return accuracy_score(labels, preds), f1_score(labels, preds, average="weighted")


def _pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.corrcoef(preds, labels)[0][1])


def _mosi_regression(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    nonzero = labels != 0
    has0_acc, has0_f1 = _binary(preds >= 0, labels >= 0)
    non0_acc, non0_f1 = _binary(preds[nonzero] > 0, labels[nonzero] > 0)
    return {
        "Has0_acc_2": has0_acc,
        "Has0_F1_score": has0_f1,
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Mult_acc_5": _exact_match(np.clip(preds, -2, 2), np.clip(labels, -2, 2)),
        "Mult_acc_7": _exact_match(np.clip(preds, -3, 3), np.clip(labels, -3, 3)),
        "MAE": float(np.mean(np.abs(preds - labels))),
        "Corr": _pearson(preds, labels),
    }


def _bin(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Index i of the half-open bin (edges[i], edges[i+1]] each value falls in."""
    out = np.zeros_like(values)
    for i in range(len(edges) - 1):
        out[(values > edges[i]) & (values <= edges[i + 1])] = i
    return out


def _sims_regression(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    preds, labels = np.clip(preds, -1.0, 1.0), np.clip(labels, -1.0, 1.0)
    results = {name: _exact_match(_bin(preds, e), _bin(labels, e)) for name, e in _SIMS_BINS.items()}
    two = _SIMS_BINS["Mult_acc_2"]
    results["F1_score"] = f1_score(_bin(labels, two), _bin(preds, two), average="weighted")
    results["MAE"] = float(np.mean(np.abs(preds - labels)))
    results["Corr"] = _pearson(preds, labels)
    return results


def _classification(logits: np.ndarray, labels: np.ndarray, mmsa_compat: bool) -> dict[str, float]:
    labels = labels.astype(np.int64)
    pred_3 = logits.argmax(1)
    pred_2 = logits[:, [0, 2]].argmax(1)  # negative vs positive logit
    has0_acc, has0_f1 = _binary(pred_2, (labels > 1).astype(np.int64))
    keep = labels != 1
    non0_truth = labels[keep] if mmsa_compat else (labels[keep] == 2).astype(np.int64)
    non0_acc, non0_f1 = _binary(pred_2[keep], non0_truth)
    return {
        "Has0_acc_2": has0_acc,
        "Has0_F1_score": has0_f1,
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Acc_3": accuracy_score(labels, pred_3),
        "F1_score_3": f1_score(labels, pred_3, average="weighted"),
    }


def compute_metrics(
    preds, labels, dataset: str, task: str = "regression", mmsa_compat: bool = False
) -> dict[str, float]:
    """MMSA's metrics for ``dataset`` in {"mosi", "mosei", "sims", "simsv2"}.

    preds: (N,) regression outputs, or (N, 3) logits for classification; labels: (N,) (class ids 0/1/2 for
    classification). Tensors or arrays. Returns the metric dict with MMSA's key names, rounded to 4 decimals.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not one of {DATASETS}")
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {TASKS}")
    preds, labels = _numpy(preds), _numpy(labels).reshape(-1)
    if task == "classification":
        if preds.ndim != 2 or preds.shape[1] != 3 or len(preds) != len(labels):
            raise ValueError(f"classification needs logits (N, 3) and labels (N,); got {preds.shape}, {labels.shape}")
        return _rounded(_classification(preds, labels, mmsa_compat))
    preds = preds.reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"preds has {preds.size} values but labels has {labels.size}")
    if dataset in ("mosi", "mosei"):
        return _rounded(_mosi_regression(preds, labels))
    return _rounded(_sims_regression(preds, labels))
