"""Triton kernels for the coupled selective scan core (CUDA; CPU tensors under ``TRITON_INTERPRET=1``).

One program owns (batch b, state group g, a block of BLOCK_E channels) and walks time sequentially with the
(BLOCK_E, N) state in registers. A state group is all M chains when they are coupled, or one chain when they
are independent (``coupling="none"``), so the state is always one tile. The chains of a group are visited one
at a time inside each step (a loop over the G chains of 2-D (BLOCK_E, BLOCK_N) tiles, not unrolled: unrolling
let the compiler keep every chain's tiles live and spill), and the sum over chains H_t = Σ_m w_m h^m_t
accumulates on-chip, so coupling costs no extra memory traffic and the register count does not grow with G: A is
reloaded from cache for each chain instead of kept.

Backward (recompute strategy): when gradients are needed the forward kernel also stores the state at the start
of every CHUNK steps ((batch, K, L/CHUNK, E, N) floats). The backward kernel visits the chunks in reverse,
recomputes the chunk's states from its checkpoint into a per-program scratch slice (CHUNK · BLOCK_E · N floats,
cache-resident) and then runs the adjoint recurrence G_{t-1} = Σ_m S^m_t ⊙ (w_m G_t + C^m_t gy^m_t) backwards
through the chunk. gA accumulates in the program's own slice of its output (read-add-write, cache-resident);
gB, gC and gw, which sum over programs, use atomic adds, so the autotuner zeroes them (and gA) before each trial.

Every configuration left by ``prune`` compiles for sm_80 and sm_90 without register spills
(``cmamba.fusion.ops.aot``, asserted by the tests).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

CHUNK = 16  # checkpoint spacing; a program's scratch is CHUNK·BLOCK_E·N floats
MAX_REGISTERS = 255  # per thread: the hardware limit, given explicitly (see all_configs)


def all_configs() -> list[triton.Config]:
    """Every configuration the autotuner may try on a GPU (before ``prune``)."""
    # maxnreg: without a register budget ptxas aims at occupancy and spills a few bytes even at 40-80 registers
    return [
        triton.Config({"BLOCK_E": be}, num_warps=nw, maxnreg=MAX_REGISTERS) for be in (8, 16, 32) for nw in (2, 4, 8)
    ]


def _configs() -> list[triton.Config]:
    if os.environ.get("TRITON_INTERPRET") == "1":  # the interpreter cannot benchmark several configs
        return [triton.Config({"BLOCK_E": 8}, num_warps=1)]
    return all_configs()


TILE_PER_THREAD = 4  # values of one (BLOCK_E, BLOCK_N) tile per thread; 8 spill in the backward (ptxas -v, aot)


def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """The configurations whose (BLOCK_E, BLOCK_N) tiles leave at most ``TILE_PER_THREAD`` values per thread
    (the autotuner's ``early_config_prune``); the smallest tile when none does."""
    block_n = {**named_args, **kwargs}["BLOCK_N"]

    def per_thread(config: triton.Config) -> float:
        return config.kwargs["BLOCK_E"] * block_n / (32 * config.num_warps)

    kept = [c for c in configs if per_thread(c) <= TILE_PER_THREAD]
    return kept or [min(configs, key=per_thread)]


@triton.jit
def _program(E, N, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr):
    """This program's batch index, state group, channels and state indices with their masks."""
    b = tl.program_id(0).to(tl.int64)
    grp = tl.program_id(1)
    e = tl.program_id(2) * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    e_ok, n_ok = e < E, n < N
    en = e[:, None] * N + n[None, :]  # (e, n) in an (E, N) state
    return b, grp, e, n, e_ok, n_ok, e_ok[:, None] & n_ok[None, :], en


@triton.jit
def _chain_step(u_ptr, dt_ptr, A_ptr, B_ptr, m, b, e, n, e_ok, n_ok, en_ok, en, t, M, E, N, L):
    """One chain's inputs at step t: (row offset, dt, u, B_t, S = exp(Δ A)); A is reloaded (cache-resident)
    rather than kept, so registers do not grow with the group size."""
    row = ((b * M + m) * E + e) * L  # (b, m, e, 0) in u / dt / y
    bc = (b * M + m) * N * L + n * L  # (b, m, n, 0) in B / C
    dt = tl.load(dt_ptr + row + t, mask=e_ok, other=0.0)
    u = tl.load(u_ptr + row + t, mask=e_ok, other=0.0)
    Bt = tl.load(B_ptr + bc + t, mask=n_ok, other=0.0)
    A = tl.load(A_ptr + m * E * N + en, mask=en_ok, other=0.0)
    return row, bc, dt, u, Bt, A, tl.exp(dt[:, None] * A)


@triton.autotune(configs=_configs(), key=["E", "N", "G", "BLOCK_N"], prune_configs_by={"early_config_prune": prune})
@triton.jit
def _scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, w_ptr, y_ptr, h_last_ptr, ckpt_ptr,
    M, E, N, L, n_chunks, G,
    BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr,
    SAVE_CKPT: tl.constexpr,
):  # fmt: skip
    b, grp, e, n, e_ok, n_ok, en_ok, en = _program(E, N, BLOCK_N, BLOCK_E)
    K = tl.num_programs(1)
    H = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    for t in range(L):
        if SAVE_CKPT:
            if t % CHUNK == 0:
                tl.store(ckpt_ptr + ((b * K + grp) * n_chunks + t // CHUNK) * E * N + en, H, mask=en_ok)
        H_next = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
        for i in range(G):  # the chains of the group, one (BLOCK_E, BLOCK_N) tile at a time (see the module doc)
            m = grp * G + i
            row, bc, dt, u, Bt, _, S = _chain_step(u_ptr, dt_ptr, A_ptr, B_ptr, m, b, e, n, e_ok, n_ok, en_ok, en,
                                                   t, M, E, N, L)  # fmt: skip
            Ct = tl.load(C_ptr + bc + t, mask=n_ok, other=0.0)
            h = S * H + (dt * u)[:, None] * Bt[None, :]
            tl.store(y_ptr + row + t, tl.sum(h * Ct[None, :], axis=1), mask=e_ok)
            H_next += tl.load(w_ptr + m) * h  # H_t = Σ_m w_m h^m_t = P_t H_{t-1} + U_t
        H = H_next
    tl.store(h_last_ptr + (b * K + grp) * E * N + en, H, mask=en_ok)


@triton.autotune(configs=_configs(), key=["E", "N", "G", "BLOCK_N"], prune_configs_by={"early_config_prune": prune},
                 reset_to_zero=["gA_ptr", "gB_ptr", "gC_ptr", "gw_ptr"])  # fmt: skip
@triton.jit
def _scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, w_ptr, ckpt_ptr, scratch_ptr, gy_ptr, gh_ptr,
    gu_ptr, gdt_ptr, gA_ptr, gB_ptr, gC_ptr, gw_ptr,
    M, E, N, L, n_chunks, G,
    BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    b, grp, e, n, e_ok, n_ok, en_ok, en = _program(E, N, BLOCK_N, BLOCK_E)
    K = tl.num_programs(1)
    slot = ((b * K + grp) * tl.num_programs(2) + tl.program_id(2)) * CHUNK * BLOCK_E * BLOCK_N  # this program's
    tile = tl.arange(0, BLOCK_E)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]  # scratch slice
    G_t = tl.load(gh_ptr + (b * K + grp) * E * N + en, mask=en_ok, other=0.0)  # dLoss/dH_{L-1}
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        t0 = c * CHUNK
        steps = tl.minimum(CHUNK, L - t0)
        # Recompute H_{t-1} for the chunk from its checkpoint.
        H = tl.load(ckpt_ptr + ((b * K + grp) * n_chunks + c) * E * N + en, mask=en_ok, other=0.0)
        for k in range(steps):
            t = t0 + k
            tl.store(scratch_ptr + slot + k * BLOCK_E * BLOCK_N + tile, H)
            H_next = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
            for i in range(G):
                m = grp * G + i
                row, bc, dt, u, Bt, A, S = _chain_step(u_ptr, dt_ptr, A_ptr, B_ptr, m, b, e, n, e_ok, n_ok, en_ok,
                                                       en, t, M, E, N, L)  # fmt: skip
                H_next += tl.load(w_ptr + m) * (S * H + (dt * u)[:, None] * Bt[None, :])
            H = H_next
        # Adjoint sweep through the chunk: G_{t-1} = Σ_m S^m_t ⊙ q^m_t with q^m_t = w_m G_t + C^m_t gy^m_t.
        for k in range(steps):
            t = t0 + steps - 1 - k
            H_prev = tl.load(scratch_ptr + slot + (steps - 1 - k) * BLOCK_E * BLOCK_N + tile)
            G_prev = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
            for i in range(G):
                m = grp * G + i
                row, bc, dt, u, Bt, A, S = _chain_step(u_ptr, dt_ptr, A_ptr, B_ptr, m, b, e, n, e_ok, n_ok, en_ok,
                                                       en, t, M, E, N, L)  # fmt: skip
                gy = tl.load(gy_ptr + row + t, mask=e_ok, other=0.0)
                Ct = tl.load(C_ptr + bc + t, mask=n_ok, other=0.0)
                h = S * H_prev + (dt * u)[:, None] * Bt[None, :]
                q = tl.load(w_ptr + m) * G_t + gy[:, None] * Ct[None, :]  # dLoss/dh^m_t
                g_exp = q * H_prev * S  # dLoss/d(Δ A)
                tl.store(gdt_ptr + row + t, tl.sum(g_exp * A + q * Bt[None, :] * u[:, None], axis=1), mask=e_ok)
                tl.store(gu_ptr + row + t, dt * tl.sum(q * Bt[None, :], axis=1), mask=e_ok)
                # gA: this program alone owns its (b, m, channels) slice, so a read-add-write needs no atomics;
                # keeping G accumulators in registers instead is what made the kernel spill
                ga = gA_ptr + (b * M + m) * E * N + en
                tl.store(ga, tl.load(ga, mask=en_ok, other=0.0) + g_exp * dt[:, None], mask=en_ok)
                tl.atomic_add(gw_ptr + m, tl.sum(tl.sum(G_t * h, axis=1), axis=0))  # sums over programs and steps
                tl.atomic_add(gC_ptr + bc + t, tl.sum(gy[:, None] * h, axis=0), mask=n_ok)
                tl.atomic_add(gB_ptr + bc + t, tl.sum(q * (dt * u)[:, None], axis=0), mask=n_ok)
                G_prev += S * q
            G_t = G_prev


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
        meta = dict(G=G, BLOCK_N=triton.next_power_of_2(N), CHUNK=CHUNK)

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
        gA, gw = u.new_zeros(batch, M, E, N), u.new_zeros(M)  # accumulated into (zeroed again by the autotuner)
        # The scratch fits every autotuned BLOCK_E: at most E blocks, the last padded by at most 31 rows.
        scratch = u.new_empty(batch * K * (E + 32) * CHUNK * ctx.meta["BLOCK_N"])

        def grid(cfg):
            return (batch, K, triton.cdiv(E, cfg["BLOCK_E"]))

        _scan_bwd_kernel[grid](
            u, delta, A, B, C, w, ckpt, scratch, gy, gh_last, gu, gdelta, gA, gB, gC, gw, M, E, N, L, n_chunks,
            **ctx.meta,
        )  # fmt: skip
        return gu, gdelta, gA.sum(0), gB, gC, gw, None
