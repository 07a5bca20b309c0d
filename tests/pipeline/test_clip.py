"""One clip end to end on real media, every alignment mode, and the bad-input matrix: per-clip records, no crash,
no silent zeros."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from skimage import data

from cmamba.constants import ALIGN_MODES
from cmamba.pipeline.clip import extract_clip
from cmamba.pipeline.config import ExtractionConfig

MEDIA = Path(__file__).parents[1] / "fixtures" / "media"
SENTENCE = "and you always want to see it in the superlative degree"
NO_ASR = ExtractionConfig(use_asr=False)


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    with av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def native(talking_clip):
    return extract_clip(talking_clip, NO_ASR, text=SENTENCE)


def test_all_modalities_from_a_real_talking_clip(native):
    assert native.ok and not native.absent, (native.errors, native.absent)
    assert set(native.sequences) == {"text", "audio", "video"}
    video, audio, text = (native.sequences[m] for m in ("video", "audio", "text"))
    assert abs(video.length - 40) <= 1 and video.mask.mean() >= 0.95  # 10 Hz, a face in nearly every frame
    assert abs(audio.length - 403) <= 2 and np.isfinite(audio.values).all()  # 4.032 s of AAC-padded audio
    assert text.length == 11 and text.info["timing"] == "estimated"  # label text, no ASR: spread over the voice
    words = native.transcript.times
    assert np.all(np.diff(words[:, 0]) > 0) and words.min() >= 0 and words.max() <= native.duration
    assert all(seq.info["non_finite_replaced"] == 0 for seq in native.sequences.values())


@pytest.mark.parametrize("mode", ALIGN_MODES)
def test_alignment_modes_from_the_same_clip(talking_clip, mode):
    clip = extract_clip(talking_clip, ExtractionConfig(use_asr=False, align=mode), text=SENTENCE)
    assert clip.ok
    lengths = {m: s.length for m, s in clip.sequences.items()}
    if mode == "word":
        assert set(lengths.values()) == {11}
    elif mode == "clock":
        assert set(lengths.values()) == {int(np.ceil(clip.duration * 10 - 1e-9))}
        np.testing.assert_allclose(clip.sequences["audio"].timestamps[:3], [0.0, 0.1, 0.2])
    else:
        assert lengths["audio"] > lengths["video"] > lengths["text"]


def test_asr_supplies_the_transcript_when_none_is_given(talking_clip):
    clip = extract_clip(talking_clip, ExtractionConfig())
    assert clip.ok and clip.transcript.timing == "asr"
    assert " ".join(clip.transcript.words).lower().replace(".", "") == SENTENCE


def test_untimed_label_text_is_aligned_to_asr_words(talking_clip):
    clip = extract_clip(talking_clip, ExtractionConfig(), text=SENTENCE)
    assert clip.ok and clip.transcript.timing == "aligned"


def test_video_without_audio_marks_audio_absent(tmp_path):
    clip = extract_clip(MEDIA / "carphone_pristine.mp4", NO_ASR, text=SENTENCE)
    assert clip.ok and clip.absent == {"audio": "no audio stream"}
    assert clip.sequences["text"].info["timing"] == "estimated"


def test_audio_only_and_still_image_are_valid_clips(tmp_path):
    wav = extract_clip(MEDIA / "arctic_a0007.wav", NO_ASR, text=SENTENCE)
    assert wav.ok and set(wav.sequences) == {"audio", "text"} and wav.absent["video"] == "no video stream"
    still = tmp_path / "astronaut.png"
    av.VideoFrame.from_ndarray(data.astronaut(), format="rgb24").to_image().save(still)
    image = extract_clip(still, NO_ASR)
    assert image.ok and image.sequences["video"].length == 1 and image.sequences["video"].mask.all()
    assert image.absent["audio"] == "no audio stream" and "no transcript" in image.absent["text"]


def test_no_face_anywhere_is_an_absence_not_zeros(tmp_path):
    black = write_video(tmp_path / "black.mp4", np.zeros((20, 144, 176, 3), np.uint8))
    clip = extract_clip(black, NO_ASR)
    assert "video" not in clip.sequences and "no face" in clip.absent["video"]
    assert not clip.ok and clip.errors[0].stage == "clip"  # nothing at all to keep from this clip


def test_one_frame_video(tmp_path):
    one = write_video(tmp_path / "one.mp4", np.zeros((1, 64, 64, 3), np.uint8))
    clip = extract_clip(one, NO_ASR)
    assert "video" in clip.absent  # a black frame: readable, but no face


@pytest.mark.parametrize(
    ("content", "stage"),
    [(b"", "open"), (b"\x00garbage" * 1000, "open")],
    ids=["zero-length", "corrupt"],
)
def test_unreadable_media_is_a_per_clip_error(tmp_path, content, stage):
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    clip = extract_clip(path, NO_ASR, text=SENTENCE)
    assert not clip.ok and clip.errors[0].stage == stage and not clip.sequences
    assert str(path) in clip.path and clip.errors[0].reason


def test_truncated_file_never_crashes(talking_clip, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(talking_clip.read_bytes()[: talking_clip.stat().st_size // 2])
    clip = extract_clip(cut, NO_ASR, text=SENTENCE)
    assert clip.errors or clip.sequences  # either a named failure or valid, validated features
    for error in clip.errors:
        assert error.stage and error.reason


@pytest.mark.parametrize(
    ("suffix", "content", "needle"),
    [
        (".txt", "caf\xe9".encode("latin-1"), "UTF-8"),
        (".txt", b"   \n", "empty"),
        (".srt", b"1\n00:00:02,000 --> 00:00:01,000\nbackwards\n", "1"),
        (".srt", b"1\n00:00:00,000 --> 00:00:02,000\none\n\n2\n00:00:01,000 --> 00:00:03,000\ntwo\n", "overlap"),
    ],
    ids=["non-utf8", "empty", "reversed", "overlapping"],
)
def test_bad_transcripts_are_text_errors_and_the_rest_is_kept(talking_clip, tmp_path, suffix, content, needle):
    clip_path = tmp_path / "clip.mp4"
    clip_path.write_bytes(talking_clip.read_bytes())
    (tmp_path / f"clip{suffix}").write_bytes(content)
    clip = extract_clip(clip_path, NO_ASR)
    assert [e.stage for e in clip.errors] == ["transcript"] and needle.lower() in clip.errors[0].reason.lower()
    assert {"audio", "video"} <= set(clip.sequences)


def test_word_alignment_without_a_transcript_is_named(tmp_path):
    clip = extract_clip(MEDIA / "carphone_pristine.mp4", ExtractionConfig(use_asr=False, align="word"))
    assert [e.stage for e in clip.errors] == ["align"] and "word times" in clip.errors[0].reason


def test_sound_longer_than_the_picture_is_valid(tmp_path):
    import soundfile as sf

    from cmamba.datasets.media import mux_clip

    speech, rate = sf.read(MEDIA / "arctic_a0007.wav", dtype="float32")
    sf.write(tmp_path / "long.wav", np.concatenate([speech, speech]), rate)  # 8 s of sound, 4 s of video
    clip = extract_clip(mux_clip(MEDIA / "carphone_pristine.mp4", tmp_path / "long.wav", tmp_path / "c.mp4"), NO_ASR)
    assert clip.ok, clip.errors
    assert clip.sequences["video"].timestamps[-1] < 4.1 < clip.sequences["audio"].timestamps[-1]
