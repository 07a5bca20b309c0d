"""Transcripts: the readers (txt, srt, vtt, json), bad files, sidecar lookup, and word timing without ASR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cmamba.errors import TranscriptError
from cmamba.extractors.decode import read_audio
from cmamba.extractors.transcripts import (
    Transcript,
    find_transcript,
    read_transcript,
    time_words,
    transcript_from_text,
    voiced_region,
)

SPEECH = Path(__file__).parents[2] / "fixtures" / "media" / "arctic_a0007.wav"
SENTENCE = "and you always want to see it in the superlative degree"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def assert_well_timed(t: Transcript, duration: float):
    """Ordered, non-overlapping intervals inside the clip, with strictly increasing starts."""
    assert t.times.shape == (len(t.words), 2)
    start, end = t.times[:, 0], t.times[:, 1]
    assert start[0] >= 0 and end[-1] <= duration
    assert np.all(end >= start) and np.all(np.diff(start) > 0) and np.all(end[:-1] <= start[1:])


def test_srt_cues_spread_words_by_length(tmp_path):
    srt = (
        "1\n00:00:00,500 --> 00:00:01,500\n<i>hi</i> there\n\n"
        "2\r\n00:00:02,000 --> 00:00:03,000\r\nmulti {\\an8}line\r\ncue\r\n\r\n"
    )
    t = read_transcript(write(tmp_path, "clip.srt", srt))
    assert t.words == ("hi", "there", "multi", "line", "cue") and t.source == "srt"
    assert t.timing == "subtitles" and t.estimated
    np.testing.assert_allclose(t.times[:2], [[0.5, 0.5 + 2 / 7], [0.5 + 2 / 7, 1.5]])  # 2 and 5 characters
    np.testing.assert_allclose(t.times[2:], [[2.0, 2.0 + 5 / 12], [2.0 + 5 / 12, 2.0 + 9 / 12], [2.0 + 9 / 12, 3.0]])


def test_vtt_header_notes_settings_and_tags(tmp_path):
    vtt = (
        "\ufeffWEBVTT - a title\nKind: captions\n\n"
        "NOTE this is\na comment\n\n"
        "STYLE\n::cue { color: red }\n\n"
        "intro\n00:01.000 --> 00:02.000 align:start position:10%\n<v Ann>Hello <c.loud>world</c> &amp; all\n\n"
        "00:00:02.500 --> 00:00:04.000\n我很<b>开心</b>\n"
    )
    t = read_transcript(write(tmp_path, "clip.vtt", vtt))
    assert t.words == ("Hello", "world", "&", "all", "我", "很", "开", "心") and t.source == "vtt"
    assert t.times[0, 0] == 1.0 and t.times[3, 1] == 2.0
    np.testing.assert_allclose(t.times[4:, 0], [2.5, 2.875, 3.25, 3.625])
    assert t.text == "Hello world & all 我很开心"


@pytest.mark.parametrize("wrap", [lambda words: words, lambda words: {"words": words}])
def test_json_word_times(tmp_path, wrap):
    words = [
        {"word": " Hello", "start": 0.2, "end": 0.6, "probability": 0.9},
        {"word": "今天", "start": 0.6, "end": 1},
        {"word": "ok", "start": 1.5, "end": 1.5},
    ]
    t = read_transcript(write(tmp_path, "clip.json", json.dumps(wrap(words))))
    assert t.words == ("Hello", "今", "天", "ok") and t.timing == "given" and not t.estimated
    np.testing.assert_allclose(t.times, [[0.2, 0.6], [0.6, 0.8], [0.8, 1.0], [1.5, 1.5]])
    assert not t.times.flags.writeable


def test_txt_with_bom_and_chinese(tmp_path):
    t = read_transcript(write(tmp_path, "clip.txt", b"\xef\xbb\xbf" + "Hello,  world\n今天 天气很好\n".encode()))
    assert t.words == ("Hello,", "world", "今", "天", "天", "气", "很", "好")
    assert t.times is None and t.timing == "none" and t.source == "txt"
    assert t.text == "Hello, world 今天天气很好"
    label = transcript_from_text("我很开心 ok")
    assert label.words == ("我", "很", "开", "心", "ok") and label.source == "label.csv"


CUE = "00:00:01,000 --> 00:00:02,000\nhello\n\n"


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("a.txt", "café".encode("latin-1"), r"a\.txt: transcript: is not UTF-8: byte 0xe9 at byte offset 3 \(line 1\)"),
        ("a.srt", b"1\n00:00:01,000 --> 00:00:02,000\nna\xefve\n", r"byte 0xef at byte offset 34 \(line 3\).*re-save"),
        ("a.txt", "hi".encode("utf-16"), "is UTF-16.*re-save as UTF-8"),
        ("a.txt", b"", "empty"),
        ("a.srt", b" \n\t\n", "empty"),
        ("a.vtt", "WEBVTT\n\nNOTE nothing here\n", "empty: no subtitle cue has any text"),
        ("a.json", "[]", "empty: no words"),
        ("a.srt", "1\n00:00:03,000 --> 00:00:02,000\nhi\n", r"cue 1 \(line 2, 00:00:03.000 --> 00:00:02.000\) ends"),
        (
            "a.srt",
            CUE + "00:00:01,500 --> 00:00:03,000\nhi\n",
            r"cue 2 \(line 4, 00:00:01.500 --> 00:00:03.000\) overlaps cue 1 \(line 1, 00:00:01.000 --> 00:00:02.000",
        ),
        ("a.srt", CUE + "00:00:00,200 --> 00:00:00,900\nhi\n", r"cue 2 .* starts before cue 1 "),
        ("a.srt", CUE + "just text\n", r"line 4: expected a cue timing line"),
        ("a.srt", "1\n00:00:01 --> 00:00:02\nhi\n", r"line 2: cannot read the cue times"),
        ("a.json", '[{"word": "a", "start": NaN, "end": 1}]', r'words\[0\] \'a\' "start" must be a finite number'),
        ("a.json", '[{"word": "a", "start": -1, "end": 1}]', r'"start" must be a finite number of seconds >= 0'),
        ("a.json", '[{"word": "a", "start": 0, "end": true}]', r'"end" must be a finite number'),
        ("a.json", '[{"word": "a", "start": 0}]', r"words\[0\] must be an object .* missing \['end'\]"),
        ("a.json", '[{"word": "", "start": 0, "end": 1}]', r'"word" must be a non-blank string'),
        ("a.json", '[{"word": "a", "start": 2, "end": 1}]', r"ends at 1 s, before it starts at 2 s"),
        (
            "a.json",
            '[{"word": "a", "start": 1, "end": 2}, {"word": "b", "start": 0.5, "end": 3}]',
            r"words\[1\] 'b' \(0.500-3.000 s\) starts before words\[0\] 'a'",
        ),
        ("a.json", '[{"word": "a", "start": 1, "end": 2}, {"word": "b", "start": 1.5, "end": 3}]', "overlaps"),
        ("a.json", '{"text": "hi"}', r'expected a list of \{"word", "start", "end"\} objects'),
        ("a.json", '[{"word": "a",', r"invalid JSON at line 1, column 15"),
        ("a.docx", "hi", r"unsupported transcript format '\.docx'"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, name, content, match):
    path = write(tmp_path, name, content)
    with pytest.raises(TranscriptError, match=match) as info:
        read_transcript(path)
    assert info.value.path == str(path) and info.value.stage == "transcript"


def test_missing_file(tmp_path):
    with pytest.raises(TranscriptError, match="cannot be read"):
        read_transcript(tmp_path / "nope.srt")


def test_find_transcript_prefers_timed_formats(tmp_path):
    media = write(tmp_path, "clip.mp4", b"")
    write(tmp_path, "other.json", "[]")
    assert find_transcript(media) is None
    for suffix in (".txt", ".vtt", ".srt", ".json"):
        write(tmp_path, "clip" + suffix, "x")
        assert find_transcript(media) == tmp_path / ("clip" + suffix)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_audio(SPEECH, 16000)


def test_voiced_region_of_real_speech(speech):
    start, end = voiced_region(speech, 16000)
    assert 0.35 < start < 0.45 and 3.35 < end < 3.55  # the recording has ~0.4 s of silence on either side
    assert voiced_region(np.zeros(64000, np.float32), 16000) is None


def test_estimated_timing_follows_the_voice(speech):
    t = time_words(transcript_from_text(SENTENCE), speech, 16000, 4.0)
    assert len(t.words) == 11 and t.timing == "estimated" and t.estimated and t.adjusted == 0
    assert_well_timed(t, 4.0)
    start, end = voiced_region(speech, 16000)
    assert t.times[0, 0] == start and t.times[-1, 1] == end
    long, short = t.words.index("superlative"), t.words.index("it")
    assert np.diff(t.times[long]) > 4 * np.diff(t.times[short])  # shares follow character counts


@pytest.mark.parametrize("samples", [np.zeros(64000, np.float32), None])
def test_without_voice_words_cover_the_clip(samples):
    t = time_words(transcript_from_text("a bb c"), samples, 16000, 4.0)
    np.testing.assert_allclose(t.times, [[0, 1], [1, 3], [3, 4]])
    assert t.timing == "estimated"


def test_given_times_are_checked_against_the_clip():
    words = ("a", "b", "c", "d")
    t = Transcript(words, [[0.5, 1.0], [1.0, 1.0], [1.0, 2.0], [3.5, 4.3]], "json", "given")
    timed = time_words(t, None, 16000, 4.0)
    assert_well_timed(timed, 4.0)
    assert timed.timing == "given" and timed.adjusted == 2  # c starts 1 ms after b, d is clipped at the end
    np.testing.assert_allclose(timed.times, [[0.5, 1.0], [1.0, 1.0], [1.001, 2.0], [3.5, 4.0]])
    crowded = time_words(Transcript(words[:3], [[3.999, 4.0]] * 3, "json", "given"), None, 16000, 4.0)
    assert_well_timed(crowded, 4.0)
    np.testing.assert_allclose(crowded.times[:, 0], [3.997, 3.998, 3.999])
    late = Transcript(words, [[0.5, 1.0], [1.0, 2.0], [2.0, 3.0], [4.2, 4.3]], "srt", "subtitles")
    with pytest.raises(TranscriptError, match=r"word 3 'd' of the srt transcript starts at 4.200 s, after the clip"):
        time_words(late, None, 16000, 4.0)
    with pytest.raises(TranscriptError, match="still image"):
        time_words(transcript_from_text("a"), None, 16000, 0.0)


def test_transcript_invariants():
    with pytest.raises(ValueError, match="timing must be one of"):
        Transcript(("a",), None, "txt", "guessed")
    with pytest.raises(ValueError, match="timing 'given' with times absent"):
        Transcript(("a",), None, "json", "given")
    with pytest.raises(ValueError, match=r"finite \(W, 2\) = \(2, 2\)"):
        Transcript(("a", "b"), [[0, 1]], "json", "given")
