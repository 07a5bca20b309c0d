"""Media decoding with PyAV (FFmpeg inside the wheel): frames at a chosen rate, audio resampled to mono.

Any container FFmpeg reads works; a video without an audio stream, an audio-only file and a still image are
all valid clips — the missing modality is reported as absent (``None``), never faked. Problems raise
``MediaError`` naming the file, the stage and the reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
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
        if duration <= 0 and video is not None and not still and video.average_rate:
            # a raw stream (.h264) has no duration and no timestamps: count its frames (demuxing, no decoding)
            duration = sum(1 for packet in container.demux(video) if packet.size) / float(video.average_rate)
        return MediaInfo(
            # a still image lasts no time; a still with sound (cover art) lasts as long as its sound
            duration=0.0 if still and audio is None else float(duration),
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


AUDIO_PREROLL = 0.25  # seconds decoded before a range's start and dropped


def _origin(container: av.container.InputContainer) -> float:
    """The container's first timestamp in seconds: media times are measured from it (MPEG-TS often starts at 1.4 s)."""
    start = container.start_time
    return start / av.time_base if start is not None and start > -(1 << 62) else 0.0  # AV_NOPTS_VALUE is INT64_MIN


@dataclass(frozen=True)
class _Damage:
    """A packet the decoder refused: where (media seconds, None when the packet has no time) and why."""

    time: float | None
    error: Exception

    def inside(self, start: float, end: float | None) -> bool:
        """Whether the damage may touch [start, end) (damage without a time touches every range)."""
        return self.time is None or (self.time >= start - 1e-6 and (end is None or self.time < end))

    def raise_for(self, path: str | Path, stage: str) -> None:
        where = "at an unknown time" if self.time is None else f"at {self.time:.2f} s"
        raise MediaError(path, stage, f"the {stage} stream is damaged {where} ({self.error}); re-encode or repair "
                         "the file (e.g. ffmpeg -i in.mp4 out.mp4), or cut the damaged part out")  # fmt: skip


def _packets(
    container: av.container.InputContainer, stream: av.stream.Stream, origin: float
) -> Iterator[av.frame.Frame | _Damage]:
    """The stream's frames, decoded packet by packet: a packet the decoder refuses becomes a ``_Damage`` (its
    media time) instead of ending the stream, so callers fail only the ranges that the damage touches."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError as exc:
            time = float(packet.pts * packet.time_base) - origin if packet.pts is not None else None
            yield _Damage(time, exc)


def _media_time(item: av.frame.Frame | _Damage, origin: float) -> float | None:
    if isinstance(item, _Damage):
        return item.time
    return None if item.time is None else float(item.time) - origin


def _decode_from(
    container: av.container.InputContainer, stream: av.stream.Stream, seconds: float
) -> Iterator[av.frame.Frame | _Damage]:
    """The stream's frames (and ``_Damage`` markers, see ``_packets``) from the keyframe at or before ``seconds``
    (media time). A seek that fails, or lands past ``seconds`` (some demuxers, e.g. MPEG-TS, seek by byte
    estimates), falls back to decoding from the beginning: slower, same result (callers skip what comes before
    ``seconds``, damage included)."""
    origin = _origin(container)
    if seconds > 0:
        try:
            container.seek(int((seconds + origin) / stream.time_base), stream=stream, backward=True)
            frames = _packets(container, stream, origin)
            first = next(frames, None)
            if first is not None and ((when := _media_time(first, origin)) is None or when <= seconds + 1e-6):
                yield first
                yield from frames
                return
        except av.error.FFmpegError:
            pass
        container.seek(0)
    yield from _packets(container, stream, origin)


def iter_frames(
    path: str | Path, fps: float, max_side: int | None = 1280, start: float = 0.0, end: float | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """RGB frames sampled at ``fps`` over [start, end) of the video stream, one at a time: (t, uint8 (H, W, 3)) with
    t = k / fps seconds from ``start`` (the last decoded frame at or before each grid time). Memory does not grow
    with the range: frames are never stacked. A still image gives one frame at t = 0; frames are never dropped:
    every grid time inside the stream (and the range) gets one. Raises MediaError when no frame decodes."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "video", "no video stream")
        stream = container.streams.video[0]
        native = float(stream.average_rate) if stream.average_rate else fps
        origin = _origin(container)
        k, last, image = 0, None, None  # last: the time of the frame held in ``image`` (converted on first use)

        def limit(t: float) -> bool:  # grid time k lies before t (and inside the range)
            grid = start + k / fps
            return grid <= t - 1e-9 and (end is None or grid < end - 1e-9)

        try:
            for index, frame in enumerate(_decode_from(container, stream, start)):
                if isinstance(frame, _Damage):
                    if frame.inside(start, end):
                        frame.raise_for(path, "video")
                    continue
                t = float(frame.time) - origin if frame.time is not None else index / native  # no times: count
                while last is not None and limit(t):
                    if not isinstance(image, np.ndarray):  # convert only frames that are used
                        image = _scaled(image, max_side)
                    yield k / fps, image
                    k += 1
                if end is not None and start + k / fps >= end - 1e-9:
                    return
                last, image = t, frame
        except av.error.FFmpegError as exc:  # the demuxer gave up: nothing after this point can be read
            if last is None:
                raise MediaError(path, "video", f"no frame could be decoded ({exc})") from exc
            raise MediaError(path, "video", f"decoding stopped after {last:.2f} s ({exc}); re-encode or repair the "
                             "file (e.g. ffmpeg -i in.mp4 out.mp4)") from exc  # fmt: skip
        if last is None:
            raise MediaError(path, "video", "the video stream has no frames")
        if not isinstance(image, np.ndarray):
            image = _scaled(image, max_side)
        stop = last + 1.0 / native if end is None else min(last + 1.0 / native, end)
        while start + k / fps < stop - 1e-9 or k == 0:  # the final frame lasts until the stream (or range) ends
            yield k / fps, image
            k += 1


