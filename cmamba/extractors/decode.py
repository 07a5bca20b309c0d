"""Media decoding with PyAV (FFmpeg inside the wheel): frames at a chosen rate, audio resampled to mono.

Any container FFmpeg reads works; a video without an audio stream, an audio-only file and a still image are
all valid clips — the missing modality is reported as absent (``None``), never faked. Problems raise
``MediaError`` naming the file, the stage and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from cmamba.errors import MediaError
from cmamba.extractors.base import Frames, InputSpec, Samples


@dataclass(frozen=True)
class MediaInfo:
    duration: float  # seconds (0 for a still image)
    has_video: bool
    has_audio: bool
    fps: float | None
    width: int | None
    height: int | None
    sample_rate: int | None
    still_image: bool
    video_duration: float | None = None  # the video stream's own length (a clip's sound may run longer)


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(path, "open", f"FFmpeg cannot read it ({exc})") from exc


def probe(path: str | Path) -> MediaInfo:
    """Streams and duration of a media file."""
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        still = video is not None and (
            video.frames == 1 or container.format.name in ("image2", "png_pipe", "jpeg_pipe")
        )
        if container.duration is not None:
            duration = container.duration / av.time_base
        else:
            stream = video or audio
            duration = float(stream.duration * stream.time_base) if stream and stream.duration else 0.0
        return MediaInfo(
            duration=0.0 if still else float(duration),
            has_video=video is not None,
            has_audio=audio is not None,
            fps=float(video.average_rate) if video is not None and video.average_rate else None,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            still_image=still,
            video_duration=float(video.duration * video.time_base) if video is not None and video.duration else None,
        )


def _scaled(frame: av.VideoFrame, max_side: int | None) -> np.ndarray:
    if max_side and max(frame.width, frame.height) > max_side:  # downscale large frames before detection
        scale = max_side / max(frame.width, frame.height)
        frame = frame.reformat(width=max(2, round(frame.width * scale)), height=max(2, round(frame.height * scale)))
    return frame.to_ndarray(format="rgb24")


def read_frames(path: str | Path, fps: float, max_side: int | None = 1280) -> tuple[np.ndarray, np.ndarray] | None:
    """RGB frames sampled at ``fps`` (the last decoded frame at or before each grid time k/fps).

    Returns (frames uint8 (T, H, W, 3), timestamps (T,) seconds), or None when the file has no video stream.
    A still image gives one frame at t = 0. Frames are never dropped: every grid time inside the stream
    gets one.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with _open(path) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        frames, times, next_time, last = [], [], 0.0, None
        native = float(stream.average_rate) if stream.average_rate else fps
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else index / native  # no timestamps: frame count
                while last is not None and next_time <= t - 1e-9:  # grid points covered by the previous frame
                    if not isinstance(last[1], np.ndarray):  # convert only frames that are used
                        last = (last[0], _scaled(last[1], max_side))
                    frames.append(last[1])
                    times.append(next_time)
                    next_time += 1.0 / fps
                last = (t, frame)
        except av.error.FFmpegError as exc:
            if last is None:
                raise MediaError(path, "video", f"no frame could be decoded ({exc})") from exc
        if last is None:
            raise MediaError(path, "video", "the video stream has no frames")
        end = last[0] + 1.0 / native
        if not isinstance(last[1], np.ndarray):
            last = (last[0], _scaled(last[1], max_side))
        while next_time < end - 1e-9 or not frames:  # the final frame lasts until the stream ends
            frames.append(last[1])
            times.append(next_time)
            next_time += 1.0 / fps
        return np.stack(frames), np.asarray(times)


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray | None:
    """Mono float32 samples at ``sample_rate``, or None when the file has no audio stream."""
    with _open(path) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks = []
        try:
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise MediaError(path, "audio", f"no audio could be decoded ({exc})") from exc
        if not chunks:
            raise MediaError(path, "audio", "the audio stream is empty")
        return np.concatenate(chunks).astype(np.float32)


def decode_input(path: str | Path, spec: InputSpec) -> Frames | Samples | None:
    """The frames or samples an extractor's ``spec`` asks for, or None when the file lacks that stream."""
    if spec.kind == "frames":
        decoded = read_frames(path, spec.rate, spec.max_side)
        return None if decoded is None else Frames(*decoded)
    if spec.kind == "samples":
        samples = read_audio(path, int(spec.rate))
        return None if samples is None else Samples(samples, int(spec.rate))
    raise ValueError(f"{spec.kind} are not decoded from media")
