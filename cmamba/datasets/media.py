"""Build test and demo clips from real recordings: mux a silent video with a speech track using PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av


def mux_clip(
    video: str | Path,
    audio: str | Path | None,
    out: str | Path,
    size: tuple[int, int] | None = None,
    loops: int = 1,
    seconds: float | None = None,
    preset: str = "medium",
) -> Path:
    """Write ``out`` (.mp4, h264 + AAC) with the frames of ``video`` and the samples of ``audio``.

    size: (width, height) to rescale the frames to (e.g. (640, 360) for a 360p clip); loops: play both inputs
    this many times in a row (longer clips for benchmarks); seconds: stop both streams after this long; preset:
    libx264's speed/size trade-off ("veryfast" encodes long benchmark inputs about 3× faster).
    ``audio=None`` writes a video without sound.
    """
    out = Path(out)
    with av.open(str(video)) as src_v, av.open(str(out), "w") as dst:
        stream_in = src_v.streams.video[0]
        rate = stream_in.average_rate or Fraction(30)
        width, height = size or (stream_in.codec_context.width, stream_in.codec_context.height)
        v_out = dst.add_stream("libx264", rate=rate, options={"preset": preset})
        v_out.width, v_out.height, v_out.pix_fmt = width, height, "yuv420p"
        src_a = av.open(str(audio)) if audio is not None else None
        try:  # every stream must exist before the first packet is written
            a_out = dst.add_stream("aac", rate=src_a.streams.audio[0].codec_context.sample_rate) if src_a else None
            index = 0
            for _ in range(loops):
                src_v.seek(0)
                for frame in src_v.decode(stream_in):
                    if seconds is not None and index / rate >= seconds:
                        break
                    frame = frame.reformat(width=width, height=height, format="yuv420p")
                    frame.pts, frame.time_base = index, 1 / rate
                    dst.mux(v_out.encode(frame))
                    index += 1
            dst.mux(v_out.encode(None))
            if src_a is not None:
                offset = 0
                for _ in range(loops):
                    src_a.seek(0)
                    for frame in src_a.decode(audio=0):
                        if seconds is not None and offset / a_out.rate >= seconds:
                            break
                        frame.pts, frame.time_base = offset, Fraction(1, a_out.rate)
                        offset += frame.samples
                        dst.mux(a_out.encode(frame))
                dst.mux(a_out.encode(None))
        finally:
            if src_a is not None:
                src_a.close()
    return out


def distinct_copy(source: str | Path, target: str | Path, tag: int) -> Path:
    """A copy of ``source`` with ``tag`` appended as two bytes after the media: the same clip to every decoder, a
    different content digest to the cache (test folders and benchmarks of many "different" clips)."""
    target = Path(target)
    target.write_bytes(Path(source).read_bytes() + tag.to_bytes(2, "little"))
    return target
