"""Utterance segmentation of long recordings: a recording becomes utterance-sized clips before it is extracted.

The model learns from utterances of a few seconds; a recording of minutes to hours is cut once, and each segment
is a clip of the extraction graph (a time range of the file). Sources, in order of preference (``mode="auto"``):

- ``transcript``: a timed sidecar transcript (SRT / VTT cues, JSON words) — words grouped at pauses;
- ``asr``: the offline recogniser's words (``[asr]`` extra) — words grouped at pauses;
- ``vad``: silero-vad's speech probability (model file shipped in the ``silero-vad`` wheel, sha256-pinned) —
  speech runs grouped at pauses;
- ``fixed``: equal windows, when the recording has no audio or no speech.

Grouping rules keep segments utterance-sized: runs separated by a pause of at least ``min_pause`` end a segment;
a segment longer than ``max_seconds`` is split at its longest internal pause (evenly when it has none); a segment
shorter than ``min_seconds`` joins a neighbour when the result stays within ``max_seconds``, and is dropped
(counted) otherwise. Segments never overlap and the same input always gives the same segments.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmamba.errors import MediaError
from cmamba.extractors.base import shared_model
from cmamba.extractors.decode import MediaInfo, probe, read_audio
from cmamba.extractors.transcripts import asr as asr_lib
from cmamba.extractors.transcripts import find_transcript, read_transcript
from cmamba.io import sha256_file
from cmamba.pipeline.config import SegmentConfig

VAD_RATE, VAD_STEP = 16000, 512  # silero-vad takes 16 kHz audio in 32 ms windows
VAD_STREAMS, VAD_STREAM_SECONDS = 8, 60.0  # a block of audio is run as 8 parallel 60 s streams (bounded memory)
SILERO_FILE = "silero_vad.jit"
SILERO_SHA256 = "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720"  # silero-vad 6.2.3's model


@dataclass(frozen=True)
class Segmentation:
    """The segments of one recording: (start, end) seconds, ordered and disjoint, and where they come from."""

    intervals: tuple[tuple[float, float], ...]
    source: str  # transcript | asr | vad | fixed | none
    reason: str = ""  # why a less preferred source was used
    dropped: int = 0  # utterances shorter than min_seconds that no neighbour could take
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "intervals": [list(i) for i in self.intervals]}


def should_segment(media: MediaInfo, config: SegmentConfig) -> bool:
    """Whether a file is cut into segments: never for mode none, always for the explicit modes, and for mode auto
    when it is longer than ``auto_seconds``."""
    if config.mode == "none" or media.duration <= 0:
        return False
    return config.mode != "auto" or media.duration > config.auto_seconds


def cache_key_fields(path: Path, config: SegmentConfig, use_asr: bool = True) -> dict[str, Any]:
    """What decides a recording's segmentation besides its content (for the content-addressed cache)."""
    sidecar = find_transcript(path)
    asr = asr_lib.describe_asr() if use_asr and asr_lib.asr_status()[0] else None
    return {"config": dataclasses.asdict(config), "sidecar": sha256_file(sidecar) if sidecar else None, "asr": asr}


def segment_recording(path: str | Path, config: SegmentConfig, use_asr: bool = True) -> Segmentation:
    """The utterance segments of the recording at ``path`` (module doc); ``use_asr=False`` never runs ASR (as
    when extraction has ASR off)."""
    path = Path(path)
    media = probe(path)
    duration = media.duration
    if config.mode == "none":
        return Segmentation(((0.0, duration),), "none")
    reasons = []
    if config.mode in ("auto", "transcript"):
        sidecar = find_transcript(path)
        transcript = read_transcript(sidecar) if sidecar is not None else None
        if transcript is not None and transcript.times is not None and len(transcript):
            cut = _grouped(transcript.times, duration, config, "transcript")
            # words starting after the media ends belong to no segment: counted, not silently lost
            past = int((transcript.times[:, 0] >= duration).sum())
            return dataclasses.replace(cut, info={**cut.info, "words_past_media": past})
        reasons.append("no timed transcript next to the media")
    if config.mode in ("auto", "asr") and media.has_audio:
        ready, why = asr_lib.asr_status() if use_asr else (False, "ASR is off")
        if ready:
            words = asr_lib.transcribe_range(path, 0.0, duration)
            if words:
                return _grouped(np.array([(w.start, w.end) for w in words]), duration, config, "asr", reasons)
            reasons.append("ASR heard no words")
        else:
            reasons.append(why)
    damaged: list[tuple[float, float]] = []
    if config.mode in ("auto", "vad") and media.has_audio:
        runs, damaged = speech_runs(path, duration, config)
        if len(runs):
            return _around_damage(_grouped(runs, duration, config, "vad", reasons), damaged, config)
        reasons.append("no speech found")
    elif not media.has_audio:
        reasons.append("no audio stream")
    if config.mode in ("transcript", "asr", "vad") and reasons:
        reasons.append(f"fell back to {config.fixed_seconds:g} s windows")
    return _around_damage(Segmentation(fixed_windows(duration, config), "fixed", "; ".join(reasons)), damaged, config)


