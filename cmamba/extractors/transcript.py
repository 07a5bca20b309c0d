"""Transcripts: reading them (label.csv text, .txt, .srt, .vtt, .json), finding sidecars, and timing every word.

A ``Transcript`` holds words in ``split_words`` units (whitespace words, every CJK character a word) and, once
timed, their (W, 2) start/end seconds. ``timing`` says where the times come from:

- "given": word-level times from a JSON file;
- "subtitles": cue times, the words spread inside each cue in proportion to their character length;
- "asr": words and times recognised by the offline ASR (``cmamba.extractors.asr``);
- "aligned": an untimed transcript whose words took the times of the matching ASR words (the rest interpolated);
- "estimated": an untimed transcript spread over the voiced part of the clip;
- "none": not timed yet.

``time_words`` turns any transcript into a timed one whose intervals are ordered, non-overlapping and inside the
clip, with strictly increasing starts (the text extractor stamps each word vector at its word's start). Bad files
raise ``TranscriptError`` naming the file and the problem; encodings are never guessed.
"""

from __future__ import annotations

import codecs
import dataclasses
import html
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cmamba.extractors.text import _CJK, split_words

if TYPE_CHECKING:
    from cmamba.extractors.asr import AsrWord

TIMINGS = ("given", "subtitles", "asr", "aligned", "estimated", "none")
SIDECAR_SUFFIXES = (".json", ".srt", ".vtt", ".txt")  # timed formats first
_GAP = 1e-3  # seconds kept between word starts: feature timestamps must increase strictly
_END_SLACK = 0.1  # a word may start this far past the clip end (decoded length and rounded times differ a little)
_MIN_WORD = 0.1  # seconds a word the ASR missed needs before it shares its neighbours' time instead of a gap
_SILENCE_DB = -60.0  # a clip whose loudest 25 ms frame is below this (dBFS RMS) has no voice


class TranscriptError(ValueError):
    """A transcript that cannot be used; ``path`` is None for one that did not come from a file."""

    stage = "transcript"

    def __init__(self, path: str | Path | None, reason: str):
        super().__init__(f"{path}: {self.stage}: {reason}" if path is not None else f"{self.stage}: {reason}")
        self.path, self.reason = (None if path is None else str(path)), reason


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on an ndarray is ambiguous
class Transcript:
    """W words; ``times`` (W, 2) float64 start/end seconds (read-only), or None when ``timing`` is "none"."""

    words: tuple[str, ...]
    times: np.ndarray | None
    source: str  # "label.csv", "txt", "srt", "vtt", "json" or "asr"
    timing: str  # one of TIMINGS
    adjusted: int = 0  # words whose times time_words clipped to the clip or moved apart to keep starts increasing
    interpolated: int = 0  # words timed by interpolation: no ASR word matched them, or the ASR gave them no duration

    def __post_init__(self):
        object.__setattr__(self, "words", tuple(self.words))
        if self.timing not in TIMINGS:
            raise ValueError(f"timing must be one of {TIMINGS}, got {self.timing!r}")
        if (self.times is None) != (self.timing == "none"):
            raise ValueError(f"timing {self.timing!r} with times {'absent' if self.times is None else 'given'}")
        if self.times is not None:
            times = np.array(self.times, dtype=np.float64)
            if times.shape != (len(self.words), 2) or not np.isfinite(times).all():
                raise ValueError(f"times must be finite (W, 2) = ({len(self.words)}, 2), got shape {times.shape}")
            times.setflags(write=False)
            object.__setattr__(self, "times", times)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def estimated(self) -> bool:
        """True when some word times are guesses (spread by character length) rather than measured per word:
        "estimated" and "subtitles" timing, and any timing with interpolated words."""
        return self.timing in ("estimated", "subtitles") or self.interpolated > 0

    @property
    def text(self) -> str:
        """The words joined by spaces, except between two CJK characters (Chinese is written without them)."""
        pieces = []
        for prev, word in zip((None, *self.words), self.words, strict=False):
            if prev is not None and not (_CJK.fullmatch(prev) and _CJK.fullmatch(word)):
                pieces.append(" ")
            pieces.append(word)
        return "".join(pieces)


def _spread(words: Sequence[str], start: float, end: float) -> np.ndarray:
    """(n, 2) intervals tiling [start, end], each word's share proportional to its character count."""
    if not words:
        return np.zeros((0, 2))
    edges = np.concatenate([[0], np.cumsum([len(w) for w in words])])
    edges = start + (end - start) * edges / edges[-1]
    edges[-1] = end  # exactly, despite rounding: the next cue or word may start there
    return np.stack([edges[:-1], edges[1:]], 1)


