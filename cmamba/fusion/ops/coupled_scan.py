"""The coupled selective scan of Coupled Mamba (Li et al., NeurIPS 2024, arXiv 2405.18014).

Glossary (code name → paper symbol, shapes):

    batch            B   batch size
    M                M   number of modalities (state chains)
    E                D   channels (d_inner = expand · d_model)
    N                N   state size (d_state)
    L                L   sequence length
    u      (b,M,E,L) x^m_t   block input of chain m after conv + SiLU
    delta  (b,M,E,L) Δ^m_t   timescale (before bias / softplus)
    A      (M,E,N)   A^m     negative real, diagonal per channel
    B, C   (b,M,N,L) B^m_t, C^m_t  input-dependent projections
    D      (M,E)     D^m     skip connection
    z      (b,M,E,L) z^m_t   gate
    weights (M,)     w       convex coupling weights
    S      exp(Δ A)          the discretised transition Ā (ZOH), S_m in the paper's Eq. 6
    h^m_t                    per-chain state (b, E, N)
    H_t                      coupled state Σ_k w_k h^k_t (b, E, N)
    P_t, U_t                 Σ_k w_k S^k_t and Σ_k w_k Δ^k_t B^k_t u^k_t

Semantics (Eq. 6 with a normalised sum; ZOH for A, Euler for B exactly as mamba-ssm's ``selective_scan_ref``):

    h^m_t = S^m_t ⊙ H_{t-1} + Δ^m_t B^m_t u^m_t,      H_{t-1} = Σ_k w_k h^k_{t-1},   h_{-1} = 0
    y^m_t = C^m_t · h^m_t + D^m u^m_t,                then y ← y ⊙ silu(z)

``coupling="mean"`` (w = 1/M, default, stable), ``"sum"`` (w = 1: the paper's literal Eq. 6, whose summed
transition lies in (0, M) and diverges), ``"none"`` (each chain reads only its own h^m_{t-1}: M independent
Mamba scans). ``weights`` (learned convex weights) override ``coupling``.

Because Σ_m w_m h^m_t = P_t ⊙ H_{t-1} + U_t, the coupled system is ONE diagonal scan over H plus a per-chain
readout. The fast backends compute exactly that; ``coupled_scan_ref`` is the
literal per-chain loop and the test oracle.

Backends (chosen in one place, ``scan_backend``): ``cpu`` (fused numba kernel), ``triton`` (CUDA kernel, or
the Triton interpreter on CPU tensors when ``TRITON_INTERPRET=1``), ``torch`` (chunked pure PyTorch, any
device and float64). ``CMAMBA_SCAN_BACKEND=cpu|triton|torch`` forces one.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch
import torch.nn.functional as F

__all__ = ["COUPLING_MODES", "coupled_scan", "coupled_scan_ref", "coupled_step", "scan_backend"]

COUPLING_MODES = ("mean", "sum", "none")
BACKENDS = ("cpu", "triton", "torch")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------------------
# Input checking
# ----------------------------------------------------------------------------------------------------------


def _check_tensor(name: str, x: torch.Tensor | None, shape: tuple[int, ...], device: torch.device) -> None:
    if x is None:
        return
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name} has dtype {x.dtype}; expected a floating dtype (float32, bfloat16, float16, float64)")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {shape}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but u is on {device}; move all inputs to one device")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, weights, time_axis: bool) -> tuple[int, int, int, int]:
    """Validate shapes/dtypes/devices; returns (batch, M, E, N). ``time_axis`` is False for ``coupled_step``."""
    expected = "(batch, M, E, L)" if time_axis else "(batch, M, E)"
    if not isinstance(u, torch.Tensor) or u.dim() != (4 if time_axis else 3):
        got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        raise ValueError(f"u has shape {got}; expected {expected}")
    if not isinstance(A, torch.Tensor) or A.dim() != 3:
        got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"A has shape {got}; expected (M, E, N)")
    batch, M, E = u.shape[:3]
    N = A.shape[2]
    tail = tuple(u.shape[3:])
    if time_axis and u.shape[3] == 0:
        raise ValueError("u has sequence length L = 0; expected L >= 1")
    device = u.device
    _check_tensor("u", u, tuple(u.shape), device)
    _check_tensor("delta", delta, (batch, M, E, *tail), device)
    _check_tensor("A", A, (M, E, N), device)
    _check_tensor("B", B, (batch, M, N, *tail), device)
    _check_tensor("C", C, (batch, M, N, *tail), device)
    _check_tensor("D", D, (M, E), device)
    _check_tensor("z", z, (batch, M, E, *tail), device)
    _check_tensor("delta_bias", delta_bias, (M, E), device)
    _check_tensor("weights", weights, (M,), device)
    return batch, M, E, N


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    """Every path computes in float32, except that float64 inputs stay float64."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _coupling_weights(coupling: str, weights: torch.Tensor | None, M: int, u: torch.Tensor):
    """Returns (w (M,) in the compute dtype, independent). Learned ``weights`` override ``coupling``."""
    if weights is not None:
        w = weights.detach()
        if bool((w < 0).any()) or abs(float(w.sum()) - 1.0) > 1e-3:
            raise ValueError(
                f"weights must be non-negative and sum to 1 (a convex combination), got {w.tolist()}; "
                "pass e.g. torch.softmax(logits, 0)"
            )
        return weights.to(_compute_dtype(u)), False
    if coupling not in COUPLING_MODES:
        raise ValueError(f"coupling={coupling!r} is not one of {COUPLING_MODES}")
    value = 1.0 / M if coupling == "mean" else 1.0
    return torch.full((M,), value, dtype=_compute_dtype(u), device=u.device), coupling == "none"


