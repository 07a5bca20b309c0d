"""Feature extractors for face, voice and words — pure computation; they know no scheduler and no cache.

``base`` holds the typed contract every extractor follows (``Extractor`` over ``Frames`` / ``Samples`` / ``Words``
inputs, ``FeatureSequence``), the registry (``register_extractor``, ``get_extractor``, ``extractor_for``),
per-process model sharing and write-time validation; ``decode`` reads media with PyAV; ``transcripts`` reads,
times and (optionally) recognises words; ``align`` puts modalities on a native / word / clock axis.

Registered extractors (importing this package registers them; heavy libraries load on first use):
``mediapipe-face`` (``video``), ``librosa-audio`` (``audio``), ``opensmile-egemaps`` (``opensmile``, needs the
``[opensmile]`` extra), ``text-transformer`` (``text``). Modules here may import ``cmamba.constants``,
``cmamba.errors``, ``cmamba.io`` and ``cmamba.assets``; never the pipeline, datasets, fusion, app or CLI.
"""

import cmamba.extractors.audio
import cmamba.extractors.opensmile
import cmamba.extractors.text
import cmamba.extractors.video  # noqa: F401  (the imports above register the extractors)
from cmamba.extractors.base import (
    EXTRACTORS,
    Extractor,
    FeatureSequence,
    Frames,
    InputSpec,
    Samples,
    Words,
    available_extractors,
    extractor_for,
    get_extractor,
    register_extractor,
    shared_model,
    validate_sequence,
)

__all__ = [
    "EXTRACTORS",
    "Extractor",
    "FeatureSequence",
    "Frames",
    "InputSpec",
    "Samples",
    "Words",
    "available_extractors",
    "extractor_for",
    "get_extractor",
    "register_extractor",
    "shared_model",
    "validate_sequence",
]