def transcript_from_text(text: str, source: str = "label.csv") -> Transcript:
    """An untimed transcript of ``text`` (e.g. label.csv's text column); 0 words when it is blank."""
    return Transcript(tuple(split_words(text)), None, source, "none")


def transcript_from_timed_words(entries: Iterable[tuple[str, float, float]], source: str, timing: str) -> Transcript:
    """A transcript from (word, start, end) entries. An entry holding several ``split_words`` units (a Chinese
    word of two characters, say) is spread over its interval; blank entries are dropped."""
    words, times = [], []
    for text, start, end in entries:
        pieces = split_words(text)
        words.extend(pieces)
        times.append(_spread(pieces, start, end))
    return Transcript(tuple(words), np.concatenate(times) if times else np.zeros((0, 2)), source, timing)


# --- files ------------------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TranscriptError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise TranscriptError(path, "is UTF-16 (it starts with a UTF-16 byte order mark); re-save as UTF-8")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data[:offset].count(b"\n") + 1
        raise TranscriptError(
            path,
            f"is not UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} (line {line}) is invalid; cmamba does "
            "not guess encodings, re-save as UTF-8",
        ) from exc
    if not text.strip():
        raise TranscriptError(path, "empty: the file has no text")
    return text


def _read_txt(path: Path, text: str) -> Transcript:
    return transcript_from_text(text, source="txt")


def _read_json(path: Path, text: str) -> Transcript:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranscriptError(path, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    items = data.get("words") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise TranscriptError(path, 'expected a list of {"word", "start", "end"} objects or {"words": [...]}')
    entries: list[tuple[str, float, float]] = []
    for k, item in enumerate(items):
        word, start, end = _json_word(path, k, item)
        if entries and start < entries[-1][2]:
            prev_word, prev_start, prev_end = entries[-1]
            problem = "starts before" if start < prev_start else "overlaps"
            raise TranscriptError(
                path,
                f"words[{k}] {word!r} ({start:.3f}-{end:.3f} s) {problem} words[{k - 1}] {prev_word!r} "
                f"({prev_start:.3f}-{prev_end:.3f} s); words must be in time order and not overlap",
            )
        entries.append((word, start, end))
    return transcript_from_timed_words(entries, source="json", timing="given")


def _json_word(path: Path, k: int, item: object) -> tuple[str, float, float]:
    if not isinstance(item, dict) or (missing := [key for key in ("word", "start", "end") if key not in item]):
        found = f"missing {missing}" if isinstance(item, dict) else f"a {type(item).__name__}"
        raise TranscriptError(path, f'words[{k}] must be an object with "word", "start" and "end"; got {found}')
    word, start, end = item["word"], item["start"], item["end"]
    if not isinstance(word, str) or not word.strip():
        raise TranscriptError(path, f'words[{k}] "word" must be a non-blank string, got {word!r}')
    for key, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise TranscriptError(
                path, f'words[{k}] {word!r} "{key}" must be a finite number of seconds >= 0, got {value!r}'
            )
    if end < start:
        raise TranscriptError(path, f"words[{k}] {word!r} ends at {end} s, before it starts at {start} s")
    return word, float(start), float(end)


_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})"  # HH:MM:SS,mmm (SRT), HH:MM:SS.mmm or MM:SS.mmm (VTT)
_CUE_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s.*)?$")  # VTT cue settings may follow
_VTT_BLOCK = re.compile(r"^(WEBVTT|NOTE|STYLE|REGION)\b")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # <i>, <c.red>, <v Name>, <00:01.000>, and SSA overrides like {\an8}


def _seconds(hours: str | None, minutes: str, seconds: str, fraction: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction) / 10 ** len(fraction)


def _clock(t: float) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _blocks(text: str) -> Iterable[tuple[int, list[str]]]:
    """Blank-line separated blocks as (1-based line number of their first line, lines)."""
    block: list[str] = []
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if line.strip():
            block.append(line)
        elif block:
            yield number - len(block), block
            block = []


