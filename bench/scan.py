"""Benchmark of the coupled selective scan (a script, not a test).

    python bench/scan.py                        # the full table: M 3, E 256, N 64, L {50, 500}, batch {1, 32}
    python bench/scan.py --batch 1 --length 50  # one shape
    ./run bench                                 # the same, after the self-installing set-up

For every shape and pass (forward, forward+backward) it times, in one run:
  reference   coupled_scan_ref, the literal loop over t and m (the baseline of the ratios)
  fast        coupled_scan with the backend this machine dispatches to (numba on CPU, Triton on CUDA)
  torch       the chunked pure-PyTorch core (the any-device fallback), for comparison
  M x mamba   M independent single-chain (Mamba) scans, each a separate fast-path call
  none        coupling="none": the M independent chains in one fast-path call
and the exponential floor: torch.exp over the (batch, M, E, N, L) exponents into a preallocated buffer, i.e.
the time this machine needs for the M·E·N·L exponentials alone (no exact algorithm can avoid them).
Medians over repeats after warm-up; peak memory is the extra peak of one call: on CPU the peak resident set
of a fresh process above its resident set before the call, on CUDA torch.cuda.max_memory_allocated. On CUDA
the Triton kernel's achieved bandwidth is also compared with the HBM roofline (measured copy bandwidth).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from benchutil import cuda_peak_mb, machine, median_seconds, peak_rss_mb

from cmamba.fusion.layers import mamba_A, mamba_delta_bias
from cmamba.fusion.ops.coupled_scan import coupled_scan, coupled_scan_ref, scan_backend

IMPLEMENTATIONS = ("reference", "fast", "torch", "M x mamba", "none")


def make_inputs(batch: int, M: int, E: int, N: int, L: int, device: str, grad: bool):
    """Inputs at Mamba's default initialisation (the regime a trained model starts from)."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "u": torch.randn(batch, M, E, L, generator=g),
        "delta": 0.1 * torch.randn(batch, M, E, L, generator=g),
        "A": mamba_A(M, E, N),
        "B": torch.randn(batch, M, N, L, generator=g),
        "C": torch.randn(batch, M, N, L, generator=g),
        "delta_bias": mamba_delta_bias(M, E, generator=g),
    }
    return {k: v.to(device).requires_grad_(grad) for k, v in tensors.items()}


def scan_call(impl: str, x: dict) -> Callable[[], torch.Tensor]:
    """A zero-argument function running one implementation; returns the output tensor."""
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    kw = {"delta_bias": x["delta_bias"], "delta_softplus": True}
    if impl == "reference":
        return lambda: coupled_scan_ref(*args, **kw)
    if impl in ("fast", "torch"):
        return lambda: coupled_scan(*args, **kw)
    if impl == "none":
        return lambda: coupled_scan(*args, coupling="none", **kw)
    M = x["u"].shape[1]

    def independent():  # M separate Mamba scans: one single-chain call per modality
        outs = [
            coupled_scan(
                *(t[:, m : m + 1] for t in (x["u"], x["delta"])),
                x["A"][m : m + 1],
                *(t[:, m : m + 1] for t in (x["B"], x["C"])),
                delta_bias=x["delta_bias"][m : m + 1],
                delta_softplus=True,
            )
            for m in range(M)
        ]
        return torch.cat(outs, 1)

    return independent


def with_backward(fn: Callable[[], torch.Tensor], x: dict) -> Callable[[], None]:
    leaves = list(x.values())

    def run():
        y = fn()
        torch.autograd.grad(y.sum(), leaves)

    return run


def exp_floor_seconds(batch, M, E, N, L, device, warmup, repeats) -> float:
    exponents = -torch.rand(batch, M, E, N, L, device=device)
    out = torch.empty_like(exponents)
    return median_seconds(lambda: torch.exp(exponents, out=out), device, warmup, repeats)


def runner(impl: str, passes: str, shape: tuple[int, ...], device: str) -> Callable[[], object]:
    """Build the timed callable; the 'torch' implementation is selected through the backend switch."""
    batch, M, E, N, L = shape
    x = make_inputs(batch, M, E, N, L, device, grad=passes == "fwd+bwd")
    fn = scan_call(impl, x)
    if impl == "torch":
        inner = fn

        def fn():
            os.environ["CMAMBA_SCAN_BACKEND"] = "torch"
            try:
                return inner()
            finally:
                os.environ.pop("CMAMBA_SCAN_BACKEND")

    if passes == "fwd+bwd":
        return with_backward(fn, x)
    return lambda: torch.no_grad()(fn)()


def peak_memory_mb(impl: str, passes: str, shape: tuple[int, ...], device: str) -> float:
    """Extra peak memory of one call: the CUDA allocator's peak, or on CPU the peak resident set of a fresh
    process (see ``benchutil.peak_rss_mb``)."""
    if device == "cuda":
        return cuda_peak_mb(runner(impl, passes, shape, device))
    spec = json.dumps([impl, passes, list(shape)])
    result = subprocess.run([sys.executable, __file__, "--peak-of", spec], check=True, capture_output=True, text=True)
    return float(result.stdout.strip())


