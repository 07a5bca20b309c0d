"""Transcripts and word timing: ``types`` (the ``Transcript`` and how text splits into words), ``readers``
(label text, .txt / .srt / .vtt / .json sidecars), ``timing`` (every word gets an interval inside the clip) and
``asr`` (optional offline speech recognition with faster-whisper). Pure functions over text and samples; no
scheduling, no cache. Part of ``cmamba.extractors``: imports only the extractor base and the shared modules.
"""

from cmamba.extractors.transcripts.readers import SIDECAR_SUFFIXES, find_transcript, read_transcript
from cmamba.extractors.transcripts.timing import time_words, voiced_region
from cmamba.extractors.transcripts.types import (
    TIMINGS,
    Transcript,
    slice_transcript,
    split_words,
    transcript_from_text,
    transcript_from_timed_words,
)

__all__ = [
    "SIDECAR_SUFFIXES",
    "TIMINGS",
    "Transcript",
    "find_transcript",
    "read_transcript",
    "slice_transcript",
    "split_words",
    "time_words",
    "transcript_from_text",
    "transcript_from_timed_words",
    "voiced_region",
]
