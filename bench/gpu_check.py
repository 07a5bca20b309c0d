"""One-command check of the CUDA paths on a machine with an NVIDIA GPU (``./run gpu-check``): a script, not a test.

1. the Triton scan against the reference loop on the GPU at the paper's shapes (M 3, E 256, N 64, L 50 and 500),
   fp32 and bf16, mean / sum / learned coupling and independent chains: outputs, last state, every gradient;
2. ``bench/scan.py`` (GB/s and the fraction of the HBM roofline);
3. ``bench/model.py`` at L 100-2000: coupled vs cross-attention, time and peak GPU memory (the paper's Fig. 3/4);
4. a short bf16 training run on synthetic data.
Writes the report as JSON and as a Markdown table into the results folder beside this script; exits 1 when a
comparison fails, 2 without CUDA.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
SHAPES = [(2, 3, 256, 64, 50), (2, 3, 256, 64, 500)]  # (batch, M, E, N, L)
TOLERANCE = {torch.float32: 5e-5, torch.bfloat16: 2e-2}  # max |fast - ref| / max |ref|, as the CPU tests


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-6))


def compare_scan() -> list[dict]:
    from cmamba.fusion.ops.coupled_scan import coupled_scan, coupled_scan_ref, scan_backend

    rows = []
    for batch, M, E, N, L in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            for mode in ("mean", "sum", "weights", "none"):
                g = torch.Generator().manual_seed(0)
                x = {
                    "u": torch.randn(batch, M, E, L, generator=g),
                    "delta": 0.5 * torch.randn(batch, M, E, L, generator=g),
                    "A": -1.0 - 2.0 * torch.rand(M, E, N, generator=g),
                    "B": torch.randn(batch, M, N, L, generator=g),
                    "C": torch.randn(batch, M, N, L, generator=g),
                }
                weights = torch.softmax(torch.linspace(-0.5, 0.7, M), 0)
                results = []
                for fn in (coupled_scan, coupled_scan_ref):
                    leaves = {k: v.to("cuda", dtype).requires_grad_() for k, v in x.items()}
                    kwargs = {"delta_softplus": True, "return_last_state": True}
                    if mode == "weights":
                        leaves["weights"] = weights.cuda().requires_grad_()
                        kwargs["weights"] = leaves["weights"]
                    else:
                        kwargs["coupling"] = mode
                    y, last = fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], **kwargs)
                    loss = y.float().sin().sum() + last.float().cos().sum()
                    grads = torch.autograd.grad(loss, list(leaves.values()))
                    named = {f"grad_{k}": v for k, v in zip(leaves, grads, strict=True)}
                    results.append({"y": y, "last": last, **named})
                fast, ref = results
                errors = {k: relative_error(fast[k], ref[k]) for k in ref}
                worst = max(errors, key=errors.get)
                rows.append({"shape": [batch, M, E, N, L], "dtype": str(dtype).split(".")[-1], "mode": mode,
                             "backend": scan_backend(x["u"].cuda()), "worst": worst, "error": errors[worst],
                             "ok": errors[worst] <= TOLERANCE[dtype]})  # fmt: skip
                print(f"scan {rows[-1]}", flush=True)
    return rows


def short_training() -> dict:
    from cmamba.datasets.synthetic import CUE_FLIP_DIMS, cue_flip
    from cmamba.fusion.config import FusionConfig, TrainConfig
    from cmamba.fusion.train import train

    train_set, valid_set = cue_flip(2048, seed=0), cue_flip(512, seed=1)
    config = FusionConfig(modalities=dict(CUE_FLIP_DIMS), d_model=64, d_state=16, n_layers=2)
    recipe = TrainConfig(dataset="mosi", epochs=5, batch_size=128, amp=True, device="cuda", progress=False)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, recipe, train_set, valid_set, Path(tmp))
    return {"seconds": time.perf_counter() - start, "valid": result["valid"], "amp": "bf16"}


def run_script(name: str, *args: str, results: bool = False) -> dict:
    """Run a benchmark script (its table goes to the terminal); ``results``: it also writes JSON (``--json``)."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    command = [sys.executable, str(HERE / name), *args, *(["--json", str(out)] if results else [])]
    done = subprocess.run(command, cwd=HERE)
    return {"exit": done.returncode, **(json.loads(out.read_text()) if out.stat().st_size else {})}


def main() -> int:
    if not torch.cuda.is_available():
        print(
            "gpu-check needs an NVIDIA GPU with CUDA; this machine has none (CPU checks: ./run tests)", file=sys.stderr
        )
        return 2
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "scan": compare_scan()}
    report["bench_scan"] = run_script("scan.py", results=True)
    report["bench_model"] = run_script("model.py", "--lengths", "100", "500", "1000", "2000", "--batch", "8")
    report["training"] = short_training()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# GPU check on {report['device']} (torch {report['torch']})", "",
             "| shape (batch, M, E, N, L) | dtype | coupling | backend | worst tensor | max rel. error | ok |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['shape']} | {r['dtype']} | {r['mode']} | {r['backend']} | {r['worst']} | {r['error']:.1e} | "
              f"{'yes' if r['ok'] else 'NO'} |" for r in report["scan"]]  # fmt: skip
    lines += ["", f"bench/scan.py exit {report['bench_scan']['exit']}, bench/model.py exit "
              f"{report['bench_model']['exit']}; training: {report['training']}"]  # fmt: skip
    (HERE / "results" / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    failed = [r for r in report["scan"] if not r["ok"]] or report["bench_scan"]["exit"] or report["bench_model"]["exit"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
