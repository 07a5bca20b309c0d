"""The extractor contract: every extractor turns one typed input of one clip into a timestamped ``FeatureSequence``.

An extractor declares (class attributes) its ``name`` (the registry key), ``version`` (bumped whenever its output
changes, so caches re-extract), ``modality`` (one of ``cmamba.constants.MODALITIES``), ``input_type`` (``Frames``,
``Samples`` or ``Words``) and ``config_type`` (a frozen dataclass, unique to the extractor); and (methods) its
``feature_names``, the ``input_spec`` it wants decoded (frame or sample rate), its ``frame_rate`` for validation,
the ``model_files`` whose sha256 a cache records, and ``absent_reason`` (when a sequence means "the clip does not
carry this modality", e.g. no face in any frame). ``extract`` is pure: no file writing, no scheduling. The
pipeline handles every registered extractor through this contract alone, so a new extractor touches only its own
module and its registration (an import in ``cmamba.extractors``).

Heavy models are loaded once per process through ``shared_model``. ``validate_sequence`` checks the physical
invariants at write time and reports what it repaired.
"""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from cmamba.constants import MODALITIES


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


@dataclass(frozen=True, eq=False)
class Frames:
    """Video frames on a regular grid, uint8 RGB with timestamps in seconds, increasing: either arrays
    (``images`` (T, H, W, 3) and ``timestamps`` (T,)) or a ``stream`` of (t, image (H, W, 3)) pairs that is consumed
    once, so a long video never sits in memory (what the pipeline passes). Iterating yields (t, image) pairs."""

    images: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    stream: Iterable[tuple[float, np.ndarray]] | None = None

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        if self.stream is not None:
            return iter(self.stream)
        return zip(np.asarray(self.timestamps, dtype=np.float64), self.images, strict=True)


@dataclass(frozen=True, eq=False)
class Samples:
    """Mono audio: samples (S,) float32 at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int


@dataclass(frozen=True, eq=False)
class Words:
    """W words and their (W, 2) start / end seconds (ordered, non-overlapping, inside the clip)."""

    words: tuple[str, ...]
    times: np.ndarray


InputKind = Literal["frames", "samples", "words"]
INPUT_KINDS: dict[type, InputKind] = {Frames: "frames", Samples: "samples", Words: "words"}
InputT = TypeVar("InputT", Frames, Samples, Words)


@dataclass(frozen=True)
class InputSpec:
    """What an extractor wants decoded: ``frames`` at ``rate`` fps (larger than ``max_side`` pixels downscaled),
    mono ``samples`` at ``rate`` Hz, or timed ``words`` (no rate)."""

    kind: InputKind
    rate: float | None = None
    max_side: int | None = None


class Extractor(ABC, Generic[InputT]):
    """Base class of all extractors; subclasses are registered with ``@register_extractor`` (module doc)."""

    name: ClassVar[str]
    version: ClassVar[str]
    modality: ClassVar[str]
    input_type: ClassVar[type]
    config_type: ClassVar[type]
    # Optional dependencies (import names) beyond cmamba's own, and how to install them; `cmamba doctor` checks them.
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

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
    def input_spec(self) -> InputSpec:
        """The input this extractor takes, as the pipeline must decode it."""

    @abstractmethod
    def extract(self, data: InputT) -> FeatureSequence:
        """Compute the features of one clip's input (pure: no IO beyond reading model files)."""

    def extract_file(self, path: str | Path) -> FeatureSequence | None:
        """Decode the media at ``path`` as ``input_spec`` asks (frames or samples) and extract; None when the file
        lacks that stream. The pipeline does the same per clip, with absence and error records."""
        from cmamba.extractors.decode import decode_input  # PyAV loads only when media is read

        data = decode_input(path, self.input_spec())
        return None if data is None else self.extract(data)

    def frame_rate(self) -> float | None:
        """Output rows per second when they lie on a regular grid (validated against the clip's duration);
        None for outputs without a fixed rate (one row per word)."""
        return None

    def model_files(self) -> dict[str, Path]:
        """The model files that decide this extractor's output, by role; a cache records their sha256."""
        return {}

    def absent_reason(self, seq: FeatureSequence) -> str | None:
        """Why ``seq`` means the clip does not carry this modality (None: it does)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What a cache manifest records about this extractor."""
        return {
            "name": self.name,
            "version": self.version,
            "config": dataclasses.asdict(self.config),
            "feature_dim": self.feature_dim,
        }


