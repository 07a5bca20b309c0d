"""Feature extractors for face, voice and words.

``base`` holds the contract every extractor follows (``Extractor``, ``FeatureSequence``), the registry
(``register_extractor`` / ``get_extractor``), per-process model sharing and write-time validation;
``decode`` reads media with PyAV; ``audio`` registers "librosa-audio", ``text`` "text-transformer", ``video``
"mediapipe-face" (blendshapes, head pose, optional landmarks); ``transcript`` reads and times transcripts,
``asr`` is the optional offline speech recogniser; ``align`` puts modalities on a native / word / clock axis.
``cmamba.pipeline.clip`` runs them all on one clip.
"""

import cmamba.extractors.audio
import cmamba.extractors.text  # registers "text-transformer"; transformers loads lazily
import cmamba.extractors.video  # noqa: F401  (registers "mediapipe-face"; mediapipe loads lazily)
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