def _read_subtitles(path: Path, text: str) -> Transcript:
    cues: list[tuple[str, float, float]] = []  # (description, start, end)
    words: list[str] = []
    times: list[np.ndarray] = []
    for line, block in _blocks(text):
        at = next((i for i in range(min(2, len(block))) if "-->" in block[i]), None)  # an id line may come first
        if at is None:
            if _VTT_BLOCK.match(block[0]):  # WebVTT header, NOTE, STYLE and REGION blocks carry no words
                continue
            raise TranscriptError(
                path, f"line {line}: expected a cue timing line like '00:00:01,000 --> 00:00:02,500', got {block[0]!r}"
            )
        match = _CUE_TIMING.match(block[at])
        if match is None:
            raise TranscriptError(
                path, f"line {line + at}: cannot read the cue times in {block[at]!r} (use HH:MM:SS,mmm or MM:SS.mmm)"
            )
        start, end = _seconds(*match.groups()[:4]), _seconds(*match.groups()[4:])
        cue = f"cue {len(cues) + 1} (line {line + at}, {_clock(start)} --> {_clock(end)})"
        if end <= start:
            raise TranscriptError(path, f"{cue} ends at or before its start")
        if cues and start < cues[-1][2]:
            problem = "starts before" if start < cues[-1][1] else "overlaps"
            raise TranscriptError(
                path,
                f"{cue} {problem} {cues[-1][0]}; cues must be in time order and not overlap (merge overlapping "
                "speakers into one cue)",
            )
        cues.append((cue, start, end))
        cue_words = split_words(html.unescape(_TAG.sub("", " ".join(block[at + 1 :]))))
        words.extend(cue_words)
        times.append(_spread(cue_words, start, end))
    if not words:
        raise TranscriptError(path, "empty: no subtitle cue has any text")
    return Transcript(tuple(words), np.concatenate(times), source=path.suffix.lower()[1:], timing="subtitles")


_READERS = {".txt": _read_txt, ".json": _read_json, ".srt": _read_subtitles, ".vtt": _read_subtitles}


