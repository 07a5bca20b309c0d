"""Every Triton kernel of the package, in every configuration its autotuner may choose, compiled for real NVIDIA
GPUs (sm_80, sm_90) on this CPU machine and assembled with ``ptxas -v``: it must compile without register spills
at the model's state sizes (issue #13; the numbers are in BENCHMARKS.md). The group size (M chains coupled, or
one) is a runtime argument, so these binaries serve every M and coupling.

The compilation runs ``bench/ptxas.py`` in a subprocess without ``TRITON_INTERPRET``: under the interpreter (which
the other tests use) the kernels are not compilable JIT functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmamba.fusion.ops import aot
from cmamba.fusion.ops import triton as kernels

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ptxas") / "rows.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "ptxas.py"), "--all", "--json", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT / "bench")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_kept_configuration_compiles_without_spills(compiled):
    kept = [r for r in compiled if r["kept"]]
    expected = {(k, a, n) for k in ("forward", "backward") for a in aot.ARCHS for n in aot.STATE_SIZES}
    assert {(r["kernel"], r["arch"], r["BLOCK_N"]) for r in kept} == expected  # every case has a configuration
    assert all(0 < r["registers"] <= 255 for r in kept)
    spilled = [r for r in kept if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, spilled


def test_one_backward_configuration_fits_in_128_registers(compiled):
    """At the paper's state size (N = 64) on sm_90: room for two blocks of 256 threads per SM."""
    used = [r["registers"] for r in compiled if r["kept"] and r["kernel"] == "backward" and r["arch"] == 90
            and r["BLOCK_N"] == 64]  # fmt: skip
    assert used and min(used) <= 128, used


def test_the_pruned_configurations_are_the_ones_that_spill_or_crowd(compiled):
    """What the pruning removes includes every configuration that spilled (why the rule exists)."""
    spilled = [r for r in compiled if r["spill_stores"]]
    assert spilled and not any(r["kept"] for r in spilled)


def test_pruning_keeps_the_small_tiles_and_drops_the_large_ones():
    kept = {(c.kwargs["BLOCK_E"], c.num_warps) for c in kernels.prune(kernels.all_configs(), {"BLOCK_N": 64})}
    assert (8, 8) in kept and (32, 2) not in kept and (16, 4) not in kept  # (16, 4): 246 registers in the backward
    assert len(kernels.prune(kernels.all_configs(), {"BLOCK_N": 16})) > len(kept)
