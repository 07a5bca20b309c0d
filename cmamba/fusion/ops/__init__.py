"""Kernels of the coupled selective scan — they know no model.

``coupled_scan`` holds the public API (``coupled_scan``, its pure-PyTorch twin ``coupled_scan_ref`` with the same
signature, ``coupled_step``, ``scan_backend`` — the one place that picks the fast path — and the glossary of
code names to the paper's symbols); ``cpu`` (numba), ``triton`` (GPU, or Triton's interpreter) and ``chunked``
(pure PyTorch, any device) are its backends; ``aot`` compiles the Triton kernels for sm_80 / sm_90 without a GPU
and reads ``ptxas -v`` (registers, spills). Modules here import torch, numba, triton and each other only,
never ``cmamba.fusion``'s modules or models.
"""

from cmamba.fusion.ops.coupled_scan import COUPLING_MODES, coupled_scan, coupled_scan_ref, coupled_step, scan_backend

__all__ = ["COUPLING_MODES", "coupled_scan", "coupled_scan_ref", "coupled_step", "scan_backend"]