WINDOW_FRAMES = 4096  # rows computed at a time by framewise extractors (41 s at a 10 ms hop)


def framewise(
    samples: np.ndarray,
    hop: int,
    context: int,
    compute: Callable[[np.ndarray], np.ndarray],
    window: int | None = None,
) -> np.ndarray:
    """``compute(samples)`` in bounded memory: rows (frame k at sample k · hop, as ``compute`` returns them) are
    computed ``window`` at a time from the samples they need plus ``context`` frames of real samples on each side,
    and the context rows are dropped. Equals ``compute(samples)`` whenever a row depends only on samples within
    ``context`` frames of it (every STFT-like feature with a large enough context); a short clip is one call."""
    window = window or WINDOW_FRAMES
    n = len(samples)
    total = 1 + n // hop
    if total <= window + 2 * context:
        return compute(samples)
    parts = []
    for k0 in range(0, total, window):
        k1 = min(total, k0 + window)
        a, b = max(0, k0 - context) * hop, min(n, (k1 + context) * hop)
        rows = compute(samples[a:b])  # row j sits at sample a + j · hop
        parts.append(rows[k0 - a // hop : k0 - a // hop + (k1 - k0)])
    return np.concatenate(parts)


EXTRACTORS: dict[str, type[Extractor]] = {}


def register_extractor(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    for attr in ("name", "version", "modality", "input_type", "config_type"):
        if not hasattr(cls, attr):
            raise TypeError(f"extractor {cls.__name__} must define the class attribute {attr!r}")
    if cls.modality not in MODALITIES:
        raise TypeError(f"extractor {cls.__name__}: modality {cls.modality!r} is not one of {MODALITIES}")
    if cls.input_type not in INPUT_KINDS:
        raise TypeError(f"extractor {cls.__name__}: input_type must be Frames, Samples or Words")
    kind = INPUT_KINDS[cls.input_type]
    if cls().input_spec().kind != kind:
        raise TypeError(f"extractor {cls.__name__}: input_spec().kind must be {kind!r} for {cls.input_type.__name__}")
    if kind == "words" and cls.modality != "text":  # the cache stores words and their tokens with the text modality
        raise TypeError(f"extractor {cls.__name__}: Words input is the text modality's, not {cls.modality!r}")
    if cls.name in EXTRACTORS and EXTRACTORS[cls.name] is not cls:
        raise ValueError(f"an extractor named {cls.name!r} is already registered ({EXTRACTORS[cls.name].__name__})")
    owner = next((other for other in EXTRACTORS.values() if other.config_type is cls.config_type), None)
    if owner is not None and owner is not cls:
        raise ValueError(
            f"{cls.__name__}: the config type {cls.config_type.__name__} already belongs to {owner.name!r}"
        )
    EXTRACTORS[cls.name] = cls
    return cls


def available_extractors(modality: str | None = None) -> list[str]:
    """Registered extractor names (of one modality when given)."""
    return sorted(n for n, cls in EXTRACTORS.items() if modality is None or cls.modality == modality)


def get_extractor(name: str, config: Any = None) -> Extractor:
    """An instance of the registered extractor ``name`` (with its default config unless one is given)."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; available: {available_extractors()}")
    return EXTRACTORS[name](config)


def extractor_for(config: Any) -> Extractor:
    """The registered extractor whose ``config_type`` is ``type(config)``, configured with ``config``."""
    for cls in EXTRACTORS.values():
        if type(config) is cls.config_type:
            return cls(config)
    raise TypeError(f"no registered extractor takes a {type(config).__name__}; available: {available_extractors()}")


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
