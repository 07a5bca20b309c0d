"""Feature extractors for face, voice and words.

``base`` holds the contract every extractor follows (``Extractor``, ``FeatureSequence``), the registry
(``register_extractor`` / ``get_extractor``), per-process model sharing and write-time validation. The
concrete extractors (video, audio, text, transcripts) arrive with issue #4.
"""

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
