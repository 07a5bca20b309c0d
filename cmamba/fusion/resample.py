"""Length-aware segment averaging: bring a padded sequence to a fixed number of steps.

The released Coupled Mamba code averages equal-width segments of the *padded* array, so zero padding leaks
into the features of short clips. Here each sample's valid prefix [0, length) is cut into ``steps`` equal
segments and every output step is the exact area average of the frames its segment overlaps (frame p covers
[p, p+1)); padding never contributes. A sample shorter than ``steps`` is stretched (segments inside one frame
copy it).
"""

from __future__ import annotations

import torch


def segment_weights(lengths: torch.Tensor, max_len: int, steps: int) -> torch.Tensor:
    """(batch, steps, max_len) averaging weights; row j of sample b averages segment j of [0, lengths[b]).

    Rows of a sample with length 0 are all zero.
    """
    lengths = lengths.to(torch.float64)
    j = torch.arange(steps, dtype=torch.float64, device=lengths.device)
    start = j[None, :] * lengths[:, None] / steps  # (batch, steps)
    end = (j[None, :] + 1) * lengths[:, None] / steps
    p = torch.arange(max_len, dtype=torch.float64, device=lengths.device)
    overlap = (torch.minimum(end[..., None], p + 1) - torch.maximum(start[..., None], p)).clamp_min(0)
    width = (end - start)[..., None]
    return torch.where(width > 0, overlap / width.clamp_min(1e-12), torch.zeros_like(overlap))


def resample(x: torch.Tensor, lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """x: (batch, L, D) right-padded, lengths: (batch,) → (batch, steps, D)."""
    weights = segment_weights(lengths, x.shape[1], steps).to(x.dtype)
    return torch.bmm(weights, x)