def _state_shape(batch: int, M: int, E: int, N: int, independent: bool) -> tuple[int, ...]:
    """Independent chains keep M states; a coupled scan (or M = 1, where all modes agree) keeps one."""
    return (batch, M, E, N) if independent and M > 1 else (batch, E, N)


def _discretise(delta: torch.Tensor, delta_bias, delta_softplus: bool) -> torch.Tensor:
    """Δ = softplus(delta + delta_bias) or delta + delta_bias, in float32 (float64 stays float64)."""
    delta = delta.to(_compute_dtype(delta))
    if delta_bias is not None:
        delta = delta + delta_bias.to(delta.dtype)[..., None] if delta.dim() == 4 else delta + delta_bias
    return F.softplus(delta) if delta_softplus else delta


def _finish(y, u, D, z, out_dtype):
    """y ← (y + D u) ⊙ silu(z), cast to u's dtype (shared by every path)."""
    if D is not None:
        y = y + D.to(y.dtype)[..., None] * u.to(y.dtype) if y.dim() == 4 else y + D * u.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def _report_non_finite(y: torch.Tensor, coupling: str, weights) -> None:
    if bool(torch.isfinite(y.sum(dtype=torch.float32))):  # one cheap reduction; counted only when needed
        return
    bad = int((~torch.isfinite(y)).sum())
    if bad:
        hint = (
            " coupling='sum' is the paper's literal Eq. 6 and diverges (its summed transition lies in (0, M));"
            " use coupling='mean' or convex weights."
            if coupling == "sum" and weights is None
            else " Check that A is negative and the inputs are finite."
        )
        warnings.warn(f"coupled scan produced {bad} non-finite values out of {y.numel()}.{hint}", stacklevel=3)


# ----------------------------------------------------------------------------------------------------------
# Reference: the paper's recurrence, literally
# ----------------------------------------------------------------------------------------------------------


