"""One clip, all modalities: decode, extract, time the words, validate and align — the unit the Dask graph runs.

Every registered extractor is handled the same way: its ``input_spec`` picks one loader per input kind (frames
and samples decoded from the media, words from the transcript: label text, a sidecar file or ASR), then
``extract``, ``absent_reason`` and write-time validation at its ``frame_rate``. The work is split the way the
graph schedules it: ``extract_modality`` (one task per clip and modality; it never raises — failures come back
as a ``ClipError`` naming the stage and the reason) and ``join_clip`` (the per-clip join: validation at write
time, then alignment). ``extract_clip`` runs both in-process.

A modality is *absent* when the clip does not carry it (no audio stream, no face in any frame, no transcript);
it is an *error* when the clip should carry it but cannot be read. Neither ever becomes a row of zeros.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cmamba.constants import MODALITIES
from cmamba.errors import TranscriptError
from cmamba.extractors import validate_sequence
from cmamba.extractors.align import align
from cmamba.extractors.base import FeatureSequence, Frames, InputSpec, Samples, Words
from cmamba.extractors.decode import MediaInfo, decode_input, probe, read_audio
from cmamba.extractors.transcripts import (
    Transcript,
    find_transcript,
    read_transcript,
    slice_transcript,
    time_words,
    transcript_from_text,
)
from cmamba.extractors.transcripts import asr as asr_lib
from cmamba.pipeline.config import ExtractionConfig

ASR_RATE = 16000  # faster-whisper and the voiced-region finder work on 16 kHz mono


@dataclass(frozen=True)
class ClipError:
    stage: str  # open | video | audio | transcript | text | validate | align | clip (nothing usable)
    reason: str


@dataclass
class ModalityResult:
    modality: str
    sequence: FeatureSequence | None = None
    absent: str | None = None  # why the clip does not carry this modality
    error: ClipError | None = None
    transcript: Transcript | None = None  # extractors of Words input: the timed words


@dataclass
class ClipFeatures:
    """The features of one clip: aligned sequences of the modalities present, and why the others are missing."""

    clip_id: str
    path: str
    duration: float
    sequences: dict[str, FeatureSequence]
    absent: dict[str, str]
    errors: list[ClipError]
    transcript: Transcript | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _Input:
    """An extractor's decoded input, or why the clip does not carry it."""

    data: Frames | Samples | Words | None = None
    absent: str | None = None
    stream_duration: float | None = None  # the stream's own length, which validation checks the rows against
    transcript: Transcript | None = None


@dataclass(frozen=True)
class _Clip:
    """Where a clip's media is: the file, its streams, and the time range [start, start + duration) of it."""

    path: Path
    media: MediaInfo  # of the clip: its duration (and video_duration) are the range's
    start: float = 0.0
    ranged: bool = False  # a range of the file rather than the whole file

    @property
    def end(self) -> float | None:
        return self.start + self.media.duration if self.ranged else None


def clip_media(path: str | Path, start: float | None = None, end: float | None = None) -> _Clip:
    """The clip at ``path``, or the range [start, end) of it (seconds from the file's first timestamp)."""
    path = Path(path)
    media = probe(path)
    if start is None and end is None:
        return _Clip(path, media)
    start = max(0.0, start or 0.0)
    end = media.duration if end is None else min(end, media.duration) if media.duration > 0 else end
    if not end > start:
        raise ValueError(f"the range [{start:.3f}, {end:.3f}) s is empty (the file lasts {media.duration:.3f} s)")
    video = None if media.video_duration is None else max(0.0, min(media.video_duration, end) - start)
    ranged = dataclasses.replace(media, duration=end - start, video_duration=video)
    return _Clip(path, ranged, start, True)


def _frames(clip: _Clip, spec: InputSpec, config: ExtractionConfig, text: str | None) -> _Input:
    if not clip.media.has_video:
        return _Input(absent="no video stream")
    # validated against the video stream, not the container: a clip's sound may run longer
    data = decode_input(clip.path, spec, clip.start, clip.end)
    # a still frame (cover art beside a sound track) is one row at t = 0, whatever the clip's length
    return _Input(data, stream_duration=0.0 if clip.media.still_image else clip.media.video_duration or None)


def _samples(clip: _Clip, spec: InputSpec, config: ExtractionConfig, text: str | None) -> _Input:
    if not clip.media.has_audio:
        return _Input(absent="no audio stream")
    data = decode_input(clip.path, spec, clip.start, clip.end)
    if len(data.samples) == 0:
        return _Input(absent="the audio stream has no samples in this clip")
    # AAC padding makes the decoded length differ from the container's
    return _Input(data, stream_duration=len(data.samples) / data.sample_rate)