def fixed_windows(duration: float, config: SegmentConfig) -> tuple[tuple[float, float], ...]:
    """Equal windows of about ``fixed_seconds`` covering [0, duration] (a short remainder joins the last one)."""
    return tuple(_even(0.0, duration, max(1, round(duration / config.fixed_seconds))))


def _even(start: float, end: float, count: int) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in itertools.pairwise(np.linspace(start, end, count + 1))]


def group(
    runs: np.ndarray, config: SegmentConfig, duration: float | None = None
) -> tuple[tuple[tuple[float, float], ...], int]:
    """Utterance segments from sorted (start, end) runs (words, speech runs): returns (segments, dropped)."""
    runs = np.asarray(runs, dtype=np.float64).reshape(-1, 2)
    if duration is not None:
        runs = np.clip(runs, 0.0, duration)
    runs = runs[runs[:, 1] > runs[:, 0]]
    if not len(runs):
        return (), 0
    gaps = runs[1:, 0] - runs[:-1, 1]
    cuts = np.flatnonzero(gaps >= config.min_pause) + 1
    pieces = []
    for part in np.split(runs, cuts):
        pieces.extend(_split_long(part, config))
    return _merge_short(pieces, config)


def _split_long(runs: np.ndarray, config: SegmentConfig) -> list[tuple[float, float]]:
    """Split a group longer than max_seconds at its longest internal pause (evenly when it has none)."""
    start, end = float(runs[0, 0]), float(runs[-1, 1])
    if end - start <= config.max_seconds:
        return [(start, end)]
    gaps = runs[1:, 0] - runs[:-1, 1]
    # a cut after run k leaves [start, runs[k, 1]] and [runs[k + 1, 0], end]: both must be at least min_seconds
    ok = (runs[:-1, 1] - start >= config.min_seconds) & (end - runs[1:, 0] >= config.min_seconds)
    if ok.any():
        k = int(np.argmax(np.where(ok, gaps, -np.inf)))
        return _split_long(runs[: k + 1], config) + _split_long(runs[k + 1 :], config)
    return _even(start, end, int(np.ceil((end - start) / config.max_seconds)))


def _merge_short(pieces: list[tuple[float, float]], config: SegmentConfig) -> tuple[tuple, int]:
    merged: list[list[float]] = []
    for start, end in pieces:
        if merged and (end - start < config.min_seconds or merged[-1][1] - merged[-1][0] < config.min_seconds):
            if end - merged[-1][0] <= config.max_seconds:  # join the previous segment
                merged[-1][1] = end
                continue
        merged.append([start, end])
    kept = [(a, b) for a, b in merged if b - a >= config.min_seconds]
    return tuple(kept), len(merged) - len(kept)


def _grouped(runs: np.ndarray, duration: float, config: SegmentConfig, source: str, reasons=()) -> Segmentation:
    intervals, dropped = group(runs, config, duration)
    if not intervals:  # every utterance shorter than min_seconds
        why = f"every {source} utterance is shorter than {config.min_seconds:g} s"
        return Segmentation(fixed_windows(duration, config), "fixed", "; ".join([*reasons, why]))
    return Segmentation(intervals, source, "; ".join(reasons), dropped)


