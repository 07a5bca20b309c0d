"""MMSA interoperability: ``importer`` turns MMSA feature pickles into a cmamba cache, ``exporter`` writes a cache
as an MMSA or MulT / MultiBench pickle, ``safe_pickle`` is the restricted unpickler (numpy arrays, dicts, lists,
strings and numbers only) every pickle is read with. Imports numpy, the pipeline's cache, the extractors'
alignment and the shared modules.
"""

from cmamba.datasets.mmsa.exporter import export_mmsa, export_mult
from cmamba.datasets.mmsa.importer import import_mmsa

__all__ = ["export_mmsa", "export_mult", "import_mmsa"]
