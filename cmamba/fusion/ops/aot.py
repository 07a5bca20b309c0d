"""Ahead-of-time compilation of the package's Triton kernels for real NVIDIA GPUs, on a machine without one.

The ``triton`` wheel compiles for any target and ships NVIDIA's assembler, so each kernel × autotune
configuration × shape can be compiled to PTX for sm_80 (A100) and sm_90 (H100 / H200) and assembled with
``ptxas -v``, which reports registers per thread and spill stores / loads. The tests assert that
every configuration the autotuner may pick compiles without spills (``tests/fusion/test_triton_compile.py``);
``bench/ptxas.py`` prints the table recorded in BENCHMARKS.md.

Only the constexpr arguments change the generated code: ``BLOCK_N`` (the state size N padded to a power of two)
and the configuration's ``BLOCK_E``, warps and register budget. The group size G (all M chains when coupled, 1
when independent), batch, E and L are runtime integers, so one binary per (BLOCK_N, configuration) serves every
M and coupling.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHS = (80, 90)  # sm_80: A100; sm_90: H100 / H200
PTXAS = "ptxas-blackwell"  # Triton 3.9 emits PTX 9.4, which only the wheel's newer ptxas accepts


@dataclass(frozen=True)
class CompiledKernel:
    kernel: str  # "forward" | "backward"
    arch: int
    BLOCK_N: int
    BLOCK_E: int
    num_warps: int
    registers: int
    spill_stores: int  # bytes per thread
    spill_loads: int


def _kernels() -> dict[str, Any]:
    from cmamba.fusion.ops import triton as kernels

    return {"forward": kernels._scan_fwd_kernel, "backward": kernels._scan_bwd_kernel}


def _jit(fn: Any) -> Any:
    from triton.runtime.jit import JITFunction

    while not isinstance(fn, JITFunction):  # unwrap @triton.autotune / @triton.heuristics
        fn = fn.fn
    return fn


def configurations(BLOCK_N: int) -> list[Any]:
    """The autotune configurations a kernel may run with at this state size (after ``prune``)."""
    from cmamba.fusion.ops import triton as kernels

    return kernels.prune(kernels.all_configs(), {"BLOCK_N": BLOCK_N})


def _signature(fn: Any) -> dict[str, str]:
    """Every parameter: the constexprs, pointers (``*_ptr``) to fp32, and 32-bit integers."""
    return {p.name: "constexpr" if p.is_constexpr else "*fp32" if p.name.endswith("_ptr") else "i32" for p in fn.params}


def compile_kernel(kernel: str, arch: int, BLOCK_N: int, config: Any) -> CompiledKernel:
    """Compile one configuration for ``sm_<arch>`` and read ``ptxas -v``'s report."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from cmamba.fusion.ops.triton import CHUNK

    fn = _jit(_kernels()[kernel])
    constexprs = {"BLOCK_N": BLOCK_N, "CHUNK": CHUNK, **config.kwargs}
    if kernel == "forward":
        constexprs["SAVE_CKPT"] = True  # the training path: the larger of the two variants
    source = ASTSource(fn=fn, signature=_signature(fn), constexprs=constexprs)
    compiled = triton.compile(
        source, target=GPUTarget("cuda", arch, 32), options={"num_warps": config.num_warps, "maxnreg": config.maxnreg}
    )
    report = ptxas_report(compiled.asm["ptx"], arch)
    return CompiledKernel(kernel, arch, BLOCK_N, config.kwargs["BLOCK_E"], config.num_warps, **report)


def ptxas_report(ptx: str, arch: int) -> dict[str, int]:
    """Registers and spill stores / loads (bytes per thread) of ``ptx`` assembled for sm_<arch>."""
    import triton.backends.nvidia as nvidia

    ptxas = Path(nvidia.__file__).parent / "bin" / PTXAS
    suffix = "a" if arch == 90 else ""  # Triton targets sm_90a (wgmma) on Hopper
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run([str(ptxas), f"-arch=sm_{arch}{suffix}", "-v", str(source), "-o", os.devnull],
                              capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed for sm_{arch}: {done.stderr.strip()[-2000:]}")
    text = done.stderr + done.stdout

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        return int(found.group(1)) if found else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
    }


STATE_SIZES = (16, 64)  # BLOCK_N of the model's shapes: N = 16 (d_state of the small models) and 64 (the paper's)