def read_transcript(path: str | Path) -> Transcript:
    """The transcript in a .txt (untimed), .srt / .vtt (cue times) or .json (word times) file, UTF-8 encoded."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise TranscriptError(path, f"unsupported transcript format {path.suffix!r}; use .txt, .srt, .vtt or .json")
    transcript = reader(path, _read_text(path))
    if not transcript.words:
        raise TranscriptError(path, "empty: no words")
    return transcript


def find_transcript(media_path: str | Path) -> Path | None:
    """The sidecar transcript next to a media file (same stem), timed formats first: .json, .srt, .vtt, .txt."""
    media = Path(media_path)
    for suffix in SIDECAR_SUFFIXES:
        for candidate in (media.with_suffix(suffix), media.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


# --- word timing ------------------------------------------------------------------------------------------------


def voiced_region(samples: np.ndarray, sample_rate: int) -> tuple[float, float] | None:
    """(first, last) voiced instant in seconds of mono ``samples`` (N,), by 25 ms frame energy; None for silence.

    A frame is voiced when its level exceeds the lower of the noise floor (10th percentile) + 12 dB and the loudest
    frame - 20 dB: quiet onsets count in clean recordings, and speech without pauses is not taken for noise.
    """
    frame, hop = round(0.025 * sample_rate), round(0.010 * sample_rate)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size < frame:
        return None
    energy = np.concatenate([[0.0], np.cumsum(np.square(samples, dtype=np.float64))])  # O(N) memory, any length
    starts = np.arange(0, samples.size - frame + 1, hop)
    level = 10 * np.log10(np.maximum((energy[starts + frame] - energy[starts]) / frame, 1e-20))
    peak, floor = level.max(), np.percentile(level, 10)
    if peak < _SILENCE_DB:
        return None
    voiced = np.flatnonzero(level > min(floor + 12, peak - 20))
    return voiced[0] * hop / sample_rate, (voiced[-1] * hop + frame) / sample_rate


def _speech(samples: np.ndarray | None, sample_rate: int, duration: float) -> tuple[float, float]:
    """The voiced region inside [0, duration], or the whole clip when there is no audio or no voice."""
    region = voiced_region(samples, sample_rate) if samples is not None else None
    return (min(region[0], duration), min(region[1], duration)) if region else (0.0, duration)


def _normalise(word: str) -> str:
    return "".join(c for c in word.casefold() if not unicodedata.category(c).startswith("P"))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where ``mask`` is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _interpolate(
    words: Sequence[str], times: np.ndarray, measured: np.ndarray, lo: float, hi: float
) -> tuple[np.ndarray, int]:
    """``times`` (W, 2) with its NaN rows filled: each run of untimed words is spread by length between its
    neighbours (or ``lo`` / ``hi`` at the edges). Returns the times and how many words are not ``measured``."""
    times, measured, W = times.copy(), measured.copy(), len(words)
    for i, k in _runs(np.isnan(times[:, 0])):  # words [i, k)
        left = times[i - 1, 1] if i > 0 else min(lo, times[k, 0] if k < W else lo)
        right = times[k, 0] if k < W else max(hi, left)
        if right - left >= _MIN_WORD * (k - i):
            times[i:k] = _spread(words[i:k], left, right)
            continue
        # ASR words usually touch, leaving no gap: the untimed words share their neighbours' time
        i0, k0 = max(i - 1, 0), min(k + 1, W)
        left, right = (times[i0, 0] if i > 0 else left), (times[k0 - 1, 1] if k < W else right)
        times[i0:k0], measured[i0:k0] = _spread(words[i0:k0], left, right), False
    return times, int((~measured).sum())


def _align(words: Sequence[str], asr: Transcript, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """(W, 2) times for ``words`` from the ASR words they match, and how many words were interpolated instead."""
    W = len(words)
    times, measured = np.full((W, 2), np.nan), np.zeros(W, bool)
    matcher = SequenceMatcher(None, [_normalise(w) for w in words], [_normalise(w) for w in asr.words], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            times[i1:i2], measured[i1:i2] = asr.times[j1:j2], True
        elif tag == "replace":  # misheard words: the transcript's words share the time of the ASR's
            times[i1:i2] = _spread(words[i1:i2], asr.times[j1, 0], asr.times[j2 - 1, 1])
    collapsed = times[:, 1] <= times[:, 0]  # see _collapsed_asr_words
    times[collapsed], measured[collapsed] = np.nan, False
    return _interpolate(words, times, measured, lo, hi)


def _collapsed_asr_words(words: Sequence[str], times: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """Whisper gives words it cannot place no duration, often a run of them at one instant (seen on 28 s of speech:
    11 words at 21.78 s); they are interpolated between their neighbours instead."""
    collapsed = times[:, 1] <= times[:, 0]
    if not collapsed.any():
        return times, 0
    return _interpolate(words, np.where(collapsed[:, None], np.nan, times), ~collapsed, lo, hi)


def _ordered(times: np.ndarray, duration: float) -> tuple[np.ndarray, int]:
    """``times`` clipped to [0, duration], starts at least _GAP apart, each end between its start and the next
    start; also the number of words whose times changed."""
    W = len(times)
    if W * _GAP > duration:
        raise TranscriptError(None, f"{W} words cannot be placed in a clip of {duration:.3f} s")
    start = np.clip(times[:, 0], 0.0, duration)
    tolerance = 1e-9  # leaves starts that are already far enough apart bit-identical despite rounding
    for i in range(1, W):
        if start[i] < start[i - 1] + _GAP - tolerance:
            start[i] = start[i - 1] + _GAP
    for i in range(W - 1, -1, -1):  # pushing starts forward may have run past the end: pull them back
        limit = (start[i + 1] if i + 1 < W else duration) - _GAP
        if start[i] > limit + tolerance:
            start[i] = limit
    end = np.minimum(np.maximum(times[:, 1], start), np.append(start[1:], duration))
    out = np.stack([start, end], 1)
    return out, int((out != times).any(axis=1).sum())


def time_words(
    transcript: Transcript,
    samples: np.ndarray | None,
    sample_rate: int,
    duration: float,
    asr_words: list[AsrWord] | None = None,
) -> Transcript:
    """A timed copy of ``transcript`` for a clip of ``duration`` seconds with mono audio ``samples`` (N,) (None
    when the clip has no audio).

    Timed transcripts keep their times (any ``asr_words`` are ignored): a word starting after the clip end raises
    TranscriptError, ends past it are clipped; ASR words without duration are interpolated. Untimed ones take the
    times of matching ``asr_words`` ("aligned"; words the ASR missed or misheard are spread by length between their
    neighbours) or, without ASR words, are spread over the voiced region by character length ("estimated"; the
    whole clip when no voice is found). The result has ordered, non-overlapping intervals inside [0, duration] with
    strictly increasing starts; ``adjusted`` counts the words this had to move.
    """
    if duration <= 0:
        raise TranscriptError(None, f"the clip lasts {duration} s (a still image?), so its words cannot be timed")
    timing, interpolated = transcript.timing, transcript.interpolated
    if transcript.times is not None:
        times = transcript.times
        if late := np.flatnonzero(times[:, 0] > duration + _END_SLACK).tolist():
            raise TranscriptError(
                None,
                f"word {late[0]} {transcript.words[late[0]]!r} of the {transcript.source} transcript starts at "
                f"{times[late[0], 0]:.3f} s, after the clip ends ({duration:.3f} s): is it the transcript of "
                "another clip, or offset?",
            )
        if timing == "asr":
            times, collapsed = _collapsed_asr_words(transcript.words, times, *_speech(samples, sample_rate, duration))
            interpolated += collapsed
    else:
        asr = None
        if asr_words:
            asr = transcript_from_timed_words(((w.word, w.start, w.end) for w in asr_words), "asr", "asr")
        lo, hi = _speech(samples, sample_rate, duration)
        if asr is not None and len(asr):
            times, interpolated = _align(transcript.words, asr, lo, hi)
            timing = "aligned" if interpolated < len(transcript) else "estimated"
        else:
            times, timing = _spread(transcript.words, lo, hi), "estimated"
    times, adjusted = _ordered(times, duration)
    return dataclasses.replace(transcript, times=times, timing=timing, adjusted=adjusted, interpolated=interpolated)
