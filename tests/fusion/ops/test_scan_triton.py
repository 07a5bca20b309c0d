"""The Triton kernels beyond the common equivalence tests: several channel blocks per program grid, and the
autotuner running every configuration in turn on the same output buffers (Triton's interpreter on CPU)."""

from __future__ import annotations

import pytest
import torch
import triton
from triton.runtime.autotuner import Autotuner

from cmamba.fusion.ops import triton as kernels
from cmamba.fusion.ops.coupled_scan import coupled_scan, coupled_scan_ref
from tests.fusion.ops.scan_inputs import make_inputs
from tests.fusion.ops.test_scan_equivalence import MODES, TOLERANCE, assert_matches, run_scan

E_BLOCKS = 19  # 3 blocks of 8 channels, the last one partial


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("M", [1, 3, 4])
def test_several_channel_blocks_match_the_reference(M, mode, monkeypatch):
    monkeypatch.setenv("CMAMBA_SCAN_BACKEND", "triton")
    inputs = make_inputs(2, M, E_BLOCKS, 6, 37)
    assert_matches(run_scan(coupled_scan, inputs, mode), run_scan(coupled_scan_ref, inputs, mode), 5e-5)


def _trial_without_timing(self, *args, config, **meta):
    """What the autotuner does around each trial (its reset / restore hooks and a real run), with a made-up time
    that makes the configuration with the fewest channel blocks win: its partial sums cover fewer programs than
    the trials' did."""
    full = {**self.nargs, **meta, **config.all_kwargs()}
    if config.pre_hook:
        config.pre_hook(full)
    self.pre_hook(full)
    self.fn.run(*args, **meta, **config.all_kwargs())
    self.post_hook(full, exception=None)
    return [1.0 / config.kwargs["BLOCK_E"]] * 3


@pytest.mark.parametrize("mode", ["weights", "mean"])
def test_autotuning_trials_leave_no_trace_in_the_gradients(mode, monkeypatch):
    monkeypatch.setenv("CMAMBA_SCAN_BACKEND", "triton")
    configs = [triton.Config({"BLOCK_E": be}, num_warps=2) for be in (8, 16, 32)]  # all kept by prune
    for kernel in (kernels._scan_fwd_kernel, kernels._scan_bwd_kernel):
        monkeypatch.setattr(kernel, "configs", configs)
        monkeypatch.setattr(kernel, "cache", {})
    monkeypatch.setattr(Autotuner, "_bench", _trial_without_timing)
    inputs = make_inputs(2, 3, E_BLOCKS, 6, 21)
    tuned = run_scan(coupled_scan, inputs, mode)  # first call at this shape: every configuration runs in turn
    assert kernels._scan_bwd_kernel.best_config.kwargs["BLOCK_E"] == 32
    assert_matches(tuned, run_scan(coupled_scan_ref, inputs, mode), TOLERANCE[torch.float32])
