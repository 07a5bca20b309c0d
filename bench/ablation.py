"""Fusion ablation on the synthetic cue-flip task (a script, not a test).

    python bench/ablation.py                      # every fusion variant, 3 seeds, the defaults below
    python bench/ablation.py --epochs 40 --seeds 1111 1112 1113 1114 1115

The label of a cue-flip clip depends on the order of events in two different modalities (see
``cmamba.datasets.synthetic``), so fusion that exchanges state across modalities over time should win.
Trains each variant with ``train_seeds`` (selection on valid, metrics on test) and prints MAE, Corr and
Acc-2 (Non0) as mean ± std over seeds, then checks coupled against average, concat and mamba fusion.
"coupled-post_norm" is the coupled model without the shared post-LayerNorm on block outputs (Algorithm 1 as
written; the default follows the released code and normalises them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch

from cmamba.datasets.synthetic import CUE_FLIP_DIMS, cue_flip
from cmamba.fusion.config import FUSIONS, FusionConfig, TrainConfig
from cmamba.fusion.train import train_seeds

METRICS = ("MAE", "Corr", "Non0_acc_2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    variants = [*FUSIONS, "coupled-post_norm"]
    parser.add_argument("--fusions", nargs="+", default=variants, choices=variants)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()

    train_set, valid_set, test_set = cue_flip(args.train_size, 1), cue_flip(300, 2), cue_flip(500, 3)
    step = max(1, args.epochs // 2)
    recipe = TrainConfig(epochs=args.epochs, batch_size=32, lr=args.lr, lr_step=step, patience=None, progress=False)
    print(f"# fusion ablation on cue_flip, {time.strftime('%Y-%m-%d')}, {platform.machine()} {os.cpu_count()} CPUs,"
          f" torch {torch.__version__}")  # fmt: skip
    print(f"# command: {' '.join(sys.argv)}")
    print(f"# train/valid/test {len(train_set)}/{len(valid_set)}/{len(test_set)}, d_model {args.d_model}, d_state "
          f"{args.d_state}, layers {args.layers}, epochs {args.epochs}, lr {args.lr}, seeds {args.seeds}")  # fmt: skip
    print("| fusion | " + " | ".join(f"test {m}" for m in METRICS) + " | minutes |")
    print("|---|" + "---|" * (len(METRICS) + 1))
    summaries = {}
    root = args.out or tempfile.mkdtemp(prefix="cmamba-ablation-")
    for fusion in args.fusions:
        name, _, without = fusion.partition("-")
        cfg = FusionConfig(modalities=dict(CUE_FLIP_DIMS), fusion=name, d_model=args.d_model, d_state=args.d_state,
                           n_layers=args.layers, post_norm=without != "post_norm")  # fmt: skip
        start = time.perf_counter()
        summary = train_seeds(cfg, recipe, train_set, valid_set, f"{root}/{fusion}", test_set, tuple(args.seeds))
        summaries[fusion] = summary["test"]
        cells = [f"{summary['test'][m]['mean']:.4f} ± {summary['test'][m]['std']:.4f}" for m in METRICS]
        print(f"| {fusion} | " + " | ".join(cells) + f" | {(time.perf_counter() - start) / 60:.1f} |", flush=True)
    if "coupled" in summaries:
        print()
        ours = summaries["coupled"]["MAE"]
        for rival in ("average", "concat", "mamba"):
            if rival in summaries:
                theirs = summaries[rival]["MAE"]
                margin = theirs["mean"] - ours["mean"]
                spread = max(ours["std"], theirs["std"])
                verdict = "beats" if margin > spread else "does NOT beat"
                print(f"coupled {verdict} {rival} on test MAE: margin {margin:+.4f} vs largest seed std {spread:.4f}")
    print(json.dumps({"runs": root}))


if __name__ == "__main__":
    main()
