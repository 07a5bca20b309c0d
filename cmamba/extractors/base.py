"""The extractor contract: every extractor turns one clip's media into a timestamped ``FeatureSequence``.

An extractor declares a ``name`` (its registry key), a ``version`` (bumped whenever its output changes, so
caches re-extract), a ``config_type`` dataclass and its ``feature_names``; ``extract`` is pure (no file
writing, no scheduling). Heavy models are loaded once per process through ``shared_model`` and reused across
clips. ``validate_sequence`` checks the physical invariants at write time and reports what it repaired.
"""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class FeatureSequence:
    """One modality of one clip: values (T, F) float32, timestamps (T,) seconds, mask (T,) bool (False where
    the frame carries no observation, e.g. no face), and the F feature names. ``info`` records repairs."""

    values: np.ndarray
    timestamps: np.ndarray
    mask: np.ndarray
    names: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.values.shape[0])


class Extractor(ABC):
    """Base class of all extractors; subclasses are registered with ``@register_extractor``."""

    name: ClassVar[str]
    version: ClassVar[str]
    config_type: ClassVar[type]

    def __init__(self, config: Any = None):
        if config is None:
            config = self.config_type()
        elif not isinstance(config, self.config_type):
            raise TypeError(f"{self.name} takes a {self.config_type.__name__}, got {type(config).__name__}")
        self.config = config

    @property
    @abstractmethod
    def feature_names(self) -> tuple[str, ...]:
        """Names of the F output features, in column order."""

    @property
    def feature_dim(self) -> int:
        return len(self.feature_names)

    @abstractmethod
    def extract(self, *args: Any, **kwargs: Any) -> FeatureSequence:
        """Compute the features of one clip (pure: no IO beyond reading the given media)."""

    def describe(self) -> dict[str, Any]:
        """What a cache manifest records about this extractor."""
        return {
            "name": self.name,
            "version": self.version,
            "config": dataclasses.asdict(self.config),
            "feature_dim": self.feature_dim,
        }


EXTRACTORS: dict[str, type[Extractor]] = {}


def register_extractor(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    for attr in ("name", "version", "config_type"):
        if not hasattr(cls, attr):
            raise TypeError(f"extractor {cls.__name__} must define the class attribute {attr!r}")
    if cls.name in EXTRACTORS and EXTRACTORS[cls.name] is not cls:
        raise ValueError(f"an extractor named {cls.name!r} is already registered ({EXTRACTORS[cls.name].__name__})")
    EXTRACTORS[cls.name] = cls
    return cls


def available_extractors() -> list[str]:
    return sorted(EXTRACTORS)


def get_extractor(name: str, config: Any = None) -> Extractor:
    """An instance of the registered extractor ``name`` (with its default config unless one is given)."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; available: {available_extractors()}")
    return EXTRACTORS[name](config)


_MODELS: dict[Any, Any] = {}
_MODELS_LOCK = threading.RLock()  # re-entrant: a factory may resolve another shared value


def shared_model(key: Any, factory: Callable[[], Any]) -> Any:
    """The process-wide instance for ``key``, created by ``factory`` on first use (models load once per worker)."""
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = factory()
        return _MODELS[key]


def validate_sequence(
    seq: FeatureSequence,
    extractor: str,
    expected_dim: int,
    duration: float | None = None,
    rate: float | None = None,
) -> FeatureSequence:
    """Check a sequence before it is written; returns it with non-finite values replaced by 0 and counted.

    Raises ValueError naming the extractor and the broken invariant: shapes that disagree, a feature dim
    different from the declared one, timestamps that are not strictly increasing or lie outside the clip, or
    a frame count inconsistent with duration × rate (more than one frame off).
    """
    values = np.asarray(seq.values)
    T = values.shape[0] if values.ndim == 2 else -1
    if values.ndim != 2:
        raise ValueError(f"{extractor}: values must be (T, F), got shape {values.shape}")
    if values.shape[1] != expected_dim or len(seq.names) != expected_dim:
        raise ValueError(
            f"{extractor}: declares {expected_dim} features but produced {values.shape[1]} values and "
            f"{len(seq.names)} names per frame; fix the extractor's feature_names or its output"
        )
    timestamps, mask = np.asarray(seq.timestamps, dtype=np.float64), np.asarray(seq.mask, dtype=bool)
    if timestamps.shape != (T,) or mask.shape != (T,):
        raise ValueError(f"{extractor}: {T} frames but timestamps {timestamps.shape} and mask {mask.shape}")
    if T > 1 and not np.all(np.diff(timestamps) > 0):
        bad = int(np.argmin(np.diff(timestamps) > 0))
        raise ValueError(
            f"{extractor}: timestamps must increase strictly; frame {bad + 1} at {timestamps[bad + 1]:.4f} s "
            f"follows {timestamps[bad]:.4f} s"
        )
    if duration is not None:
        if T and (timestamps[0] < -1e-6 or timestamps[-1] > duration + 1e-6):
            raise ValueError(
                f"{extractor}: timestamps span [{timestamps[0]:.4f}, {timestamps[-1]:.4f}] s, outside the clip's "
                f"[0, {duration:.4f}] s"
            )
        if rate is not None and abs(T - duration * rate) > 1 + 1e-9:
            raise ValueError(
                f"{extractor}: {T} frames for {duration:.4f} s at {rate:g} Hz (expected about "
                f"{duration * rate:.1f}); the extractor drops or invents frames"
            )
    finite = np.isfinite(values)
    replaced = int((~finite).sum())
    clean = np.where(finite, values, 0.0).astype(np.float32)
    info = {**seq.info, "non_finite_replaced": replaced}
    return FeatureSequence(clean, timestamps, mask, tuple(seq.names), info)
