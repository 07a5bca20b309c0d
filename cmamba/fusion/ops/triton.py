"""Triton kernels for the coupled selective scan core (CUDA; CPU tensors under ``TRITON_INTERPRET=1``).

One program owns (batch b, state group g, a block of BLOCK_E channels) and walks time sequentially with the
(BLOCK_E, N) state in registers. A state group is all M chains when they are coupled, or one chain when they
are independent (``coupling="none"``), so the state is always one tile. All chains of a group are processed
together as (G, BLOCK_E, N) tiles; the sum over chains H_t = Σ_m w_m h^m_t happens on-chip, so coupling costs
no extra memory traffic.

Backward (recompute strategy): when gradients are needed the forward kernel also stores the state at the start
of every CHUNK steps ((batch, K, L/CHUNK, E, N) floats). The backward kernel visits the chunks in reverse,
recomputes the chunk's states from its checkpoint into a per-program scratch slice (CHUNK · BLOCK_E · N floats,
cache-resident) and then runs the adjoint recurrence G_{t-1} = Σ_m S^m_t ⊙ (w_m G_t + C^m_t gy^m_t) backwards
through the chunk. gA and gw accumulate in registers; gB and gC, which sum over channels shared by several
programs, use atomic adds.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

CHUNK = 16  # checkpoint spacing; a program's scratch is CHUNK·BLOCK_E·N floats


def _configs():
    if os.environ.get("TRITON_INTERPRET") == "1":  # the interpreter cannot benchmark several configs
        return [triton.Config({"BLOCK_E": 8}, num_warps=1)]
    return [triton.Config({"BLOCK_E": be}, num_warps=nw) for be in (8, 16, 32) for nw in (2, 4, 8)]


@triton.jit
def _program_tiles(M, E, N, L, G: tl.constexpr, G_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
    """Index tiles of this program (b, group, channel block): offsets into the tensors and their masks."""
    b = tl.program_id(0).to(tl.int64)
    grp = tl.program_id(1)
    e = tl.program_id(2) * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    i = tl.arange(0, G_PAD)
    m = grp * G + i
    m_ok = i < G
    e_ok = e < E
    n_ok = n < N
    me_ok = m_ok[:, None] & e_ok[None, :]  # (G_PAD, BLOCK_E)
    men_ok = me_ok[:, :, None] & n_ok[None, None, :]  # (G_PAD, BLOCK_E, BLOCK_N)
    mn_ok = m_ok[:, None] & n_ok[None, :]
    en_ok = e_ok[:, None] & n_ok[None, :]
    a_off = (m[:, None, None] * E + e[None, :, None]) * N + n[None, None, :]  # (m, e, n) in A
    row = ((b * M + m[:, None]) * E + e[None, :]) * L  # (b, m, e, 0) in u / dt / y
    bc = (b * M + m[:, None]) * N * L + n[None, :] * L  # (b, m, n, 0) in B / C
    en = e[:, None] * N + n[None, :]  # (e, n) in a state
    return b, grp, m, m_ok, me_ok, men_ok, mn_ok, en_ok, a_off, row, bc, en


@triton.autotune(configs=_configs(), key=["E", "N", "G", "BLOCK_N"])
@triton.jit
def _scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, w_ptr, y_ptr, h_last_ptr, ckpt_ptr,
    M, E, N, L, n_chunks,
    G: tl.constexpr, G_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr,
    CHUNK: tl.constexpr, SAVE_CKPT: tl.constexpr,
):  # fmt: skip
    b, grp, m, m_ok, me_ok, men_ok, mn_ok, en_ok, a_off, row, bc, en = _program_tiles(
        M, E, N, L, G, G_PAD, BLOCK_N, BLOCK_E
    )
    K = tl.num_programs(1)
    A = tl.load(A_ptr + a_off, mask=men_ok, other=0.0)
    w = tl.load(w_ptr + m, mask=m_ok, other=0.0)

    H = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for t in range(L):
        if SAVE_CKPT:
            if t % CHUNK == 0:
                tl.store(ckpt_ptr + ((b * K + grp) * n_chunks + t // CHUNK) * E * N + en, H, mask=en_ok)
        dt = tl.load(dt_ptr + row + t, mask=me_ok, other=0.0)
        u = tl.load(u_ptr + row + t, mask=me_ok, other=0.0)
        Bt = tl.load(B_ptr + bc + t, mask=mn_ok, other=0.0)
        Ct = tl.load(C_ptr + bc + t, mask=mn_ok, other=0.0)
        S = tl.exp(dt[:, :, None] * A)  # (G_PAD, BLOCK_E, BLOCK_N)
        h = S * H[None, :, :] + (dt * u)[:, :, None] * Bt[:, None, :]
        tl.store(y_ptr + row + t, tl.sum(h * Ct[:, None, :], axis=2), mask=me_ok)
        H = tl.sum(w[:, None, None] * h, axis=0)  # H_t = Σ_m w_m h^m_t = P_t H_{t-1} + U_t
    tl.store(h_last_ptr + (b * K + grp) * E * N + en, H, mask=en_ok)


@triton.autotune(configs=_configs(), key=["E", "N", "G", "BLOCK_N"], reset_to_zero=["gB_ptr", "gC_ptr"])
@triton.jit
def _scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, w_ptr, ckpt_ptr, scratch_ptr, gy_ptr, gh_ptr,
    gu_ptr, gdt_ptr, gA_ptr, gB_ptr, gC_ptr, gw_ptr,
    M, E, N, L, n_chunks,
    G: tl.constexpr, G_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    b, grp, m, m_ok, me_ok, men_ok, mn_ok, en_ok, a_off, row, bc, en = _program_tiles(
        M, E, N, L, G, G_PAD, BLOCK_N, BLOCK_E
    )
    K = tl.num_programs(1)
    pid_e = tl.program_id(2)
    n_eblocks = tl.num_programs(2)
    A = tl.load(A_ptr + a_off, mask=men_ok, other=0.0)
    w = tl.load(w_ptr + m, mask=m_ok, other=0.0)
    slot = ((b * K + grp) * n_eblocks + pid_e) * CHUNK * BLOCK_E * BLOCK_N  # this program's scratch
    tile = tl.arange(0, BLOCK_E)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]

    G_t = tl.load(gh_ptr + (b * K + grp) * E * N + en, mask=en_ok, other=0.0)  # dLoss/dH_{L-1}
    gA = tl.zeros((G_PAD, BLOCK_E, BLOCK_N), dtype=tl.float32)
    gw = tl.zeros((G_PAD,), dtype=tl.float32)
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        t0 = c * CHUNK
        steps = tl.minimum(CHUNK, L - t0)
        # Recompute H_{t-1} for the chunk from its checkpoint.
        H = tl.load(ckpt_ptr + ((b * K + grp) * n_chunks + c) * E * N + en, mask=en_ok, other=0.0)
        for k in range(steps):
            t = t0 + k
            tl.store(scratch_ptr + slot + k * BLOCK_E * BLOCK_N + tile, H)
            dt = tl.load(dt_ptr + row + t, mask=me_ok, other=0.0)
            u = tl.load(u_ptr + row + t, mask=me_ok, other=0.0)
            Bt = tl.load(B_ptr + bc + t, mask=mn_ok, other=0.0)
            h = tl.exp(dt[:, :, None] * A) * H[None, :, :] + (dt * u)[:, :, None] * Bt[:, None, :]
            H = tl.sum(w[:, None, None] * h, axis=0)
        # Adjoint sweep through the chunk.
        for k in range(steps):
            t = t0 + steps - 1 - k
            H_prev = tl.load(scratch_ptr + slot + (steps - 1 - k) * BLOCK_E * BLOCK_N + tile)
            dt = tl.load(dt_ptr + row + t, mask=me_ok, other=0.0)
            u = tl.load(u_ptr + row + t, mask=me_ok, other=0.0)
            gy = tl.load(gy_ptr + row + t, mask=me_ok, other=0.0)
            Bt = tl.load(B_ptr + bc + t, mask=mn_ok, other=0.0)
            Ct = tl.load(C_ptr + bc + t, mask=mn_ok, other=0.0)
            S = tl.exp(dt[:, :, None] * A)
            h = S * H_prev[None, :, :] + (dt * u)[:, :, None] * Bt[:, None, :]
            q = w[:, None, None] * G_t[None, :, :] + gy[:, :, None] * Ct[:, None, :]  # dLoss/dh^m_t
            g_exp = q * H_prev[None, :, :] * S  # dLoss/d(Δ A)
            g_dt = tl.sum(g_exp * A + q * Bt[:, None, :] * u[:, :, None], axis=2)
            tl.store(gdt_ptr + row + t, g_dt, mask=me_ok)
            tl.store(gu_ptr + row + t, dt * tl.sum(q * Bt[:, None, :], axis=2), mask=me_ok)
            gA += g_exp * dt[:, :, None]
            gw += tl.sum(tl.sum(G_t[None, :, :] * h, axis=2), axis=1)
            tl.atomic_add(gC_ptr + bc + t, tl.sum(gy[:, :, None] * h, axis=1), mask=mn_ok)
            tl.atomic_add(gB_ptr + bc + t, tl.sum(q * (dt * u)[:, :, None], axis=1), mask=mn_ok)
            G_t = tl.sum(S * q, axis=0)
    tl.store(gA_ptr + b * M * E * N + a_off, gA, mask=men_ok)
    tl.store(gw_ptr + (b * n_eblocks + pid_e) * M + m, gw, mask=m_ok)


def _launch_shape(u: torch.Tensor, A: torch.Tensor, independent: bool):
    batch, M, E, L = u.shape
    G = 1 if independent else M
    return batch, M, E, A.shape[-1], L, G, M // G


class CoupledScanTriton(torch.autograd.Function):
    """Autograd wrapper of the Triton kernels; inputs are contiguous float32 (see ``coupled_scan._core``)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, w, independent: bool):
        u, delta, A, B, C, w = (x.contiguous() for x in (u, delta, A, B, C, w))
        batch, M, E, N, L, G, K = _launch_shape(u, A, independent)
        n_chunks = triton.cdiv(L, CHUNK)
        save = any(ctx.needs_input_grad)
        y = torch.empty_like(u)
        h_last = u.new_empty(batch, K, E, N)
        ckpt = u.new_empty(batch, K, n_chunks, E, N) if save else h_last  # unused when not saving
        meta = dict(G=G, G_PAD=triton.next_power_of_2(G), BLOCK_N=triton.next_power_of_2(N), CHUNK=CHUNK)

        def grid(cfg):
            return (batch, K, triton.cdiv(E, cfg["BLOCK_E"]))

        _scan_fwd_kernel[grid](u, delta, A, B, C, w, y, h_last, ckpt, M, E, N, L, n_chunks, SAVE_CKPT=save, **meta)
        if save:
            ctx.save_for_backward(u, delta, A, B, C, w, ckpt)
        ctx.meta, ctx.independent = meta, independent
        return y, h_last

    @staticmethod
    def backward(ctx, gy, gh_last):
        u, delta, A, B, C, w, ckpt = ctx.saved_tensors
        batch, M, E, N, L, _, K = _launch_shape(u, A, ctx.independent)
        n_chunks = ckpt.shape[2]
        gy, gh_last = gy.contiguous(), gh_last.contiguous()
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gB, gC = torch.zeros_like(B), torch.zeros_like(C)
        gA = u.new_empty(batch, M, E, N)
        # Scratch and gw partials are sized so that every autotuned BLOCK_E fits (at most E blocks of >= 1
        # channel; padded rows of the last block need at most 32 extra rows).
        scratch = u.new_empty(batch * K * (E + 32) * CHUNK * ctx.meta["BLOCK_N"])
        gw = u.new_zeros(batch, E, M)

        def grid(cfg):
            return (batch, K, triton.cdiv(E, cfg["BLOCK_E"]))

        _scan_bwd_kernel[grid](
            u, delta, A, B, C, w, ckpt, scratch, gy, gh_last, gu, gdelta, gA, gB, gC, gw, M, E, N, L, n_chunks,
            **ctx.meta,
        )  # fmt: skip
        return gu, gdelta, gA.sum(0), gB, gC, gw.sum((0, 1)), None