def _transcript(clip: _Clip, config: ExtractionConfig, text: str | None) -> Transcript | str:
    """The clip's timed transcript, or the reason it has none. A range of a recording takes the words of the
    recording's timed transcript that start inside it (times from the range's start)."""
    path, media = clip.path, clip.media
    asr_ready, asr_reason = asr_lib.asr_status()
    use_asr = config.use_asr and asr_ready and media.has_audio

    def recognise() -> list:  # block by block: memory does not grow with the clip's length
        return asr_lib.transcribe_range(path, clip.start, clip.end, config.asr)

    if text is not None and not text.strip():
        return "the label text of this clip is empty"
    if text is not None:
        transcript = transcript_from_text(text)
    elif (sidecar := find_transcript(path)) is not None:
        transcript = read_transcript(sidecar)
        if clip.ranged:
            if transcript.times is None and not use_asr:
                return f"{sidecar.name} has no word times, so the words of this part of the recording are unknown"
            if transcript.times is not None:
                transcript = slice_transcript(transcript, clip.start, clip.start + media.duration)
                if not len(transcript):
                    return f"no word of {sidecar.name} falls in this part of the recording"
            else:  # an untimed transcript of the whole recording says nothing about this part: recognise it
                words = recognise()
                return asr_lib.transcript_from_asr(words) if words else "ASR heard no words in this part"
    elif use_asr:
        words = recognise()
        if not words:
            return "no transcript given and ASR heard no words"
        return asr_lib.transcript_from_asr(words)
    else:
        why = "no audio to transcribe" if not media.has_audio else asr_reason if config.use_asr else "ASR is off"
        return f"no transcript: no label text and no .json/.srt/.vtt/.txt next to the media; {why}"
    asr_words = recognise() if use_asr and transcript.times is None else None
    # the voiced region times untimed words and ASR words without duration; timed words need no audio
    needs_audio = media.has_audio and (transcript.times is None or transcript.timing == "asr")
    samples = read_audio(path, ASR_RATE, clip.start, clip.end) if needs_audio else None
    try:
        return time_words(transcript, samples, ASR_RATE, media.duration, asr_words)
    except TranscriptError as exc:  # name the clip: the words may come from a label file, not a sidecar
        raise TranscriptError(exc.path or path, exc.reason) from exc


def _words(clip: _Clip, spec: InputSpec, config: ExtractionConfig, text: str | None) -> _Input:
    transcript = _transcript(clip, config, text)
    if isinstance(transcript, str):
        return _Input(absent=transcript)
    return _Input(Words(transcript.words, transcript.times), transcript=transcript)


# One loader per input kind, shared by every extractor that takes it.
_LOADERS = {"frames": _frames, "samples": _samples, "words": _words}


def _stage_of(exc: Exception, modality: str) -> str:
    stage = getattr(exc, "stage", None)
    return stage if isinstance(stage, str) else modality


def extract_modality(
    path: str | Path,
    modality: str,
    config: ExtractionConfig,
    text: str | None = None,
    start: float | None = None,
    end: float | None = None,
) -> ModalityResult:
    """One modality of one clip with its configured extractor; never raises for bad media — the result carries
    the error instead. ``text`` is the clip's transcript when known (e.g. label.csv); ``start`` / ``end`` make
    the clip a range of the file (seconds)."""
    try:
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; choose from {MODALITIES}")
        extractor = config.extractor(modality)
        spec = extractor.input_spec()
        loaded = _LOADERS[spec.kind](clip_media(path, start, end), spec, config, text)
        if loaded.absent is not None:
            return ModalityResult(modality, absent=loaded.absent)
        seq = extractor.extract(loaded.data)
        if loaded.stream_duration is not None:
            seq.info["stream_duration"] = loaded.stream_duration
        if loaded.transcript is not None:
            seq.info["timing"] = loaded.transcript.timing
        reason = extractor.absent_reason(seq)
        if reason is not None:
            return ModalityResult(modality, absent=reason)
        return ModalityResult(modality, sequence=seq, transcript=loaded.transcript)
    except Exception as exc:  # a batch job records per-item failures and keeps going
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return ModalityResult(modality, error=ClipError(_stage_of(exc, modality), str(reason)))


def _validated(result: ModalityResult, config: ExtractionConfig, duration: float) -> FeatureSequence:
    extractor = config.extractor(result.modality)
    span = result.sequence.info.get("stream_duration", duration)
    span = span if span > 0 else None  # a still image has no duration to check against
    rate = extractor.frame_rate() if span else None
    return validate_sequence(result.sequence, extractor.name, extractor.feature_dim, span, rate)


def join_clip(
    clip_id: str,
    path: str | Path,
    duration: float,
    results: list[ModalityResult],
    config: ExtractionConfig,
    align_output: bool = True,
) -> ClipFeatures:
    """Validate each modality's sequence and align them (the per-clip join task). With ``align_output=False``
    the sequences stay native (what a cache stores) and only the feasibility of ``config.align`` is checked."""
    clip = ClipFeatures(str(clip_id), str(path), float(duration), {}, {}, [])
    for result in results:
        if result.error is not None:
            clip.errors.append(result.error)
        elif result.absent is not None:
            clip.absent[result.modality] = result.absent
        else:
            try:
                clip.sequences[result.modality] = _validated(result, config, duration)
            except ValueError as exc:
                clip.errors.append(ClipError("validate", str(exc)))
        if result.transcript is not None:
            clip.transcript = result.transcript
    if clip.errors or not clip.sequences:
        if not clip.errors:
            clip.errors.append(ClipError("clip", "the clip carries none of the requested modalities"))
        return clip
    word_times = clip.transcript.times if clip.transcript is not None else None
    try:
        aligned = align(clip.sequences, config.align, duration, word_times, config.clock_rate)
        clip.sequences = aligned if align_output else clip.sequences
    except ValueError as exc:
        clip.errors.append(ClipError("align", str(exc)))
    return clip


def extract_clip(
    path: str | Path, config: ExtractionConfig | None = None, text: str | None = None, clip_id: str | None = None
) -> ClipFeatures:
    """All requested modalities of the clip at ``path``; ``text`` is its transcript when known (e.g. label.csv)."""
    config = config or ExtractionConfig()
    path = Path(path)
    try:
        duration = probe(path).duration
    except Exception as exc:
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return ClipFeatures(clip_id or path.stem, str(path), 0.0, {}, {}, [ClipError("open", str(reason))])
    results = [extract_modality(path, m, config, text) for m in config.modalities]
    return join_clip(clip_id or path.stem, path, duration, results, config)
