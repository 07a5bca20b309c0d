"""Inference latency and peak memory of the fusion models against sequence length (a script, not a test).

    python bench/model.py                       # L in {100, ..., 500}, batch 32, paper-size models
    python bench/model.py --lengths 100 500 --repeats 3

Models (FusionConfig defaults: d_model 128, d_state 64, 3 layers, MOSEI dims 768/74/35): ``coupled``,
``cross_attention`` (MulT-style at the same d_model) and ``mamba`` (independent chains). Every model sees all
three modalities at the full length L — no resampling — as in the paper's Figures 3 and 4. When the ``MMSA``
package is installed, its own MulT (MOSEI regression config: d 30, 6 heads, 4 levels) runs on the same
inputs as an outside reference. Also reports how long the coupled scans take inside the coupled model and
the exponential floor for the same shapes (n_layers · batch · M · E · N · L exponentials).
Medians over repeats after warm-up; peak memory of one forward in a fresh process (CPU) or
torch.cuda.max_memory_allocated (CUDA).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from benchutil import cuda_peak_mb, machine, median_seconds, peak_rss_mb

import cmamba.fusion.layers as layers
from cmamba.fusion.config import FusionConfig
from cmamba.fusion.model import build_model

DIMS = {"text": 768, "audio": 74, "vision": 35}
OURS = ("coupled", "cross_attention", "mamba")


def mmsa_mult():
    """MMSA's MulT at its MOSEI regression settings, or None when MMSA is not installed."""
    try:
        from easydict import EasyDict
        from MMSA.models.singleTask.MULT import MULT
    except ImportError:
        return None
    args = EasyDict(
        use_bert=False, dst_feature_dim_nheads=(30, 6), feature_dims=tuple(DIMS.values()), nlevels=4,
        attn_dropout=0.4, attn_dropout_a=0.0, attn_dropout_v=0.0, relu_dropout=0.0, embed_dropout=0.0,
        res_dropout=0.0, output_dropout=0.5, text_dropout=0.3, attn_mask=True, train_mode="regression",
        num_classes=1, conv1d_kernel_size_l=5, conv1d_kernel_size_a=1, conv1d_kernel_size_v=3,
    )  # fmt: skip
    return MULT(args)


def forward_fn(name: str, batch: int, L: int, device: str) -> Callable[[], object] | None:
    g = torch.Generator().manual_seed(0)
    x = {n: torch.randn(batch, L, d, generator=g).to(device) for n, d in DIMS.items()}
    if name == "MMSA MulT":
        model = mmsa_mult()
        if model is None:
            return None
        model = model.to(device).eval()
        return lambda: torch.no_grad()(model)(x["text"], x["audio"], x["vision"])
    model = build_model(FusionConfig(modalities=DIMS, fusion=name)).to(device).eval()
    return lambda: torch.no_grad()(model)(x)


def peak_memory_mb(name: str, batch: int, L: int, device: str) -> float:
    if device == "cuda":
        return cuda_peak_mb(forward_fn(name, batch, L, device))
    spec = json.dumps([name, batch, L])
    done = subprocess.run([sys.executable, __file__, "--peak-of", spec], check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def scan_seconds_inside(name: str, batch: int, L: int, device: str) -> float:
    """Seconds one forward of the coupled model spends in ``coupled_scan`` (all layers)."""
    fn = forward_fn(name, batch, L, device)
    fn()
    spent = []
    original = layers.coupled_scan

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        spent.append(time.perf_counter() - start)
        return out

    layers.coupled_scan = timed
    try:
        fn()
    finally:
        layers.coupled_scan = original
    return sum(spent)


def exp_floor_seconds(batch: int, L: int, device: str, cfg: FusionConfig) -> float:
    exponents = -torch.rand(batch, len(DIMS), cfg.expand * cfg.d_model, cfg.d_state, L, device=device)
    out = torch.empty_like(exponents)
    return cfg.n_layers * median_seconds(lambda: torch.exp(exponents, out=out), device, 1, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 200, 300, 400, 500])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        name, batch, L = json.loads(args.peak_of)
        fn = forward_fn(name, batch, 8, "cpu")
        fn()  # one-time costs on a short input
        print(peak_rss_mb(forward_fn(name, batch, L, "cpu")))
        return

    device = args.device
    names = [*OURS, "MMSA MulT"] if mmsa_mult() is not None else list(OURS)
    print(f"# fusion model inference benchmark, {time.strftime('%Y-%m-%d')}, {machine(device)}")
    print(f"# command: {' '.join(sys.argv)}; batch {args.batch}, MOSEI dims {DIMS}, full length L, no resampling")
    if "MMSA MulT" not in names:
        print("# MMSA is not installed (pip install MMSA easydict): its MulT reference is skipped")
    print("| L | model | median ms | vs coupled | peak MB |")
    print("|---|---|---|---|---|")
    cfg = FusionConfig(modalities=DIMS).resolved()
    for L in args.lengths:
        times = {}
        for name in names:
            fn = forward_fn(name, args.batch, L, device)
            times[name] = median_seconds(fn, device, 1, args.repeats)
            memory = peak_memory_mb(name, args.batch, L, device)
            ratio = times[name] / times["coupled"]
            print(f"| {L} | {name} | {times[name] * 1e3:.1f} | {ratio:.2f}x | {memory:.0f} |", flush=True)
        inside = scan_seconds_inside("coupled", args.batch, L, device)
        floor = exp_floor_seconds(args.batch, L, device, cfg)
        print(f"| {L} | coupled: scans inside the model | {inside * 1e3:.1f} | exp floor {floor * 1e3:.1f} ms "
              f"({inside / floor:.2f}x) | |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
