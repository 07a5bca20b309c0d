"""Offline ASR on real speech (the [asr] extra is part of the test environment), and aligning transcripts to it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cmamba.extractors.decode import read_audio
from cmamba.extractors.transcripts import asr, time_words, transcript_from_text
from cmamba.extractors.transcripts.asr import (
    TINY_EN_SHA256,
    AsrConfig,
    AsrWord,
    asr_status,
    describe_asr,
    transcribe,
    transcript_from_asr,
)

SPEECH = Path(__file__).parents[2] / "fixtures" / "media" / "arctic_a0007.wav"
SENTENCE = "and you always want to see it in the superlative degree"


def norm(word: str) -> str:
    return word.strip(" .,!?").lower()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_audio(SPEECH, 16000)


@pytest.fixture(scope="module")
def asr_words(speech) -> list[AsrWord]:
    return transcribe(speech)


def test_status_and_identity():
    available, reason = asr_status()
    assert available and "faster-whisper 1.2.1" in reason
    info = describe_asr()
    assert info["model_sha256"] == TINY_EN_SHA256 and Path(info["model_dir"], "model.bin").is_file()
    assert info["config"]["cpu_threads"] == 1 and info["config"]["language"] == "en"


def test_transcribe_real_speech(asr_words):
    assert [norm(w.word) for w in asr_words] == SENTENCE.split()
    times = np.array([(w.start, w.end) for w in asr_words])
    assert times.min() >= 0 and times.max() <= 4.0
    assert np.all(times[:, 1] >= times[:, 0]) and np.all(times[1:, 0] >= times[:-1, 1])
    assert all(0 <= w.probability <= 1 for w in asr_words)
    superlative = times[SENTENCE.split().index("superlative")]
    assert 2.2 < superlative[0] < 2.7 and 2.8 < superlative[1] < 3.3  # where the word is in the recording


def test_repetitive_speech_is_decoded_deterministically(speech):
    # Whisper's default fallback re-samples at higher temperatures when a window looks repetitive: on this input it
    # returned 37 partly random words in 3 s; greedy-only decoding gives the 33 spoken words in about 0.5 s
    words = transcribe(np.tile(speech, 3))
    assert [norm(w.word) for w in words] == SENTENCE.split() * 3
    starts = np.array([w.start for w in words])
    assert np.all(np.diff(starts) > 0) and starts[11] >= 4.0 and words[-1].end <= 12.0


def test_asr_transcript(asr_words):
    t = transcript_from_asr(asr_words)
    assert t.timing == "asr" and t.source == "asr" and not t.estimated and len(t) == 11
    timed = time_words(t, None, 16000, 4.0, asr_words)  # already timed: the ASR words are not used again
    np.testing.assert_array_equal(timed.times, t.times)
    chinese = transcript_from_asr([AsrWord("今天", 0.0, 0.4, 0.9), AsrWord("好", 0.5, 0.7, 0.8)])
    assert chinese.words == ("今", "天", "好")
    np.testing.assert_allclose(chinese.times, [[0, 0.2], [0.2, 0.4], [0.5, 0.7]])


def well_timed(times: np.ndarray, duration: float) -> bool:
    start, end = times[:, 0], times[:, 1]
    return bool(start[0] >= 0 and end[-1] <= duration and np.all(np.diff(start) > 0) and np.all(end[:-1] <= start[1:]))


@pytest.mark.parametrize(
    "text, interpolated",
    [
        ("And you always want to see it in the superlative degree.", 0),  # case and punctuation are ignored
        ("and you always want to sea it in the superlative degree", 1),  # a changed word
        ("and you always want see it in the superlative degree", 0),  # a word the transcript lacks
        ("and you always want to really see it in the superlative degree", 3),  # one the ASR missed
    ],
)
def test_aligned_timing(speech, asr_words, text, interpolated):
    t = time_words(transcript_from_text(text), speech, 16000, 4.0, asr_words)
    assert t.timing == "aligned" and t.interpolated == interpolated and t.estimated == (interpolated > 0)
    assert len(t) == len(text.split()) and well_timed(t.times, 4.0)
    asr = {norm(w.word): (w.start, w.end) for w in asr_words}
    for word, (start, end) in zip(t.words, t.times, strict=True):
        if norm(word) in asr:
            assert abs(start - asr[norm(word)][0]) < 0.3 and abs(end - asr[norm(word)][1]) < 0.3, word
    if "really" in text:  # the missed word sits between its neighbours, which share their time with it
        want, really, see = (t.times[t.words.index(w)] for w in ("want", "really", "see"))
        assert want[1] <= really[0] < really[1] <= see[0]


def test_aligned_timing_edges(asr_words):
    t = time_words(transcript_from_text("well " + SENTENCE + " indeed"), None, 16000, 4.0, asr_words)
    assert t.timing == "aligned" and well_timed(t.times, 4.0)
    assert t.words[0] == "well" and t.times[0, 1] > t.times[0, 0]
    nothing_matches = time_words(transcript_from_text("completely different"), None, 16000, 4.0, asr_words)
    assert nothing_matches.timing == "estimated" and well_timed(nothing_matches.times, 4.0)


def test_words_whisper_could_not_place_are_interpolated():
    # as faster-whisper returned on 28 s of speech: a run of words without duration at one instant
    times = [(0.0, 0.5), (0.5, 2.0), (2.0, 2.0), (2.0, 2.0), (2.0, 2.0), (2.0, 2.4), (2.5, 3.0)]
    asr_words = [AsrWord(w, s, e, 0.9) for w, (s, e) in zip("a bb c dd e ff g".split(), times, strict=True)]
    for t, timing in (
        (time_words(transcript_from_asr(asr_words), None, 16000, 4.0), "asr"),
        (time_words(transcript_from_text("a bb c dd e ff g"), None, 16000, 4.0, asr_words), "aligned"),
    ):
        assert t.timing == timing and t.interpolated == 5 and t.estimated and well_timed(t.times, 4.0)
        np.testing.assert_allclose(t.times[[0, 6]], [times[0], times[6]])
        np.testing.assert_allclose(t.times[1:6].ravel()[[0, -1]], [0.5, 2.4])  # bb..ff share bb's and ff's time
        assert np.all(np.diff(t.times[1:6], axis=1) > 0.1)
        again = time_words(t, None, 16000, 4.0)  # timing twice changes nothing
        assert again.interpolated == 5 and again.adjusted == 0
        np.testing.assert_array_equal(again.times, t.times)


def test_empty_audio_and_shapes():
    assert transcribe(np.zeros(0, np.float32)) == []
    with pytest.raises(ValueError, match=r"mono samples \(N,\)"):
        transcribe(np.zeros((2, 100), np.float32))


def test_missing_extra_is_explained(monkeypatch, speech):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # as if the [asr] extra were not installed
    assert asr_status() == (False, "install the [asr] extra: pip install 'cmamba[asr]'")
    with pytest.raises(ImportError, match=r"pip install 'cmamba\[asr\]'"):
        transcribe(speech)


def test_models_come_only_from_local_verified_files(tmp_path):
    available, reason = asr_status(AsrConfig(model="tiny.en"))
    assert not available and "not a local CTranslate2 model directory" in reason and "never downloads" in reason
    with pytest.raises(ValueError, match="never downloads"):
        transcribe(np.zeros(1600, np.float32), AsrConfig(model=str(tmp_path)))
    packaged = Path(describe_asr()["model_dir"])
    with pytest.raises(ValueError, match=r"has sha256 1a5afae0.*expected 0000"):
        transcribe(np.zeros(1600, np.float32), AsrConfig(model=str(packaged), sha256="0" * 64))


def bursts(samples: np.ndarray, config=None) -> list[AsrWord]:
    """A stand-in recogniser: one word per loud run of ``samples`` (a burst cut by the block's edge is a word too,
    as Whisper hears half a word)."""
    loud = np.abs(samples) > 0.1
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    return [AsrWord("w", a / 16000, b / 16000, 1.0) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@pytest.mark.parametrize("end", [None, 41.3, 41.0])
def test_long_ranges_are_recognised_block_by_block_with_every_word_once(tmp_path, monkeypatch, end):
    import soundfile

    rate, onsets = 16000, np.arange(1.0, 45.0, 1.1)  # 0.5 s bursts every 1.1 s: many straddle a 7 s block edge
    t = np.arange(int(46.0 * rate)) / rate
    samples = np.zeros_like(t, dtype=np.float32)
    for onset in onsets:
        samples[(t >= onset) & (t < onset + 0.5)] = 0.5
    soundfile.write(tmp_path / "long.wav", samples, rate)
    monkeypatch.setattr(asr, "transcribe", bursts)
    words = asr.transcribe_range(tmp_path / "long.wav", 2.0, end, block_seconds=7.0)
    expected = [(a - 2.0, a - 1.5) for a in onsets if a >= 2.0 and (end is None or a + 0.5 <= end)]
    expected += [(a - 2.0, end - 2.0) for a in onsets if end is not None and a < end < a + 0.5]  # cut at the end
    got = [(w.start, w.end) for w in words]
    assert len(got) == len(expected)
    np.testing.assert_allclose(got, expected, atol=0.002)


def test_a_short_range_is_one_block_like_transcribe(speech, asr_words):
    assert asr.transcribe_range(SPEECH, block_seconds=60.0) == asr_words
    with pytest.raises(ValueError, match="block_seconds"):
        asr.transcribe_range(SPEECH, block_seconds=5.0)
