"""Chunked pure-PyTorch core of the coupled scan: runs on any device and dtype (the float64 path).

Time is cut into chunks of about ``CHUNK_ELEMENTS / (batch·M·E·N)`` steps. Inside a chunk the transitions
are built with vectorised ops in a time-major layout (T, batch, M, E, N), so each step of the single diagonal
scan H_t = P_t ⊙ H_{t-1} + U_t reads contiguous slices; the per-chain readout is vectorised again. Each chunk
is wrapped in activation checkpointing, so autograd keeps only the chunk-boundary states instead of the full
(batch, M, E, N, L) history.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

CHUNK_ELEMENTS = 2**22  # ~16 MB of fp32 per (T, batch, M, E, N) chunk tensor: cache-friendly, no page-fault storms


def _chunk(H, u, dt, A, B, C, w, independent: bool):
    """One chunk. H: (batch, K, E, N); u, dt: (T, batch, M, E); B, C: (T, batch, M, N). Returns y (T, b, M, E)."""
    S = torch.exp(dt[..., None] * A)  # S^m_t                                     (T, batch, M, E, N)
    du = dt * u  # Δ u                                                             (T, batch, M, E)
    if independent:  # each chain is its own state group
        P, U = S, du[..., None] * B[..., None, :]
    else:  # one group: P_t = Σ_m w_m S^m_t, U_t = Σ_m w_m Δ^m u^m B^m (a contraction over m, no (.., M, E, N))
        P = torch.einsum("m,tbmen->tben", w, S).unsqueeze(2)
        U = torch.einsum("tbme,tbmn->tben", du * w[:, None], B).unsqueeze(2)
    prev = []
    for t in range(S.shape[0]):
        prev.append(H)
        H = P[t] * H + U[t]
    H_prev = torch.stack(prev)  # H_{t-1}, broadcast over the chains of a group   (T, batch, K, E, N)
    # y = Σ_n C (S H_{t-1} + Δ B u) = Σ_n (C S) H_{t-1} + Δ u (C · B)
    y = (S * C[..., None, :] * H_prev).sum(-1) + du * (C * B).sum(-1, keepdim=True)
    return y, H


def coupled_scan_chunked(u, dt, A, B, C, w, independent: bool, chunk: int | None = None):
    """Same contract as the fused cores: returns y without D/z (batch, M, E, L) and states (batch, K, E, N)."""
    batch, M, E, L = u.shape
    chunk = chunk or max(1, min(64, CHUNK_ELEMENTS // (batch * M * E * A.shape[-1])))
    H = u.new_zeros(batch, M if independent else 1, E, A.shape[-1])
    # Time-major copies: (L, batch, M, E) and (L, batch, M, N).
    u_t, dt_t = u.permute(3, 0, 1, 2), dt.permute(3, 0, 1, 2)
    B_t, C_t = B.permute(3, 0, 1, 2), C.permute(3, 0, 1, 2)
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (u, dt, A, B, C, w))
    ys = []
    for t0 in range(0, L, chunk):
        sl = slice(t0, t0 + chunk)
        args = (H, u_t[sl], dt_t[sl], A, B_t[sl], C_t[sl], w, independent)
        y, H = checkpoint(_chunk, *args, use_reentrant=False) if grad else _chunk(*args)
        ys.append(y)
    return torch.cat(ys).permute(1, 2, 3, 0), H
