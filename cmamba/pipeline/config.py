"""``ExtractionConfig`` (everything that decides a clip's features: which extractor per modality and its config,
ASR, alignment, the modalities) and ``SegmentConfig`` (how long recordings are cut into utterance clips). Plain
dataclasses over the extractors' configs: importing this module loads no media, model or scheduling library.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from cmamba.constants import ALIGN_MODES, MODALITIES, SEGMENT_MODES
from cmamba.extractors import EXTRACTORS, Extractor, available_extractors, extractor_for
from cmamba.extractors.audio import AudioConfig
from cmamba.extractors.text import TextConfig
from cmamba.extractors.transcripts.asr import AsrConfig
from cmamba.extractors.video import FaceConfig

EXTRACTOR_KEY = "extractor"  # in a modality section: which registered extractor the section configures


def extractor_section(config: Any) -> dict[str, Any]:
    """One modality section as stored: ``{"extractor": name, **the extractor's config fields}``."""
    return {EXTRACTOR_KEY: extractor_for(config).name, **dataclasses.asdict(config)}


@dataclass(frozen=True)
class ExtractionConfig:
    """Everything that decides a clip's features; its JSON form is saved in every cache manifest.

    ``video`` / ``audio`` / ``text`` hold the config of that modality's extractor, and its type picks the
    extractor: ``AudioConfig()`` runs "librosa-audio", ``OpenSmileConfig()`` "opensmile-egemaps" (any registered
    extractor of the modality). ``to_dict`` records each section's ``extractor`` name; ``from_dict`` reads it.
    """

    video: Any = field(default_factory=FaceConfig)
    audio: Any = field(default_factory=AudioConfig)
    text: Any = field(default_factory=TextConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    use_asr: bool = True  # transcribe clips without a transcript, and time untimed ones, when [asr] is installed
    align: str = "native"
    clock_rate: float = 10.0  # Hz, the grid of ``align="clock"``
    modalities: tuple[str, ...] = MODALITIES

    def __post_init__(self):
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align={self.align!r} is not one of {ALIGN_MODES}")
        if not (math.isfinite(self.clock_rate) and self.clock_rate > 0):
            raise ValueError(f"clock_rate must be positive, got {self.clock_rate}")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities={self.modalities!r}: choose one or more of {MODALITIES}")
        for m in MODALITIES:
            extractor = extractor_for(getattr(self, m))
            if extractor.modality != m:
                raise ValueError(f"{m}: {extractor.name} extracts {extractor.modality}, not {m}")

    def extractor(self, modality: str) -> Extractor:
        """The configured extractor of ``modality``."""
        return extractor_for(getattr(self, modality))

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        for m in MODALITIES:
            values[m] = extractor_section(getattr(self, m))
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExtractionConfig:
        """The inverse of ``to_dict`` (e.g. the config recorded in a cache manifest or a checkpoint); a section
        without an ``extractor`` key is the default extractor's config."""
        fields = dict(values)
        for m in MODALITIES:
            if m in fields:
                section = dict(fields[m])
                name = section.pop(EXTRACTOR_KEY, extractor_for(cls.__dataclass_fields__[m].default_factory()).name)
                if name not in EXTRACTORS or EXTRACTORS[name].modality != m:
                    raise ValueError(f"{m}.extractor={name!r}: choose one of {available_extractors(m)}")
                fields[m] = EXTRACTORS[name].config_type(**section)
        if "asr" in fields:
            fields["asr"] = AsrConfig(**fields["asr"])
        if "modalities" in fields:
            fields["modalities"] = tuple(fields["modalities"])
        return cls(**fields)


@dataclass(frozen=True)
class SegmentConfig:
    """How recordings are cut into utterances (module doc)."""

    mode: str = "auto"  # auto | transcript | asr | vad | fixed | none
    auto_seconds: float = 30.0  # mode auto: files up to this long stay one clip
    min_seconds: float = 1.0
    max_seconds: float = 20.0
    min_pause: float = 0.3  # seconds of silence that end an utterance
    fixed_seconds: float = 10.0  # window length when there is no speech to follow
    vad_threshold: float = 0.5  # speech probability above which a 32 ms window is speech

    def __post_init__(self):
        if self.mode not in SEGMENT_MODES:
            raise ValueError(f"mode={self.mode!r} is not one of {SEGMENT_MODES}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds} and {self.max_seconds}")
        if not self.min_seconds <= self.fixed_seconds <= self.max_seconds:
            raise ValueError(f"fixed_seconds={self.fixed_seconds} must lie in [min_seconds, max_seconds]")
        if self.max_seconds > 600:  # a segment is decoded as one clip: keep what a worker holds bounded
            raise ValueError(f"max_seconds={self.max_seconds} is longer than 600 s; segments are utterances")
        if self.min_pause <= 0 or self.auto_seconds < 0 or not 0 < self.vad_threshold < 1:
            raise ValueError("min_pause must be > 0, auto_seconds >= 0 and vad_threshold in (0, 1)")
