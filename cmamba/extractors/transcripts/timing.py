"""Timing every word: ``time_words`` turns any transcript into a timed one whose intervals are ordered,
non-overlapping and inside the clip, with strictly increasing starts (the text extractor stamps each word vector
at its word's start) — from the transcript's own times, by sequence alignment to ASR words, or spread over the
voiced part of the clip.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

import numpy as np

from cmamba.errors import TranscriptError
from cmamba.extractors.transcripts.types import Transcript, spread, transcript_from_timed_words

if TYPE_CHECKING:
    from cmamba.extractors.transcripts.asr import AsrWord

_GAP = 1e-3  # seconds kept between word starts: feature timestamps must increase strictly
_END_SLACK = 0.1  # a word may start this far past the clip end (decoded length and rounded times differ a little)
_MIN_WORD = 0.1  # seconds a word the ASR missed needs before it shares its neighbours' time instead of a gap
_SILENCE_DB = -60.0  # a clip whose loudest 25 ms frame is below this (dBFS RMS) has no voice


def voiced_region(samples: np.ndarray, sample_rate: int) -> tuple[float, float] | None:
    """(first, last) voiced instant in seconds of mono ``samples`` (N,), by 25 ms frame energy; None for silence.

    A frame is voiced when its level exceeds the lower of the noise floor (10th percentile) + 12 dB and the loudest
    frame - 20 dB: quiet onsets count in clean recordings, and speech without pauses is not taken for noise.
    """
    frame, hop = round(0.025 * sample_rate), round(0.010 * sample_rate)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size < frame:
        return None
    energy = np.concatenate([[0.0], np.cumsum(np.square(samples, dtype=np.float64))])  # O(N) memory, any length
    starts = np.arange(0, samples.size - frame + 1, hop)
    level = 10 * np.log10(np.maximum((energy[starts + frame] - energy[starts]) / frame, 1e-20))
    peak, floor = level.max(), np.percentile(level, 10)
    if peak < _SILENCE_DB:
        return None
    voiced = np.flatnonzero(level > min(floor + 12, peak - 20))
    return voiced[0] * hop / sample_rate, (voiced[-1] * hop + frame) / sample_rate


def _speech(samples: np.ndarray | None, sample_rate: int, duration: float) -> tuple[float, float]:
    """The voiced region inside [0, duration], or the whole clip when there is no audio or no voice."""
    region = voiced_region(samples, sample_rate) if samples is not None else None
    return (min(region[0], duration), min(region[1], duration)) if region else (0.0, duration)


def _normalise(word: str) -> str:
    return "".join(c for c in word.casefold() if not unicodedata.category(c).startswith("P"))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where ``mask`` is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _interpolate(
    words: Sequence[str], times: np.ndarray, measured: np.ndarray, lo: float, hi: float
) -> tuple[np.ndarray, int]:
    """``times`` (W, 2) with its NaN rows filled: each run of untimed words is spread by length between its
    neighbours (or ``lo`` / ``hi`` at the edges). Returns the times and how many words are not ``measured``."""
    times, measured, W = times.copy(), measured.copy(), len(words)
    for i, k in _runs(np.isnan(times[:, 0])):  # words [i, k)
        left = times[i - 1, 1] if i > 0 else min(lo, times[k, 0] if k < W else lo)
        right = times[k, 0] if k < W else max(hi, left)
        if right - left >= _MIN_WORD * (k - i):
            times[i:k] = spread(words[i:k], left, right)
            continue
        # ASR words usually touch, leaving no gap: the untimed words share their neighbours' time
        i0, k0 = max(i - 1, 0), min(k + 1, W)
        left, right = (times[i0, 0] if i > 0 else left), (times[k0 - 1, 1] if k < W else right)
        times[i0:k0], measured[i0:k0] = spread(words[i0:k0], left, right), False
    return times, int((~measured).sum())


def _align(words: Sequence[str], asr: Transcript, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """(W, 2) times for ``words`` from the ASR words they match, and how many words were interpolated instead."""
    W = len(words)
    times, measured = np.full((W, 2), np.nan), np.zeros(W, bool)
    matcher = SequenceMatcher(None, [_normalise(w) for w in words], [_normalise(w) for w in asr.words], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            times[i1:i2], measured[i1:i2] = asr.times[j1:j2], True
        elif tag == "replace":  # misheard words: the transcript's words share the time of the ASR's
            times[i1:i2] = spread(words[i1:i2], asr.times[j1, 0], asr.times[j2 - 1, 1])
    collapsed = times[:, 1] <= times[:, 0]  # see _collapsed_asr_words
    times[collapsed], measured[collapsed] = np.nan, False
    return _interpolate(words, times, measured, lo, hi)


def _collapsed_asr_words(words: Sequence[str], times: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """Whisper gives words it cannot place no duration, often a run of them at one instant (seen on 28 s of speech:
    11 words at 21.78 s); they are interpolated between their neighbours instead."""
    collapsed = times[:, 1] <= times[:, 0]
    if not collapsed.any():
        return times, 0
    return _interpolate(words, np.where(collapsed[:, None], np.nan, times), ~collapsed, lo, hi)


def _ordered(times: np.ndarray, duration: float) -> tuple[np.ndarray, int]:
    """``times`` clipped to [0, duration], starts at least _GAP apart, each end between its start and the next
    start; also the number of words whose times changed."""
    W = len(times)
    if W * _GAP > duration:
        raise TranscriptError(None, f"{W} words cannot be placed in a clip of {duration:.3f} s")
    start = np.clip(times[:, 0], 0.0, duration)
    tolerance = 1e-9  # leaves starts that are already far enough apart bit-identical despite rounding
    for i in range(1, W):
        if start[i] < start[i - 1] + _GAP - tolerance:
            start[i] = start[i - 1] + _GAP
    for i in range(W - 1, -1, -1):  # pushing starts forward may have run past the end: pull them back
        limit = (start[i + 1] if i + 1 < W else duration) - _GAP
        if start[i] > limit + tolerance:
            start[i] = limit
    end = np.minimum(np.maximum(times[:, 1], start), np.append(start[1:], duration))
    out = np.stack([start, end], 1)
    return out, int((out != times).any(axis=1).sum())


def time_words(
    transcript: Transcript,
    samples: np.ndarray | None,
    sample_rate: int,
    duration: float,
    asr_words: list[AsrWord] | None = None,
) -> Transcript:
    """A timed copy of ``transcript`` for a clip of ``duration`` seconds with mono audio ``samples`` (N,) (None
    when the clip has no audio).

    Timed transcripts keep their times (any ``asr_words`` are ignored): a word starting after the clip end raises
    TranscriptError, ends past it are clipped; ASR words without duration are interpolated. Untimed ones take the
    times of matching ``asr_words`` ("aligned"; words the ASR missed or misheard are spread by length between their
    neighbours) or, without ASR words, are spread over the voiced region by character length ("estimated"; the
    whole clip when no voice is found). The result has ordered, non-overlapping intervals inside [0, duration] with
    strictly increasing starts; ``adjusted`` counts the words this had to move.
    """
    if duration <= 0:
        raise TranscriptError(None, f"the clip lasts {duration} s (a still image?), so its words cannot be timed")
    timing, interpolated = transcript.timing, transcript.interpolated
    if transcript.times is not None:
        times = transcript.times
        if late := np.flatnonzero(times[:, 0] > duration + _END_SLACK).tolist():
            raise TranscriptError(
                None,
                f"word {late[0]} {transcript.words[late[0]]!r} of the {transcript.source} transcript starts at "
                f"{times[late[0], 0]:.3f} s, after the clip ends ({duration:.3f} s): is it the transcript of "
                "another clip, or offset?",
            )
        if timing == "asr":
            times, collapsed = _collapsed_asr_words(transcript.words, times, *_speech(samples, sample_rate, duration))
            interpolated += collapsed
    else:
        asr = None
        if asr_words:
            asr = transcript_from_timed_words(((w.word, w.start, w.end) for w in asr_words), "asr", "asr")
        lo, hi = _speech(samples, sample_rate, duration)
        if asr is not None and len(asr):
            times, interpolated = _align(transcript.words, asr, lo, hi)
            timing = "aligned" if interpolated < len(transcript) else "estimated"
        else:
            times, timing = spread(transcript.words, lo, hi), "estimated"
    times, adjusted = _ordered(times, duration)
    return dataclasses.replace(transcript, times=times, timing=timing, adjusted=adjusted, interpolated=interpolated)