def coupled_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, coupling="mean", weights=None,
    return_last_state=False,
):  # fmt: skip
    """Readable reference: a plain loop over t and m (Eq. 6), computed in float32 (float64 stays float64).

    u, delta, z: (batch, M, E, L); A: (M, E, N); B, C: (batch, M, N, L); D, delta_bias: (M, E); weights: (M,).
    Returns y (batch, M, E, L) in u's dtype, and with ``return_last_state`` also the last state: the coupled
    state (batch, E, N), or for ``coupling="none"`` with M > 1 the M chain states (batch, M, E, N).
    """
    batch, M, E, N = _check_inputs(u, delta, A, B, C, D, z, delta_bias, weights, time_axis=True)
    dt = _discretise(delta, delta_bias, delta_softplus)  # Δ^m_t (batch, M, E, L)
    cdtype = dt.dtype
    w, independent = _coupling_weights(coupling, weights, M, u)
    uf, Af, Bf, Cf = (x.to(cdtype) for x in (u, A, B, C))
    h = [uf.new_zeros(batch, E, N) for _ in range(M)]  # h^m_{-1} = 0 (Eq. 11)
    ys = []
    for t in range(u.shape[-1]):
        if independent:
            prev = h  # Mamba: each chain reads its own state
        else:
            coupled = sum(w[k] * h[k] for k in range(M))  # Eq. 6: summation before the state transition
            prev = [coupled] * M
        y_t = []
        for m in range(M):
            S = torch.exp(dt[:, m, :, t, None] * Af[m])  # Eq. 2: Ā = exp(ΔA)           (batch, E, N)
            Bu = dt[:, m, :, t, None] * Bf[:, m, None, :, t] * uf[:, m, :, t, None]  # B̄ x = Δ B x (Euler)
            h[m] = S * prev[m] + Bu  # Eq. 6: h^m_t = S_m · Σ_k w_k h^k_{t-1} + B̄_m x^m_t
            y_t.append((h[m] * Cf[:, m, None, :, t]).sum(-1))  # Eq. 3: y^m_t = C^m_t h^m_t   (batch, E)
        ys.append(torch.stack(y_t, 1))
    y = _finish(torch.stack(ys, -1), u, D, z, u.dtype)
    _report_non_finite(y, coupling, weights)
    if not return_last_state:
        return y
    if independent:
        last = torch.stack(h, 1) if M > 1 else h[0]
    else:
        last = sum(w[k] * h[k] for k in range(M))
    return y, last


# ----------------------------------------------------------------------------------------------------------
# Streaming: one step of the recurrence
# ----------------------------------------------------------------------------------------------------------


def coupled_step(
    state, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, coupling="mean", weights=None,
):  # fmt: skip
    """One step of the coupled recurrence for streaming inference.

    state: the previous state as returned by ``coupled_scan(..., return_last_state=True)`` ((batch, E, N), or
    (batch, M, E, N) for ``coupling="none"`` with M > 1), or None for h_{-1} = 0.
    u, delta, z: (batch, M, E); B, C: (batch, M, N); other arguments as in ``coupled_scan``.
    Returns (y (batch, M, E) in u's dtype, new_state (float32, or float64 for float64 inputs)).
    Applying it L times equals ``coupled_scan`` over the L steps.
    """
    batch, M, E, N = _check_inputs(u, delta, A, B, C, D, z, delta_bias, weights, time_axis=False)
    dt = _discretise(delta, delta_bias, delta_softplus)  # (batch, M, E)
    w, independent = _coupling_weights(coupling, weights, M, u)
    shape = _state_shape(batch, M, E, N, independent)
    if state is None:
        state = dt.new_zeros(shape)
    elif tuple(state.shape) != shape:
        raise ValueError(f"state has shape {tuple(state.shape)}; expected {shape} for coupling={coupling!r}")
    state = state.to(dt.dtype)
    chains = state.unsqueeze(1) if state.dim() == 3 else state  # (batch, 1 or M, E, N)
    S = torch.exp(dt[..., None] * A.to(dt.dtype))  # (batch, M, E, N)
    Bu = dt[..., None] * B.to(dt.dtype)[:, :, None, :] * u.to(dt.dtype)[..., None]
    h = S * chains + Bu  # h^m_t                                                 (batch, M, E, N)
    y = (h * C.to(dt.dtype)[:, :, None, :]).sum(-1)
    new_state = h if independent and M > 1 else (h[:, 0] if independent else torch.einsum("m,bmen->ben", w, h))
    return _finish(y, u, D, z, u.dtype), new_state


