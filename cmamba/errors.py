"""Every exception cmamba raises for a user to act on; each message names what is wrong and how to fix it.

The CLI prints these as one line (the traceback goes to the log file). No heavy imports: the CLI imports this
module before anything else.
"""

from __future__ import annotations

import pickle
from pathlib import Path


class ConfigError(ValueError):
    """An unreadable or invalid config; the message names the file, the key and what is allowed."""


class LayoutError(ValueError):
    """The dataset layout itself is wrong; nothing has been extracted."""


class NoMediaError(LayoutError):
    """The input holds no media file at all (the CLI exits with code 2)."""


class CacheError(RuntimeError):
    """The cache folder cannot be used (locked by another run, missing, unwritable, from another schema)."""


class MediaError(ValueError):
    """A clip that cannot be decoded; ``stage`` is "open", "video" or "audio"."""

    def __init__(self, path: str | Path, stage: str, reason: str):
        super().__init__(f"{path}: {stage}: {reason}")
        self.path, self.stage, self.reason = str(path), stage, reason


class TranscriptError(ValueError):
    """A transcript that cannot be used; ``path`` is None for one that did not come from a file."""

    stage = "transcript"

    def __init__(self, path: str | Path | None, reason: str):
        super().__init__(f"{path}: {self.stage}: {reason}" if path is not None else f"{self.stage}: {reason}")
        self.path, self.reason = (None if path is None else str(path)), reason


class ModelNotFoundError(FileNotFoundError):
    """No usable model file: missing, corrupted or not a model; the message says how to fix it."""


class ModelInstallError(RuntimeError):
    """Installing a model file failed (pip, a wrong source, a hash mismatch); the message says how to fix it."""


class MMSAFormatError(ValueError):
    """A pickle or cache that does not fit the MMSA / MulT layout; the message names the split and key."""


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for something a feature pickle never needs (and a malicious one would)."""

    def __init__(self, path: str | Path, name: str, reason: str | None = None):
        self.path, self.name = str(path), name
        allowed = "only numpy arrays, dicts, lists, strings and numbers are allowed"
        super().__init__(f"refusing to load {path}: {reason or f'it tries to import {name}'}; {allowed}")


class UnscorableCheckpointError(ValueError):
    """The checkpoint's features were not extracted from raw media by this tool, so raw clips cannot be scored."""


class SchemaMismatchError(ValueError):
    """The registered extractors no longer produce the features the checkpoint was trained on."""


class OutputExistsError(ValueError):
    """The output folder already holds something else (another training, another kind of cache): refused, so
    that nothing is replaced or mixed silently; the message names ``--overwrite`` or another ``--out``."""


class SchedulerError(RuntimeError):
    """The Dask scheduler given with ``--scheduler`` cannot be reached."""


class CheckpointError(ValueError):
    """A checkpoint folder whose files cannot be read (truncated weights, a damaged model.json)."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the message says whether a checkpoint was kept."""
