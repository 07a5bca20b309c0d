"""One clip, all modalities: decode, extract, time the words, validate and align — the unit the Dask graph runs.

The work is split the way the graph schedules it: ``extract_modality`` (one task per clip and modality; it
never raises — failures come back as a ``ClipError`` naming the stage and the reason) and ``join_clip`` (the
per-clip join: validation at write time, then alignment). ``extract_clip`` runs both in-process.

A modality is *absent* when the clip does not carry it (no audio stream, no face in any frame, no transcript);
it is an *error* when the clip should carry it but cannot be read. Neither ever becomes a row of zeros.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmamba.extractors import get_extractor, validate_sequence
from cmamba.extractors.align import ALIGN_MODES, align
from cmamba.extractors.audio import AudioConfig
from cmamba.extractors.base import FeatureSequence
from cmamba.extractors.decode import MediaInfo, probe, read_audio
from cmamba.extractors.text import TextConfig
from cmamba.extractors.transcripts import (
    Transcript,
    find_transcript,
    read_transcript,
    time_words,
    transcript_from_text,
)
from cmamba.extractors.transcripts import asr as asr_lib
from cmamba.extractors.transcripts.asr import AsrConfig
from cmamba.extractors.video import FaceConfig

MODALITIES = ("text", "audio", "video")
EXTRACTOR_OF = {"text": "text-transformer", "audio": "librosa-audio", "video": "mediapipe-face"}
ASR_RATE = 16000  # faster-whisper and the voiced-region finder work on 16 kHz mono


@dataclass(frozen=True)
class ExtractionConfig:
    """Everything that decides a clip's features; its JSON form is saved in every cache manifest."""

    video: FaceConfig = field(default_factory=FaceConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    use_asr: bool = True  # transcribe clips without a transcript, and time untimed ones, when [asr] is installed
    align: str = "native"
    clock_rate: float = 10.0  # Hz, the grid of ``align="clock"``
    modalities: tuple[str, ...] = MODALITIES

    def __post_init__(self):
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align={self.align!r} is not one of {ALIGN_MODES}")
        if self.clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {self.clock_rate}")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities={self.modalities!r}: choose one or more of {MODALITIES}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExtractionConfig:
        """The inverse of ``to_dict`` (e.g. the config recorded in a cache manifest or a checkpoint)."""
        sections = {"video": FaceConfig, "audio": AudioConfig, "text": TextConfig, "asr": AsrConfig}
        fields = {k: sections[k](**v) if k in sections else v for k, v in values.items()}
        if "modalities" in fields:
            fields["modalities"] = tuple(fields["modalities"])
        return cls(**fields)


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
    transcript: Transcript | None = None  # text only: the timed words


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


def _video(path: Path, media: MediaInfo, config: ExtractionConfig) -> ModalityResult:
    if not media.has_video:
        return ModalityResult("video", absent="no video stream")
    seq = get_extractor(EXTRACTOR_OF["video"], config.video).extract_file(path)
    if media.video_duration:
        seq.info["stream_duration"] = media.video_duration  # validate against the video stream, not the container
    if seq.info.get("face_frames", int(seq.mask.sum())) == 0:
        return ModalityResult("video", absent=f"no face found in any of the {seq.length} sampled frames")
    return ModalityResult("video", sequence=seq)


def _audio(path: Path, media: MediaInfo, config: ExtractionConfig) -> ModalityResult:
    if not media.has_audio:
        return ModalityResult("audio", absent="no audio stream")
    extractor = get_extractor(EXTRACTOR_OF["audio"], config.audio)
    samples = read_audio(path, config.audio.rate)
    seq = extractor.extract(samples, config.audio.rate)
    seq.info["stream_duration"] = len(samples) / config.audio.rate  # AAC padding makes it differ from the container's
    return ModalityResult("audio", sequence=seq)


def _transcript(path: Path, media: MediaInfo, config: ExtractionConfig, text: str | None) -> Transcript | str:
    """The clip's timed transcript, or the reason it has none."""
    samples = read_audio(path, ASR_RATE) if media.has_audio else None
    asr_ready, asr_reason = asr_lib.asr_status()
    use_asr = config.use_asr and asr_ready and samples is not None
    if text is not None:
        transcript = transcript_from_text(text)
    elif (sidecar := find_transcript(path)) is not None:
        transcript = read_transcript(sidecar)
    elif use_asr:
        words = asr_lib.transcribe(samples, config.asr)
        if not words:
            return "no transcript given and ASR heard no words"
        return asr_lib.transcript_from_asr(words)
    else:
        why = "no audio to transcribe" if samples is None else asr_reason if config.use_asr else "ASR is off"
        return f"no transcript: no label text and no .json/.srt/.vtt/.txt next to the media; {why}"
    asr_words = asr_lib.transcribe(samples, config.asr) if use_asr and transcript.times is None else None
    return time_words(transcript, samples, ASR_RATE, media.duration, asr_words)


def _text(path: Path, media: MediaInfo, config: ExtractionConfig, text: str | None) -> ModalityResult:
    transcript = _transcript(path, media, config, text)
    if isinstance(transcript, str):
        return ModalityResult("text", absent=transcript)
    extractor = get_extractor(EXTRACTOR_OF["text"], config.text)
    seq = extractor.extract(list(transcript.words), transcript.times)
    seq.info["timing"] = transcript.timing
    return ModalityResult("text", sequence=seq, transcript=transcript)


def _stage_of(exc: Exception, modality: str) -> str:
    stage = getattr(exc, "stage", None)
    return stage if isinstance(stage, str) else modality


def extract_modality(
    path: str | Path, modality: str, config: ExtractionConfig, text: str | None = None
) -> ModalityResult:
    """One modality of one clip; never raises for bad media — the result carries the error instead."""
    path = Path(path)
    try:
        media = probe(path)
        if modality == "video":
            return _video(path, media, config)
        if modality == "audio":
            return _audio(path, media, config)
        if modality == "text":
            return _text(path, media, config, text)
        raise ValueError(f"unknown modality {modality!r}; choose from {MODALITIES}")
    except Exception as exc:  # a batch job records per-item failures and keeps going
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        return ModalityResult(modality, error=ClipError(_stage_of(exc, modality), str(reason)))


def _validated(result: ModalityResult, config: ExtractionConfig, duration: float) -> FeatureSequence:
    extractor = get_extractor(EXTRACTOR_OF[result.modality], getattr(config, result.modality))
    rate = {"video": config.video.fps, "audio": getattr(extractor, "frames_per_second", lambda: None)()}
    span = result.sequence.info.get("stream_duration", duration)
    span = span if span > 0 else None  # a still image has no duration to check against
    return validate_sequence(
        result.sequence, extractor.name, extractor.feature_dim, span, rate.get(result.modality) if span else None
    )


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