# ----------------------------------------------------------------------------------------------------------
# Fast path: backend dispatch
# ----------------------------------------------------------------------------------------------------------


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=4)


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def scan_backend(u: torch.Tensor) -> str:
    """The backend ``coupled_scan`` uses for tensors like ``u``: the one place that decides.

    CUDA → ``triton`` when Triton is installed, else ``torch`` (with a one-time warning saying how to install
    the kernel); CPU → ``cpu`` (numba); float64 → ``torch`` always. Otherwise ``CMAMBA_SCAN_BACKEND`` overrides
    the choice.
    """
    if u.dtype == torch.float64:
        return "torch"  # the fused kernels compute in float32; float64 asks for float64 precision
    forced = os.environ.get("CMAMBA_SCAN_BACKEND", "").strip().lower()
    if forced and forced != "auto":
        if forced not in BACKENDS:
            raise ValueError(f"CMAMBA_SCAN_BACKEND={forced!r} is not one of {('auto', *BACKENDS)}")
        if forced == "triton" and not _triton_available():
            raise ValueError("CMAMBA_SCAN_BACKEND=triton but triton is not installed: pip install 'cmamba[gpu]'")
        if forced == "triton" and u.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"CMAMBA_SCAN_BACKEND=triton with tensors on {u.device} needs Triton's interpreter: set "
                "TRITON_INTERPRET=1 before importing cmamba, or move the tensors to CUDA"
            )
        if forced == "cpu" and u.device.type != "cpu":
            raise ValueError(f"CMAMBA_SCAN_BACKEND=cpu but the tensors are on {u.device}; use .cpu() or unset it")
        return forced
    if u.device.type == "cuda":
        if _triton_available():
            return "triton"
        _warn_once(
            "cmamba: Triton is not installed, so the coupled scan runs its chunked PyTorch path on CUDA "
            "(several times slower). Install the GPU kernel with: pip install 'cmamba[gpu]'"
        )
        return "torch"
    if u.device.type == "cpu":
        return "cpu"
    return "torch"


def _core(backend: str, u, delta, delta_bias, delta_softplus: bool, A, B, C, w, independent: bool):
    """Run the scan core of ``backend`` on compute-dtype tensors.

    Returns y without the D skip and gate (batch, M, E, L) and the last states (batch, K, E, N).
    """
    if backend == "cpu":  # the numba kernels fuse the Δ discretisation
        from cmamba.fusion.ops.cpu import CoupledScanCPU

        bias = delta_bias if delta_bias is not None else delta.new_zeros(delta.shape[1:3])
        return CoupledScanCPU.apply(u, delta, bias, delta_softplus, A, B, C, w, independent)
    dt = _discretise(delta, delta_bias, delta_softplus)
    if backend == "triton":
        from cmamba.fusion.ops.triton import CoupledScanTriton

        return CoupledScanTriton.apply(u, dt, A, B, C, w, independent)
    from cmamba.fusion.ops.chunked import coupled_scan_chunked

    return coupled_scan_chunked(u, dt, A, B, C, w, independent)


def coupled_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, coupling="mean", weights=None,
    return_last_state=False,
):  # fmt: skip
    """Coupled selective scan, fast path; same signature and semantics as ``coupled_scan_ref``.

    u, delta, z: (batch, M, E, L); A: (M, E, N); B, C: (batch, M, N, L); D, delta_bias: (M, E); weights: (M,).
    Returns y (batch, M, E, L) in u's dtype, and with ``return_last_state`` also the last state: the coupled
    state (batch, E, N), or for ``coupling="none"`` with M > 1 the M chain states (batch, M, E, N).
    Differentiable in every tensor argument. Computes in float32 (float64 inputs in float64).
    """
    batch, M, E, N = _check_inputs(u, delta, A, B, C, D, z, delta_bias, weights, time_axis=True)
    backend = scan_backend(u)
    w, independent = _coupling_weights(coupling, weights, M, u)
    cdtype = w.dtype
    bias = delta_bias.to(cdtype) if delta_bias is not None else None
    tensors = (x.to(cdtype) for x in (u, delta, A, B, C))
    u_c, delta_c, A_c, B_c, C_c = tensors
    y, states = _core(backend, u_c, delta_c, bias, delta_softplus, A_c, B_c, C_c, w, independent)
    y = _finish(y, u, D, z, u.dtype)
    _report_non_finite(y, coupling, weights)
    if not return_last_state:
        return y
    return y, states.reshape(_state_shape(batch, M, E, N, independent))