def speech_runs(path: Path, duration: float, config: SegmentConfig) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """(R, 2) seconds of the 32 ms windows silero-vad calls speech, merged where they touch, and the stretches
    whose audio is damaged (pieces of about ``fixed_seconds``). The audio is decoded block by block
    (``VAD_STREAMS`` × ``VAD_STREAM_SECONDS``) and each block runs as parallel streams, so memory does not grow
    with the recording; a block that fails to decode is retried piece by piece."""
    import torch

    model = shared_model(("silero-vad", SILERO_SHA256), _load_silero)
    block = VAD_STREAMS * VAD_STREAM_SECONDS
    runs, damaged = [], []
    with torch.no_grad():
        for start in np.arange(0.0, duration, block):
            end = float(min(start + block, duration))
            try:
                runs.append(_runs_in(model, path, float(start), end, config))
            except MediaError:
                for a, b in _even(float(start), end, max(1, round((end - start) / config.fixed_seconds))):
                    try:
                        runs.append(_runs_in(model, path, a, b, config))
                    except MediaError:
                        damaged.append((a, b))
    return _joined(np.concatenate(runs) if runs else np.zeros((0, 2))), damaged


def _runs_in(model: Any, path: Path, start: float, end: float, config: SegmentConfig) -> np.ndarray:
    """(R, 2) speech runs of [start, end) of the recording, in seconds of the recording."""
    samples = read_audio(path, VAD_RATE, start=start, end=end)
    if samples is None or not len(samples):
        return np.zeros((0, 2))
    p = _speech_probability(model, samples)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (p >= config.vad_threshold).astype(np.int8), [0]])))
    step = VAD_STEP / VAD_RATE
    return start + np.stack([edges[0::2] * step, edges[1::2] * step], 1) if len(edges) else np.zeros((0, 2))


def _joined(runs: np.ndarray) -> np.ndarray:
    """Sorted runs with those that touch (across block edges) merged into one."""
    if len(runs) < 2:
        return runs
    starts = np.flatnonzero(np.concatenate([[True], runs[1:, 0] - runs[:-1, 1] > 1e-6]))
    ends = np.concatenate([starts[1:] - 1, [len(runs) - 1]])
    return np.stack([runs[starts, 0], runs[ends, 1]], 1)


def _around_damage(cut: Segmentation, damaged: list[tuple[float, float]], config: SegmentConfig) -> Segmentation:
    """``cut`` with every damaged stretch a segment of its own (its clips fail at extraction, named, and the
    rest of the recording is unaffected): segments overlapping one are trimmed to what lies outside it."""
    if not damaged:
        return cut
    kept = list(cut.intervals)
    for d0, d1 in damaged:
        trimmed = []
        for a, b in kept:
            trimmed += (
                [(a, b)] if b <= d0 or a >= d1 else [p for p in ((a, min(b, d0)), (max(a, d1), b)) if p[1] > p[0]]
            )
        kept = trimmed
    kept = [(a, b) for a, b in kept if b - a >= config.min_seconds]
    reason = f"the audio is damaged in {len(damaged)} piece(s) of the recording: they are segments of their own"
    return dataclasses.replace(
        cut,
        intervals=tuple(sorted(kept + damaged)),
        reason="; ".join(r for r in (cut.reason, reason) if r),
        info={**cut.info, "damaged": [list(d) for d in damaged]},
    )


def _speech_probability(model: Any, samples: np.ndarray) -> np.ndarray:
    """Speech probability per 32 ms window of ``samples``, run as up to ``VAD_STREAMS`` parallel streams."""
    import torch

    windows = int(np.ceil(len(samples) / VAD_STEP))
    per_stream = int(np.ceil(windows / VAD_STREAMS))
    padded = np.zeros(per_stream * VAD_STREAMS * VAD_STEP, np.float32)
    padded[: len(samples)] = samples
    x = torch.from_numpy(padded).view(VAD_STREAMS, per_stream * VAD_STEP)
    model.reset_states()
    out = [model(x[:, k * VAD_STEP : (k + 1) * VAD_STEP], VAD_RATE) for k in range(per_stream)]
    return torch.cat(out, 1).reshape(-1).numpy()[:windows]


def _load_silero() -> Any:
    """silero-vad's TorchScript model from the installed wheel, sha256-checked (nothing is downloaded)."""
    import torch

    spec = importlib.util.find_spec("silero_vad")  # locate without importing (its __init__ changes torch's threads)
    if spec is None or spec.origin is None:
        raise ImportError("voice activity detection needs silero-vad: pip install silero-vad==6.2.3")
    model_file = Path(spec.origin).parent / "data" / SILERO_FILE
    digest = sha256_file(model_file)
    if digest != SILERO_SHA256:
        raise ValueError(f"{model_file} has sha256 {digest}, expected {SILERO_SHA256}; reinstall silero-vad==6.2.3")
    return torch.jit.load(str(model_file), map_location="cpu").eval()