def read_frames(
    path: str | Path, fps: float, max_side: int | None = 1280, start: float = 0.0, end: float | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``iter_frames`` stacked: (frames uint8 (T, H, W, 3), timestamps (T,) seconds), or None when the file has no
    video stream. For short clips and tests; the pipeline streams."""
    if not probe(path).has_video:
        return None
    times, frames = zip(*iter_frames(path, fps, max_side, start, end), strict=True)
    return np.stack(frames), np.asarray(times)


def read_audio(
    path: str | Path, sample_rate: int = 16000, start: float = 0.0, end: float | None = None
) -> np.ndarray | None:
    """Mono float32 samples at ``sample_rate`` of [start, end) of the audio stream (seconds from the stream's first
    timestamp), or None when the file has no audio stream."""
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        origin = _origin(container)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks, first, total = [], None, 0
        wanted = None if end is None else round((end - start) * sample_rate)
        try:
            # decoders (AAC) need a few frames to settle after a seek: start a little early and drop the excess
            for frame in _decode_from(container, stream, start - AUDIO_PREROLL):
                if isinstance(frame, _Damage):
                    if frame.inside(start - AUDIO_PREROLL, end):
                        frame.raise_for(path, "audio")
                    continue
                if first is None:  # where the decoded samples begin, relative to ``start``
                    first = round((float(frame.time) - origin - start) * sample_rate) if frame.time is not None else 0
                for r in resampler.resample(frame):
                    chunks.append(r.to_ndarray().reshape(-1))
                    total += len(chunks[-1])
                if wanted is not None and first + total >= wanted:
                    break
            else:
                chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
        except av.error.FFmpegError as exc:  # the demuxer gave up: nothing after this point can be read
            if not chunks:
                raise MediaError(path, "audio", f"no audio could be decoded ({exc})") from exc
            raise MediaError(path, "audio", f"decoding stopped after {total / sample_rate:.2f} s of audio ({exc}); "
                             "re-encode or repair the file (e.g. ffmpeg -i in.mp4 out.mp4)") from exc  # fmt: skip
        if not chunks:  # a stream without samples: nothing to decode, which is not an error of the file
            return np.zeros(0, np.float32)
        samples = np.concatenate(chunks).astype(np.float32)
        skip = -first if first is not None and first < 0 else 0
        if first is not None and first > 0 and start > 0:  # the seek landed after ``start``: pad what is missing
            samples = np.concatenate([np.zeros(first, np.float32), samples])
        samples = samples[skip:]
        return samples if wanted is None else samples[:wanted]


def decode_input(
    path: str | Path, spec: InputSpec, start: float = 0.0, end: float | None = None
) -> Frames | Samples | None:
    """The frames (streamed) or samples an extractor's ``spec`` asks for, of [start, end) of the file, or None
    when the file lacks that stream."""
    if spec.kind == "frames":
        media = probe(path)
        if not media.has_video:
            return None
        frames = iter_frames(path, spec.rate, spec.max_side, start, end)
        # a still (an image, or cover art beside sound) is one frame at t = 0, however long its sound lasts
        return Frames(stream=itertools.islice(frames, 1) if media.still_image else frames)
    if spec.kind == "samples":
        samples = read_audio(path, int(spec.rate), start, end)
        return None if samples is None else Samples(samples, int(spec.rate))
    raise ValueError(f"{spec.kind} are not decoded from media")
