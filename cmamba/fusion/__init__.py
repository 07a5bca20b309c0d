"""Fusion stage: the coupled selective scan (``scan``) and, built on it, the Coupled Mamba model."""

from cmamba.fusion.scan import coupled_scan, coupled_scan_ref, coupled_step, scan_backend

__all__ = ["coupled_scan", "coupled_scan_ref", "coupled_step", "scan_backend"]
