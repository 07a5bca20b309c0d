"""An in-memory feature dataset yielding the samples ``cmamba.fusion.batch.collate`` turns into batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset


class FeatureDataset(Dataset):
    """Samples of per-modality feature sequences with a label.

    features: {modality: sequence of (L_i, D) arrays}; labels: (N,) floats (or class ids); optional
    present: {modality: (N,) bool} (default: the sequence is non-empty); ids: N strings.
    ``schema()`` describes the features (names, dims, label range) for checkpoints.
    """

    def __init__(
        self,
        features: Mapping[str, Sequence[np.ndarray]],
        labels: Sequence[float],
        present: Mapping[str, Sequence[bool]] | None = None,
        ids: Sequence[str] | None = None,
    ):
        self.names = list(features)
        self.features = {n: [np.asarray(x, dtype=np.float32) for x in seqs] for n, seqs in features.items()}
        self.labels = np.asarray(labels, dtype=np.float32)
        n = len(self.labels)
        for name, seqs in self.features.items():
            if len(seqs) != n:
                raise ValueError(f"modality {name!r} has {len(seqs)} samples but there are {n} labels")
            dims = {x.shape[-1] for x in seqs if x.ndim == 2}
            if any(x.ndim != 2 for x in seqs) or len(dims) > 1:
                raise ValueError(f"modality {name!r}: every sample must be a (length, dim) array of one dim")
        self.present = {
            name: np.asarray(present[name], dtype=bool)
            if present and name in present
            else np.array([len(x) > 0 for x in seqs])
            for name, seqs in self.features.items()
        }
        self.ids = list(ids) if ids is not None else [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "features": {n: self.features[n][i] for n in self.names},
            "present": {n: bool(self.present[n][i]) for n in self.names},
            "label": float(self.labels[i]),
            "id": self.ids[i],
        }

    def dims(self) -> dict[str, int]:
        return {n: int(next((x.shape[1] for x in seqs), 0)) for n, seqs in self.features.items()}

    def schema(self) -> dict:
        return {
            "modalities": {n: {"dim": d} for n, d in self.dims().items()},
            "label_range": [float(self.labels.min()), float(self.labels.max())] if len(self.labels) else None,
        }
