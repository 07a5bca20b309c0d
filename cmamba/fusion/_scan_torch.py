"""Chunked pure-PyTorch core of the coupled scan: runs on any device and dtype (the float64 path).

Time is cut into chunks of ``CHUNK`` steps. Inside a chunk the (batch, M, E, T, N) transitions are built
with vectorised ops, the single diagonal scan H_t = P_t ⊙ H_{t-1} + U_t runs step by step on (batch, K, E, N)
tensors, and the per-chain readout is vectorised again. Each chunk is wrapped in activation checkpointing, so
autograd keeps only the chunk-boundary states instead of the full (batch, M, E, N, L) history.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

CHUNK = 32


def _chunk(H, u, dt, A, B, C, w, group):
    """One chunk. H: (batch, K, E, N); u, dt: (batch, M, E, T); B, C: (batch, M, N, T)."""
    S = torch.exp(dt[..., None] * A[:, :, None, :])  # (batch, M, E, T, N)
    V = (dt * u)[..., None] * B.transpose(-1, -2)[:, :, None]  # Δ B u   (batch, M, E, T, N)
    K = H.shape[1]
    wg = torch.zeros(K, w.shape[0], dtype=w.dtype, device=w.device).index_put((group, torch.arange(len(group))), w)
    P = torch.einsum("km,bmetn->bketn", wg, S)  # Σ_{m∈g} w_m S^m_t
    U = torch.einsum("km,bmetn->bketn", wg, V)
    prev = []
    for t in range(S.shape[3]):
        prev.append(H)
        H = P[:, :, :, t] * H + U[:, :, :, t]
    H_prev = torch.stack(prev, 3)[:, group]  # H^{g(m)}_{t-1}                  (batch, M, E, T, N)
    y = torch.einsum("bmetn,bmnt->bmet", S * H_prev + V, C)
    return y, H


def coupled_scan_chunked(u, dt, A, B, C, w, independent: bool, chunk: int = CHUNK):
    """Same contract as the fused cores: returns y without D/z (batch, M, E, L) and states (batch, K, E, N)."""
    batch, M, E, L = u.shape
    K = M if independent else 1
    group = torch.arange(M, device=u.device) if independent else torch.zeros(M, dtype=torch.long, device=u.device)
    H = u.new_zeros(batch, K, E, A.shape[-1])
    ys = []
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (u, dt, A, B, C, w))
    for t0 in range(0, L, chunk):
        sl = slice(t0, t0 + chunk)
        args = (H, u[..., sl], dt[..., sl], A, B[..., sl], C[..., sl], w, group)
        y, H = checkpoint(_chunk, *args, use_reentrant=False) if grad else _chunk(*args)
        ys.append(y)
    return torch.cat(ys, -1), H
