"""The batch the fusion model consumes, and ``collate``, which builds it from samples.

A sample is ``{"features": {name: (L_m, D_m) float32}, "present": {name: bool}, "label": float, "id": str}``
(what ``FeatureDataset`` and ``ShardDataset`` yield); a batch is ``{name: (B, L, D_m), "lengths": {name: (B,)},
"present": {name: (B,) bool}, "labels": (B,), "ids": [str]}``.
"""

from __future__ import annotations

import numpy as np
import torch


def collate(samples: list[dict], padding: str = "right") -> dict:
    """Pad each modality to the longest sample: {name: (B, L, D), "lengths", "present", "labels", "ids"}.

    cmamba's models read the valid prefix (``padding="right"``, what ``train`` uses); ``padding="left"`` puts
    the padding first, as MulT-style models expect — pass ``functools.partial(collate, padding="left")``.
    """
    if padding not in ("right", "left"):
        raise ValueError(f"padding={padding!r}: choose 'right' or 'left'")
    names = list(samples[0]["features"])
    batch: dict = {"lengths": {}, "present": {}}
    for name in names:
        seqs = [s["features"][name] for s in samples]
        lengths = torch.tensor([len(x) for x in seqs])
        dim = next(x.shape[1] for x in seqs)
        padded = np.zeros((len(seqs), max(1, int(lengths.max())), dim), np.float32)
        for i, x in enumerate(seqs):
            if padding == "right":
                padded[i, : len(x)] = x
            elif len(x):
                padded[i, -len(x) :] = x
        batch[name] = torch.from_numpy(padded)
        batch["lengths"][name] = lengths
        batch["present"][name] = torch.tensor([s["present"][name] for s in samples])
    batch["labels"] = torch.tensor([s["label"] for s in samples])
    batch["ids"] = [s["id"] for s in samples]
    return batch
