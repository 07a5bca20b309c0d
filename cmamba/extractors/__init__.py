"""Feature extractors for face, voice and words.

``base`` holds the contract every extractor follows (``Extractor``, ``FeatureSequence``), the registry
(``register_extractor`` / ``get_extractor``), per-process model sharing and write-time validation;
``decode`` reads media with PyAV; ``audio`` registers "librosa-audio", ``text`` "text-transformer".
Video (MediaPipe), transcripts and alignment are still to come (issue #4).
"""

import cmamba.extractors.audio
import cmamba.extractors.text  # noqa: F401  (registers "text-transformer"; transformers loads lazily)
from cmamba.extractors.base import (
    EXTRACTORS,
    Extractor,
    FeatureSequence,
    available_extractors,
    get_extractor,
    register_extractor,
    shared_model,
    validate_sequence,
)

__all__ = [
    "EXTRACTORS",
    "Extractor",
    "FeatureSequence",
    "available_extractors",
    "get_extractor",
    "register_extractor",
    "shared_model",
    "validate_sequence",
]
