"""Reading transcripts: UTF-8 .txt, .srt, .vtt and .json word lists, and finding a media file's sidecar.

Bad files raise ``TranscriptError`` naming the file and the problem; encodings are never guessed.
"""

from __future__ import annotations

import codecs
import html
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cmamba.errors import TranscriptError
from cmamba.extractors.transcripts.types import (
    Transcript,
    split_words,
    spread,
    transcript_from_text,
    transcript_from_timed_words,
)

SIDECAR_SUFFIXES = (".json", ".srt", ".vtt", ".txt")  # timed formats first


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
        times.append(spread(cue_words, start, end))
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
            try:
                if candidate.is_file():
                    return candidate
            except OSError:  # e.g. a 255-byte media name whose .json sibling would be too long: no such sidecar
                continue
    return None