def _peak_of(spec: str) -> None:
    impl, passes, shape = json.loads(spec)
    runner(impl, passes, (1, shape[1], 2, 2, 2), "cpu")()  # one-time costs (JIT cache, thread pool) on a tiny shape
    print(peak_rss_mb(runner(impl, passes, tuple(shape), "cpu")))


def reference_backward_gb(batch, M, E, N, L) -> float:
    """Memory autograd keeps for the reference loop: about six (batch, E, N) fp32 tensors per step and chain."""
    return 6 * batch * E * N * 4 * L * M / 1e9


def hbm_copy_gbps(device: str) -> float:
    """Measured device-to-device copy bandwidth (read + write), the practical HBM roofline."""
    src = torch.empty(2**28, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device, 3, 10)
    return 2 * src.numel() * 4 / seconds / 1e9


def scan_bytes(batch, M, E, N, L, passes: str) -> int:
    """Unavoidable HBM traffic of a fused kernel (fp32): forward reads u, Δ, B, C and writes y."""
    per_row, per_bc = batch * M * E * L, batch * M * N * L
    forward = 4 * (3 * per_row + 2 * per_bc)
    # Backward also reads u, Δ, B, C, gy and writes gu, gΔ, gB, gC (+ the forward's recompute reads).
    return forward if passes == "fwd" else forward + 4 * (5 * per_row + 4 * per_bc + 2 * per_row + 2 * per_bc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--length", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--modalities", type=int, default=3)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--state", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of the fast paths")
    parser.add_argument("--reference-repeats", type=int, default=3, help="timed repeats of the reference loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument(
        "--reference-max-gb",
        type=float,
        default=8.0,
        help="skip the reference loop's backward when autograd would keep more than this many GB",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)  # internal: one memory measurement
    args = parser.parse_args()
    if args.peak_of:
        _peak_of(args.peak_of)
        return
    device = args.device
    probe = torch.zeros(1, device=device)
    print(f"# coupled scan benchmark, {time.strftime('%Y-%m-%d')}")
    print(f"# machine: {machine(device)}, fast backend: {scan_backend(probe)}")
    print(f"# command: {' '.join(sys.argv)}")
    roofline = hbm_copy_gbps(device) if device == "cuda" else None
    if roofline:
        print(f"# HBM roofline (measured copy bandwidth): {roofline:.0f} GB/s")
    header = "| batch | L | pass | impl | median ms | vs reference | vs exp floor | peak MB |"
    print(header + (" GB/s | % roofline |" if roofline else ""))
    print("|" + "---|" * (header.count("|") - 1 + (2 if roofline else 0)))
    rows = []
    M, E, N = args.modalities, args.channels, args.state
    for batch in args.batch:
        for L in args.length:
            shape = (batch, M, E, N, L)
            floor = exp_floor_seconds(*shape, device, 2, args.repeats)
            print(f"| {batch} | {L} | - | exp floor | {floor * 1e3:.2f} | | 1.00x | |" + (" | |" if roofline else ""))
            rows.append(dict(batch=batch, L=L, passes="-", impl="exp floor", ms=floor * 1e3))
            for passes in ("fwd", "fwd+bwd"):
                ref_seconds = None
                for impl in IMPLEMENTATIONS:
                    slow = impl == "reference"
                    if slow and passes == "fwd+bwd" and reference_backward_gb(*shape) > args.reference_max_gb:
                        gb = reference_backward_gb(*shape)
                        print(f"| {batch} | {L} | {passes} | {impl} | skipped: autograd of the loop keeps ~{gb:.0f} GB"
                              f" (> --reference-max-gb {args.reference_max_gb:g}) | | | |", flush=True)  # fmt: skip
                        continue
                    fn = runner(impl, passes, shape, device)
                    seconds = median_seconds(
                        fn, device, 1 if slow else 2, args.reference_repeats if slow else args.repeats
                    )
                    ref_seconds = seconds if slow else ref_seconds
                    speedup = f"{ref_seconds / seconds:.1f}x" if ref_seconds else "n/a"
                    memory = None if args.no_memory else peak_memory_mb(impl, passes, shape, device)
                    row = dict(batch=batch, L=L, passes=passes, impl=impl, ms=seconds * 1e3, peak_mb=memory)
                    row.update(speedup=ref_seconds / seconds if ref_seconds else None, floor_ratio=seconds / floor)
                    mb = "-" if memory is None else f"{memory:.1f}"
                    line = f"| {batch} | {L} | {passes} | {impl} | {seconds * 1e3:.2f} | {speedup}"
                    line += f" | {seconds / floor:.2f}x | {mb} |"
                    if roofline:
                        gbps = scan_bytes(*shape, passes) / seconds / 1e9
                        row.update(gbps=gbps, roofline_fraction=gbps / roofline)
                        line += f" {gbps:.0f} | {100 * gbps / roofline:.0f}% |"
                    print(line, flush=True)
                    rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
