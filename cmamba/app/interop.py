"""MMSA interoperability journeys behind ``cmamba import-mmsa`` and ``cmamba export``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmamba.constants import EXPORT_FORMATS
from cmamba.datasets.mmsa import export_mmsa, export_mult, import_mmsa

__all__ = ["export_cache", "import_mmsa"]


def export_cache(
    cache: str | Path,
    out: str | Path,
    fmt: str = "mmsa",
    align: str = "native",
    max_len: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Write the cache as an MMSA (``fmt="mmsa"``) or MulT (``"mult"``) pickle at ``out``; returns what the
    exporter reports."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {EXPORT_FORMATS}")
    exporter = export_mmsa if fmt == "mmsa" else export_mult
    return exporter(cache, out, align=align, max_len=dict(max_len) if max_len else None)
