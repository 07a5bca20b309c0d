"""Load feature pickles from strangers without running their code.

``pickle.load`` calls whatever callable a file names, so a downloaded "features.pkl" can run any command. The
unpickler here resolves only the few numpy callables that rebuild arrays, dtypes and scalars (under both the
numpy 1 ``numpy.core`` and numpy 2 ``numpy._core`` names) plus a latin-1-only ``_codecs.encode`` (protocol 2
pickles write bytes through it). Dicts, lists, tuples, sets, strings, bytes and numbers need no import at all.
After loading, object-dtype arrays (MMSA's ``id`` / ``raw_text``) are checked to hold only strings and numbers.
An array is never larger than the file that holds its data: one declared larger is refused before allocation.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray, numeric

from cmamba.errors import MMSAFormatError, UnsafePickleError


def _latin1_encode(path: str | Path):
    def encode(text: str, encoding: str = "latin1") -> bytes:
        if encoding.replace("-", "").lower() != "latin1":  # any other codec is not how pickle writes bytes
            raise UnsafePickleError(path, "_codecs.encode", f"it asks for the {encoding!r} codec")
        return text.encode("latin1")

    return encode


_NUMPY = {
    (module, name): getattr(owner, name)
    for owner, name, modules in [
        (multiarray, "_reconstruct", ("numpy.core.multiarray", "numpy._core.multiarray")),
        (multiarray, "scalar", ("numpy.core.multiarray", "numpy._core.multiarray")),
        (numeric, "_frombuffer", ("numpy.core.numeric", "numpy._core.numeric")),  # protocol 5 arrays
        (np, "ndarray", ("numpy",)),
        (np, "dtype", ("numpy",)),
    ]
    for module in modules
}


def _bounded_reconstruct(path: str | Path, limit: int):
    def reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
        try:
            declared = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
        except (TypeError, ValueError) as exc:
            raise UnsafePickleError(path, "numpy._reconstruct", f"it declares an array of shape {shape!r}") from exc
        if declared > limit:
            raise UnsafePickleError(path, "numpy._reconstruct", f"it declares a {declared:,}-byte array in a "
                                    f"{limit:,}-byte file")  # fmt: skip
        return multiarray._reconstruct(cls, shape, dtype)

    return reconstruct


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path: str | Path):
        # latin1 lets numpy rebuild arrays pickled under Python 2 (their raw data arrives as str)
        super().__init__(file, encoding="latin1")
        self.path = path
        self.limit = os.fstat(file.fileno()).st_size

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and (module, name) in _NUMPY:
            return _bounded_reconstruct(self.path, self.limit)
        if (module, name) in _NUMPY:
            return _NUMPY[module, name]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode(self.path)
        raise UnsafePickleError(self.path, f"{module}.{name}")


def _check_plain(obj: Any, path: str | Path) -> None:
    """Raise unless every object array under ``obj`` holds only str / bytes / numbers / None (or such arrays)."""
    stack, seen = [obj], set()
    while stack:  # iterative: a crafted pickle may nest deeply or refer to itself
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(item, np.ndarray) and item.dtype.hasobject:
            for element in item.ravel():
                if isinstance(element, np.ndarray):
                    stack.append(element)
                elif not (element is None or isinstance(element, str | bytes | numbers.Number | np.bool_)):
                    kind = type(element).__name__
                    raise UnsafePickleError(path, kind, f"it holds an object array with a {kind} element")


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only numpy arrays / scalars and plain containers; raises UnsafePickleError."""
    with open(path, "rb") as handle:
        try:
            obj = _Unpickler(handle, path).load()
        except MemoryError as exc:  # e.g. numpy.ndarray called with a huge shape
            raise UnsafePickleError(path, "numpy.ndarray", "it asks for an array larger than memory") from exc
        except UnsafePickleError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError) as exc:  # cut off or garbled
            raise MMSAFormatError(f"{path} is not a complete pickle ({type(exc).__name__}: {exc or 'empty'}); "
                                  "copy or download it again") from exc  # fmt: skip
    _check_plain(obj, path)
    return obj
