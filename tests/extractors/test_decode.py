"""Decoding real media with PyAV: frames on a grid, mono audio, absent streams, still images, broken files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from cmamba.errors import MediaError
from cmamba.extractors.decode import iter_frames, probe, read_audio, read_frames

MEDIA = Path(__file__).parents[1] / "fixtures" / "media"
VIDEO, SPEECH = MEDIA / "carphone_pristine.mp4", MEDIA / "arctic_a0007.wav"
HASHES = {
    VIDEO: "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
    SPEECH: "1b850392f8c87ee2efe5a686523f1bab61d2a38d59bc43d1127e17e406f9e57d",
}


def test_fixtures_are_the_published_files():
    for path, digest in HASHES.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path.name


def test_probe(talking_clip):
    info = probe(talking_clip)
    assert info.has_video and info.has_audio and not info.still_image
    assert info.width == 176 and info.height == 144 and info.sample_rate == 16000
    assert abs(info.duration - 4.0) < 0.1
    silent = probe(VIDEO)
    assert silent.has_video and not silent.has_audio and abs(silent.fps - 29.97) < 0.01


def test_frames_on_a_regular_grid(talking_clip):
    frames, times = read_frames(talking_clip, fps=10)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (144, 176, 3)
    assert abs(len(times) - 40) <= 1  # 4.0 s at 10 Hz, nothing dropped
    np.testing.assert_allclose(np.diff(times), 0.1, atol=1e-9)
    assert frames.std() > 10  # real picture content, not a blank


def test_large_frames_are_downscaled():
    frames, _ = read_frames(VIDEO, fps=5, max_side=88)
    assert frames.shape[1:] == (72, 88, 3)


def test_audio_is_mono_at_the_requested_rate(talking_clip):
    original = read_audio(SPEECH, 16000)
    assert original.dtype == np.float32 and original.ndim == 1 and abs(len(original) - 64_000) < 200
    decoded = read_audio(talking_clip, 16000)
    n = min(len(original), len(decoded))
    lag = int(np.argmax(np.correlate(decoded[:4000], original[:4000], mode="full"))) - 3999
    aligned = np.roll(decoded[:n], -lag)
    corr = np.corrcoef(aligned[2000 : n - 2000], original[2000 : n - 2000])[0, 1]
    assert corr > 0.9, corr  # the same speech after an AAC round trip
    assert abs(len(read_audio(SPEECH, 22050)) - 88_200) < 300


def test_absent_streams_are_none_not_fake():
    assert read_audio(VIDEO) is None
    assert read_frames(SPEECH, fps=10) is None


def test_still_image(tmp_path):
    image = tmp_path / "face.png"
    with av.open(str(VIDEO)) as src:
        frame = next(src.decode(video=0))
    with av.open(str(image), "w", format="image2") as dst:  # a PNG of the first frame, written by FFmpeg
        stream = dst.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "rgb24"
        dst.mux(stream.encode(frame.reformat(format="rgb24")))
    info = probe(image)
    assert info.still_image and info.duration == 0.0 and not info.has_audio
    frames, times = read_frames(image, fps=10)
    assert frames.shape == (1, 144, 176, 3) and times.tolist() == [0.0]


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_unreadable_files_raise_media_error(tmp_path, content):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match=r"broken\.mp4: open: FFmpeg cannot read it") as err:
        probe(path)
    assert err.value.stage == "open"


def test_truncated_video_is_an_error_or_a_shorter_clip(tmp_path):
    path = tmp_path / "truncated.mp4"
    path.write_bytes(VIDEO.read_bytes()[:60_000])
    try:
        decoded = read_frames(path, fps=10)
    except MediaError as exc:
        assert exc.stage in ("open", "video")
    else:
        assert decoded is not None and 0 < len(decoded[1]) < 40


def test_a_time_range_decodes_the_same_frames_as_the_whole_file(talking_clip):
    """A clip may be a range of a file: decoding seeks to ``start``, stops at ``end``, times count from ``start``."""
    frames, times = read_frames(talking_clip, fps=10)
    part, part_times = read_frames(talking_clip, fps=10, start=1.0, end=3.0)
    np.testing.assert_allclose(part_times, np.arange(20) / 10)
    np.testing.assert_array_equal(part, frames[10:30])
    tail, tail_times = read_frames(talking_clip, fps=10, start=3.5)
    np.testing.assert_array_equal(tail, frames[35:]) and len(tail_times) == len(times) - 35


def test_frames_stream_one_at_a_time(talking_clip):
    stream = iter_frames(talking_clip, fps=10)
    t, first = next(stream)
    assert t == 0.0 and first.shape == (144, 176, 3)  # a generator: nothing else has been decoded or kept
    frames, _ = read_frames(talking_clip, fps=10)
    np.testing.assert_array_equal(np.stack([first, *(f for _, f in stream)]), frames)


@pytest.mark.parametrize("path", [SPEECH, "talking"])
def test_an_audio_range_equals_the_slice_of_the_whole(path, talking_clip):
    path = talking_clip if path == "talking" else path
    whole = read_audio(path, 16000)
    part = read_audio(path, 16000, start=1.25, end=2.5)
    assert len(part) == 20000
    np.testing.assert_allclose(part, whole[20000:40000], atol=1e-6)
    np.testing.assert_allclose(read_audio(path, 16000, start=3.0), whole[48000:], atol=1e-6)


def test_media_whose_timestamps_start_after_zero(talking_clip, tmp_path):
    """MPEG-TS starts its clock at 1.4 s: times are measured from the first timestamp, not rejected."""
    ts = tmp_path / "clip.ts"
    with av.open(str(talking_clip)) as source, av.open(str(ts), "w", format="mpegts") as target:
        mapping = {s.index: target.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                shift = round(1.4 / packet.time_base)  # start the clock at 1.4 s, as broadcast streams do
                packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                packet.stream = mapping[packet.stream.index]
                target.mux(packet)
    with av.open(str(ts)) as container:
        origin = container.start_time / av.time_base  # the earliest stream's first timestamp
        video = container.streams.video[0]
        lag = float(video.start_time * video.time_base) - origin  # the video starts this much after the origin
    assert origin > 1.0
    fps = probe(talking_clip).fps
    frames, times = read_frames(ts, fps=fps)
    reference, reference_times = read_frames(talking_clip, fps=fps)
    shift = round(lag * fps)  # the pictures sit at their own times, measured from the origin
    assert times[0] == 0.0 and abs(len(times) - len(reference_times) - shift) <= 1
    np.testing.assert_array_equal(frames[10:100], reference[10 - shift : 100 - shift])
    part, part_times = read_frames(ts, fps=fps, start=1.0, end=2.0)
    assert part_times[0] == 0.0 and abs(len(part) - fps) <= 1
    np.testing.assert_array_equal(part[5:-5], frames[round(fps) + 5 : round(fps) + len(part) - 5])
