"""Modules of the fusion model: Mamba's SSM initialisation (one copy, used by the blocks, the tests and the
benchmarks), the per-modality projection, length-aware resampling, the Coupled Mamba layer (the paper's
Algorithm 1) and the MulT-style crossmodal attention baseline.
Shapes: B batch, L steps, d d_model, E = expand·d, N d_state, M modalities.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from cmamba.fusion.config import FusionConfig
from cmamba.fusion.ops.coupled_scan import coupled_scan

DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4  # Mamba's Δ initialisation range and floor


def mamba_A(M: int, E: int, N: int) -> torch.Tensor:
    """A^m[d, n] = -(n + 1): the S4D-real init (A_log = log(1..N)). Returns (M, E, N) float32."""
    return -torch.arange(1, N + 1, dtype=torch.float32).expand(M, E, N).contiguous()


def mamba_delta_bias(
    M: int,
    E: int,
    dt_min: float = DT_MIN,
    dt_max: float = DT_MAX,
    floor: float = DT_FLOOR,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bias b with softplus(b) = Δ log-uniform in [dt_min, dt_max] (at least ``floor``). Returns (M, E)."""
    log_dt = torch.rand(M, E, generator=generator) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = log_dt.exp().clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^{-1}(dt)


def segment_weights(lengths: torch.Tensor, max_len: int, steps: int) -> torch.Tensor:
    """(batch, steps, max_len) averaging weights; row j of sample b averages segment j of [0, lengths[b]).

    Each sample's valid prefix is cut into ``steps`` equal segments and every output step is the exact area
    average of the frames its segment overlaps (frame p covers [p, p+1)), so padding never contributes (the
    released code averages segments of the padded array, leaking zeros into short clips). A sample shorter
    than ``steps`` is stretched; rows of a sample with length 0 are all zero.
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
    """x: (batch, L, D) right-padded, lengths: (batch,) → (batch, steps, D) by length-aware segment averaging."""
    weights = segment_weights(lengths, x.shape[1], steps).to(x.dtype)
    return torch.bmm(weights, x)


@functools.cache
def _cuda_kernels():
    """mamba-ssm's / causal-conv1d's CUDA kernels (conv, LayerNorm), or None with a one-time warning."""
    try:
        from causal_conv1d import causal_conv1d_fn
        from mamba_ssm.ops.triton.layer_norm import layer_norm_fn
    except ImportError:
        warnings.warn(
            "cmamba: causal-conv1d / mamba-ssm are not installed, so the Mamba blocks use PyTorch's conv and "
            "LayerNorm on CUDA (slower). Install them with: MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE "
            "pip install --no-build-isolation mamba-ssm causal-conv1d",
            stacklevel=3,
        )
        return None
    return causal_conv1d_fn, layer_norm_fn


def use_cuda_kernels(x: torch.Tensor) -> bool:
    """The one place that decides: CUDA tensors and the optional kernels importable."""
    return x.is_cuda and os.environ.get("CMAMBA_PYTORCH_BLOCKS") != "1" and _cuda_kernels() is not None


class ModalityProjection(nn.Module):
    """Per-modality input projection (the paper's 'FusionNet'): d_in → 256 → LN → ReLU → d → LN."""

    def __init__(self, d_in: int, d_model: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, d_model), nn.LayerNorm(d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d_in) → (B, L, d)
        return self.net(x)


class MambaBlockParams(nn.Module):
    """The parameters of one Mamba block (one modality in one layer) with Mamba's initialisation."""

    def __init__(self, cfg: FusionConfig, dt_min: float = DT_MIN, dt_max: float = DT_MAX, dt_floor: float = DT_FLOOR):
        super().__init__()
        d, E, N, R = cfg.d_model, cfg.expand * cfg.d_model, cfg.d_state, cfg.resolved_dt_rank
        self.norm = nn.LayerNorm(d)
        self.in_proj = nn.Linear(d, 2 * E, bias=False)
        self.conv = nn.Conv1d(E, E, cfg.d_conv, groups=E, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.out_proj = nn.Linear(E, d, bias=False)
        nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(mamba_delta_bias(1, E, dt_min, dt_max, dt_floor)[0])
        self.A_log = nn.Parameter(torch.log(-mamba_A(1, E, N)[0]))  # (E, N): A = -exp(A_log) = -(1..N)
        self.D = nn.Parameter(torch.ones(E))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        # GPT-2 / Mamba: scale the residual branch's output projection by 1/sqrt(number of layers).
        nn.init.kaiming_uniform_(self.out_proj.weight, a=math.sqrt(5))
        with torch.no_grad():
            self.out_proj.weight /= math.sqrt(cfg.n_layers)
        self.N, self.R = N, R

    def scan_inputs(self, x: torch.Tensor):
        """Steps 1-5 of Algorithm 1. x: (B, L, d) → u, delta, z (B, E, L) and B, C (B, N, L)."""
        L = x.shape[1]
        fast = use_cuda_kernels(x)
        if fast:
            conv_fn, norm_fn = _cuda_kernels()
            h = norm_fn(x, self.norm.weight, self.norm.bias, eps=self.norm.eps)
        else:
            h = self.norm(x)
        u, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        if fast:
            u = conv_fn(u.contiguous(), self.conv.weight.squeeze(1), self.conv.bias, activation="silu")
        else:
            u = F.silu(self.conv(u)[..., :L])  # causal depthwise conv: keep the first L outputs
        dt_low, B, C = self.x_proj(u.transpose(1, 2)).split([self.R, self.N, self.N], dim=-1)
        delta = (dt_low @ self.dt_proj.weight.t()).transpose(1, 2)  # bias is added inside the scan
        return u, delta, z, B.transpose(1, 2), C.transpose(1, 2)


class CoupledMambaLayer(nn.Module):
    """One layer of M Mamba blocks whose state chains run through one ``coupled_scan`` (Algorithm 1).

    forward: (B, M, L, d) → (B, M, L, d), pre-norm residual per modality. ``coupling`` is "mean", "sum",
    "none" (independent chains) or "learned" (convex weights softmax(w), learned per layer).
    """

    def __init__(self, M: int, cfg: FusionConfig, coupling: str, post_norm: nn.LayerNorm | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(MambaBlockParams(cfg) for _ in range(M))
        self.coupling = coupling
        self.coupling_logits = nn.Parameter(torch.zeros(M)) if coupling == "learned" else None
        self.post_norm = post_norm  # the released code's shared LayerNorm on each block's output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [block.scan_inputs(x[:, m]) for m, block in enumerate(self.blocks)]
        u, delta, z, B, C = (torch.stack(p, 1) for p in zip(*parts, strict=True))  # (B, M, ., L)
        A = -torch.exp(torch.stack([b.A_log for b in self.blocks]).float())  # (M, E, N)
        D = torch.stack([b.D for b in self.blocks])
        bias = torch.stack([b.dt_proj.bias for b in self.blocks])
        kw = {"weights": torch.softmax(self.coupling_logits, 0)} if self.coupling_logits is not None else {}
        if not kw:
            kw["coupling"] = self.coupling
        y = coupled_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True, **kw)  # (B, M, E, L)
        outs = []
        for m, block in enumerate(self.blocks):
            out = block.out_proj(y[:, m].transpose(1, 2))  # (B, L, d)
            outs.append((self.post_norm(out) if self.post_norm is not None else out) + x[:, m])
        return torch.stack(outs, 1)


class CrossModalBlock(nn.Module):
    """MulT crossmodal transformer layer: target attends to source (pre-LN), then a position-wise FFN."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Linear(4 * d_model, d_model))

    def forward(self, target: torch.Tensor, source: torch.Tensor, source_pad: torch.Tensor | None) -> torch.Tensor:
        kv = self.norm_kv(source)
        target = target + self.attn(self.norm_q(target), kv, kv, key_padding_mask=source_pad, need_weights=False)[0]
        return target + self.ff(self.norm_ff(target))


def sinusoidal_positions(L: int, d: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(L, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(L, d, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


class CrossModalFusion(nn.Module):
    """MulT-style fusion: each target modality attends to every other one through ``n_layers`` crossmodal
    layers; the per-source outputs are concatenated and projected back to d. (B, M, L, d) → (B, M, L, d)."""

    def __init__(self, M: int, cfg: FusionConfig):
        super().__init__()
        self.sources = [[k for k in range(M) if k != m] or [m] for m in range(M)]
        self.layers = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleList(CrossModalBlock(cfg.d_model, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers))
                for _ in self.sources[m]
            )
            for m in range(M)
        )
        self.merge = nn.ModuleList(nn.Linear(len(s) * cfg.d_model, cfg.d_model) for s in self.sources)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x: (B, M, L, d); valid: (B, M, L) bool."""
        x = x + sinusoidal_positions(x.shape[2], x.shape[3], x.device)
        outputs = []
        for m, sources in enumerate(self.sources):
            streams = []
            for k, stack in zip(sources, self.layers[m], strict=True):
                h = x[:, m]
                for block in stack:
                    h = block(h, x[:, k], ~valid[:, k])
                streams.append(h)
            outputs.append(self.merge[m](torch.cat(streams, -1)))
        return torch.stack(outputs, 1)
