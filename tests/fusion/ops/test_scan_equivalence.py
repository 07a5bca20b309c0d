"""Every fast backend against the reference loop: outputs, last state and every gradient."""

from __future__ import annotations

import functools

import pytest
import torch

from cmamba.fusion.ops.coupled_scan import coupled_scan, coupled_scan_ref
from tests.fusion.ops.scan_inputs import NAMES, leaf_copy, make_inputs, probe

# max |fast - ref| / max |ref| per tensor. bf16: both paths compute in float32 and round once to bfloat16.
TOLERANCE = {torch.float32: 5e-5, torch.bfloat16: 2e-2}
MODES = ("mean", "sum", "none", "weights")
BATCH, E, N = 2, 5, 6  # odd sizes exercise the kernels' channel/state padding


def run_scan(fn, inputs: dict, mode: str, softplus: bool = True) -> dict[str, torch.Tensor]:
    """Forward + backward of ``fn``; returns y, the last state and the gradient of every input."""
    x = leaf_copy(inputs)
    M = x["u"].shape[1]
    kwargs = {"delta_softplus": softplus, "return_last_state": True}
    leaves = [x[k] for k in NAMES]
    names = [f"grad_{k}" for k in NAMES]
    if mode == "weights":
        # The weights themselves are the leaf: the gradient of softmax logits would add a cancellation
        # (w ⊙ (g - <w, g>)) that amplifies float32 rounding differences between two correct paths.
        weights = torch.softmax(torch.linspace(-0.5, 0.7, M), 0).requires_grad_()
        kwargs["weights"] = weights
        leaves.append(weights)
        names.append("grad_weights")
    else:
        kwargs["coupling"] = mode
    y, last = fn(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"], delta_bias=x["delta_bias"], **kwargs)
    loss = (y.float() * probe(y.shape, 1)).sum() + (last.float() * probe(last.shape, 2)).sum()
    grads = torch.autograd.grad(loss, leaves)
    return {"y": y, "last_state": last, **dict(zip(names, grads, strict=True))}


@functools.cache
def reference(dtype: torch.dtype, L: int, M: int, mode: str) -> dict[str, torch.Tensor]:
    return run_scan(coupled_scan_ref, make_inputs(BATCH, M, E, N, L, dtype), mode)


def assert_matches(actual: dict, expected: dict, tol: float) -> None:
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        scale = want.float().abs().max().clamp_min(1e-6)
        err = float((got.float() - want.float()).abs().max() / scale)
        print(f"{name}: max relative difference {err:.2e}")
        assert torch.isfinite(got).all(), name
        assert err <= tol, f"{name}: max |fast - ref| / max |ref| = {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("M", [1, 2, 3])
@pytest.mark.parametrize("L", [1, 7, 50, 129])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["cpu", "torch", "triton"])
def test_backend_matches_reference(backend, dtype, L, M, mode, monkeypatch):
    monkeypatch.setenv("CMAMBA_SCAN_BACKEND", backend)
    expected = reference(dtype, L, M, mode)
    actual = run_scan(coupled_scan, make_inputs(BATCH, M, E, N, L, dtype), mode)
    assert_matches(actual, expected, TOLERANCE[dtype])


@pytest.mark.parametrize("mode", MODES)
def test_float64_runs_in_float64(mode):
    """float64 inputs take the chunked PyTorch path and agree with the reference to float64 precision."""
    inputs = make_inputs(BATCH, 3, E, N, 40, torch.float64)
    assert_matches(run_scan(coupled_scan, inputs, mode), run_scan(coupled_scan_ref, inputs, mode), 1e-12)


def test_chunk_boundaries_do_not_matter():
    """The chunked path gives the same result for any chunk size (chunking is exact, not an approximation)."""
    from cmamba.fusion.ops.chunked import coupled_scan_chunked

    x = make_inputs(BATCH, 3, E, N, 37, torch.float64)
    w = torch.full((3,), 1 / 3, dtype=torch.float64)
    args = (x["u"], x["delta"].abs(), x["A"], x["B"], x["C"], w, False)
    y_one, h_one = coupled_scan_chunked(*args, chunk=37)
    for chunk in (1, 5, 16):
        y, h = coupled_scan_chunked(*args, chunk=chunk)
        torch.testing.assert_close(y, y_one, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h, h_one, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("backend", ["cpu", "torch", "triton"])
def test_extreme_timescales(backend, softplus, monkeypatch):
    """delta far outside the usual range: softplus's linear branch (> 20), tiny Δ, and exp underflow."""
    monkeypatch.setenv("CMAMBA_SCAN_BACKEND", backend)
    x = make_inputs(BATCH, 3, E, N, 9)
    span = torch.linspace(-40.0, 40.0, x["delta"].numel()).reshape(x["delta"].shape)
    x["delta"] = span if softplus else span.abs() + 1e-3  # without softplus Δ must stay positive
    expected = run_scan(coupled_scan_ref, x, "mean", softplus)
    assert_matches(run_scan(coupled_scan, x, "mean", softplus), expected, TOLERANCE[torch.float32])
