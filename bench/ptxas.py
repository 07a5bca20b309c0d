"""Registers, spills and shared memory of every Triton kernel configuration, compiled for sm_80 and sm_90 without
a GPU (``cmamba.fusion.ops.aot``); prints the Markdown table recorded in BENCHMARKS.md.

    python bench/ptxas.py              # every kernel × kept configuration × state size × architecture
    python bench/ptxas.py --all        # also the configurations the pruning removes (to see why)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cmamba.fusion.ops import aot
from cmamba.fusion.ops import triton as kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="include the pruned configurations")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    print("| kernel | arch | BLOCK_N | BLOCK_E | warps | kept | registers | spill stores / loads (B) |")
    print("|---|---|---|---|---|---|---|---|")
    for kernel in ("forward", "backward"):
        for arch in aot.ARCHS:
            for n in aot.STATE_SIZES:
                kept = aot.configurations(n)
                for config in kernels.all_configs() if args.all else kept:
                    r = aot.compile_kernel(kernel, arch, n, config)
                    rows.append({**r.__dict__, "kept": config in kept})
                    verdict = "yes" if config in kept else "pruned"
                    print(f"| {kernel} | sm_{arch} | {n} | {r.BLOCK_E} | {r.num_warps} | {verdict} | {r.registers} | "
                          f"{r.spill_stores} / {r.spill_loads} |", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
