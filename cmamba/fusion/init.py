"""Mamba's default initialisation of the SSM parameters (Gu & Dao 2023), shared by models, tests and demos."""

from __future__ import annotations

import math

import torch


def mamba_A(M: int, E: int, N: int) -> torch.Tensor:
    """A^m[d, n] = -(n + 1): the S4D-real init (A_log = log(1..N)). Returns (M, E, N) float32."""
    return -torch.arange(1, N + 1, dtype=torch.float32).expand(M, E, N).contiguous()


def mamba_delta_bias(
    M: int, E: int, dt_min: float = 1e-3, dt_max: float = 1e-1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bias b with softplus(b) log-uniform in [dt_min, dt_max] (inverse softplus of the sampled Δ). (M, E)."""
    log_dt = torch.rand(M, E, generator=generator) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = log_dt.exp()
    return dt + torch.log(-torch.expm1(-dt))  # softplus^{-1}(dt)
