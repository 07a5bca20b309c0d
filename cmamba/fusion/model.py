"""The sentiment model: per-modality projection → fusion backbone (``FusionConfig.fusion``) → pooling →
softmax-weighted modality fusion → head.

Batch format (what ``forward`` takes): a dict with one float tensor (B, L_m, D_m) per modality name of the
config, optionally ``"lengths"``: {name: (B,) int} (valid prefix of each right-padded sequence; default full)
and ``"present"``: {name: (B,) bool} (default: length > 0). Returns (B,) predictions for regression or
(B, C) logits for classification. ``trajectory`` gives the same prediction for every prefix of the clip.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cmamba.fusion.config import FusionConfig
from cmamba.fusion.layers import CoupledMambaLayer, CrossModalFusion, ModalityProjection, resample

_CHAIN_COUPLING = {"mamba": "none", "released": "none"}


class Trajectory(NamedTuple):
    """``FusionModel.trajectory``: the time-resolved prediction on the model's common time axis.

    scores: (B, L) for regression, (B, L, C) logits for classification — step t is the head's prediction from
    the states of steps 0..t; NaN after the sample's last step. fraction: (B, L) — where step t ends, as a
    fraction of the sample's steps (1 at its last step; NaN after). When the modalities are resampled onto
    ``seq_len`` steps (unequal lengths), step t covers the fraction [t/L, (t+1)/L) of every modality's span, so
    ``fraction × duration`` is the step's end in seconds; aligned inputs pass through, and their steps are the
    alignment's (clock ticks: seconds as well; words: the fraction of the words spoken).
    """

    scores: torch.Tensor
    fraction: torch.Tensor


class FusionModel(nn.Module):
    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config.resolved()
        cfg = self.config
        self.names = list(cfg.modalities)
        M, d = len(self.names), cfg.d_model
        self.project = nn.ModuleDict({n: ModalityProjection(dim, d) for n, dim in cfg.modalities.items()})
        # A learned stand-in sequence for a modality a sample lacks (so the chains still run and couple).
        self.missing = nn.ParameterDict({n: nn.Parameter(torch.zeros(d)) for n in self.names})
        early = cfg.fusion in ("average", "concat")
        self.streams = 1 if early else M
        self.early_merge = nn.Linear(M * d, d) if cfg.fusion == "concat" else None
        self.cross = CrossModalFusion(M, cfg) if cfg.fusion == "cross_attention" else None
        if self.cross is None:
            coupling = _CHAIN_COUPLING.get(cfg.fusion, cfg.coupling)
            shared_norm = cfg.post_norm or cfg.fusion == "released"
            post_norm = nn.LayerNorm(d) if shared_norm else None  # one LN shared by all blocks and layers
            self.layers = nn.ModuleList(
                CoupledMambaLayer(self.streams, cfg, coupling, post_norm) for _ in range(cfg.n_layers)
            )
        enhance = self.streams > 1 and self.cross is None and cfg.fusion != "mamba" and cfg.enhance
        self.enhance = (
            nn.ModuleList(nn.ModuleList(nn.Linear((M - 1) * d, d) for _ in range(M)) for _ in range(cfg.n_layers - 1))
            if enhance
            else None
        )
        self.modality_logits = nn.Parameter(torch.zeros(self.streams))
        self.head = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, cfg.outputs))

    # -- inputs --------------------------------------------------------------------------------------------

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check, align and project the modalities. Returns h (B, M, L, d), valid (B, M, L), present (B, M)."""
        lengths_in, present_in = batch.get("lengths") or {}, batch.get("present") or {}
        missing = [n for n in self.names if n not in batch]
        if missing:
            raise ValueError(f"batch lacks modalities {missing}; the model expects {self.names}")
        xs = []
        for name in self.names:
            x = batch[name]
            expected = self.config.modalities[name]
            if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != expected:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(
                    f"modality {name!r} has shape {got}; expected (batch, length, {expected}) — its feature dim "
                    f"must be {expected} as in the model config"
                )
            if not torch.isfinite(x).all():
                raise ValueError(f"modality {name!r} contains NaN or inf; clean or mask the features first")
            xs.append(x)
        B, device = xs[0].shape[0], xs[0].device
        lengths = [
            lengths_in.get(n, torch.full((B,), x.shape[1], device=device)) for n, x in zip(self.names, xs, strict=True)
        ]
        present = torch.stack(
            [present_in.get(n, ln > 0).to(device, torch.bool) for n, ln in zip(self.names, lengths, strict=True)], 1
        )
        same_length = len({x.shape[1] for x in xs}) == 1
        if same_length:  # already time-aligned: pass through unchanged
            L = xs[0].shape[1]
            valid = torch.stack([torch.arange(L, device=device)[None] < ln.to(device)[:, None] for ln in lengths], 1)
        else:
            L = self.config.seq_len
            xs = [resample(x, ln.to(device), L) for x, ln in zip(xs, lengths, strict=True)]
            valid = torch.stack([(ln.to(device) > 0)[:, None].expand(B, L) for ln in lengths], 1)
        h = torch.stack([self.project[n](x) for n, x in zip(self.names, xs, strict=True)], 1)  # (B, M, L, d)
        h = h * valid[..., None]  # padding feeds nothing into the coupled state
        stand_in = torch.stack([self.missing[n] for n in self.names])[None, :, None, :]
        absent = ~present[:, :, None, None]
        h = torch.where(absent, stand_in.expand_as(h), h)
        valid = valid | ~present[:, :, None]  # a stand-in sequence is valid everywhere
        return h, valid, present

    # -- backbone ------------------------------------------------------------------------------------------

    def _backbone(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, M, L, d) → (B, streams, L, d)."""
        if self.cross is not None:
            return self.cross(h, valid)
        if self.config.fusion == "average":
            h = h.mean(1, keepdim=True)
        elif self.config.fusion == "concat":
            h = self.early_merge(torch.cat(h.unbind(1), -1)).unsqueeze(1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if self.enhance is not None and i < len(self.enhance):  # "Cat": add Linear(concat of the others)
                others = [torch.cat([h[:, k] for k in range(h.shape[1]) if k != m], -1) for m in range(h.shape[1])]
                h = h + torch.stack([lin(o) for lin, o in zip(self.enhance[i], others, strict=True)], 1)
        return h

    def _states(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone states h (B, streams, L, d) with their valid (B, streams, L) and present (B, streams), and the
        sample's own steps (B, L): those of the modalities it has (a stand-in is valid on the whole padded axis)."""
        h, valid, present = self._inputs(batch)
        own = torch.where(present.any(1, keepdim=True), (valid & present[..., None]).any(1), valid.any(1))
        h = self._backbone(h, valid)
        if self.streams == 1:
            valid, present = valid.any(1, keepdim=True), present.any(1, keepdim=True)
        return h, valid, present, own

    def _fuse(self, pooled: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Softmax-weighted modality fusion over the modalities a sample has (all, if it has none), then the head.

        pooled: (B, streams, *, d) → (B, *) for regression, (B, *, C) for classification.
        """
        logits = self.modality_logits.expand_as(present).masked_fill(~present, float("-inf"))
        logits = torch.where(present.any(1, keepdim=True), logits, self.modality_logits.expand_as(present))
        weights = torch.softmax(logits, 1).reshape(*present.shape, *[1] * (pooled.dim() - 2))
        out = self.head((weights * pooled).sum(1))
        return out.squeeze(-1) if self.config.task == "regression" else out

    def forward(self, batch: dict) -> torch.Tensor:
        h, valid, present, _ = self._states(batch)
        mask = valid[..., None]
        if self.config.pooling == "max":
            pooled = h.masked_fill(~mask, float("-inf")).amax(2)  # (B, streams, d)
        else:
            pooled = (h * mask).sum(2) / mask.sum(2).clamp_min(1)
        return self._fuse(pooled, present)

    def trajectory(self, batch: dict) -> Trajectory:
        """The prediction after every step, in one pass (see ``Trajectory`` for the shapes and the time axis).

        forward()'s pooling over all valid steps becomes its causal prefix version — a running mean ("mean") or a
        running max ("max") over the valid steps 0..t of each stream — followed by the same fusion and head at
        every step, so the sample's last step reproduces forward(). Exactly, unless a stand-in for an absent
        modality runs past the sample's own steps (aligned inputs of unequal lengths padded into one batch):
        forward() pools the stand-in over that padding too; one clip per batch avoids it. The Mamba fusions'
        states are causal (a step sees only earlier inputs), so step t is the prediction from the clip up to t;
        cross_attention's states attend to the whole clip, so there only the pooling is causal.
        """
        h, valid, present, steps = self._states(batch)
        mask = valid[..., None]  # (B, streams, L, 1)
        if self.config.pooling == "max":
            pooled = h.masked_fill(~mask, float("-inf")).cummax(2).values
        else:
            pooled = (h * mask).cumsum(2) / mask.cumsum(2).clamp_min(1)
        scores = self._fuse(pooled, present)  # (B, L[, C])
        count = steps.sum(1, keepdim=True)
        index = torch.arange(1, steps.shape[1] + 1, device=steps.device)
        fraction = torch.where(steps, index / count.clamp_min(1), float("nan"))
        fill = steps if scores.dim() == 2 else steps[..., None]
        return Trajectory(torch.where(fill, scores, float("nan")), fraction)


def build_model(config: FusionConfig) -> FusionModel:
    """The model for ``config`` (see ``FusionConfig`` for the fusion variants)."""
    return FusionModel(config)
