"""The transcript type: words in ``split_words`` units (whitespace words, every CJK character a word) and, once
timed, their (W, 2) start/end seconds. ``timing`` says where the times come from:

- "given": word-level times from a JSON file;
- "subtitles": cue times, the words spread inside each cue in proportion to their character length;
- "asr": words and times recognised by the offline ASR (``transcripts.asr``);
- "aligned": an untimed transcript whose words took the times of the matching ASR words (the rest interpolated);
- "estimated": an untimed transcript spread over the voiced part of the clip;
- "none": not timed yet.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

TIMINGS = ("given", "subtitles", "asr", "aligned", "estimated", "none")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def split_words(text: str) -> list[str]:
    """Whitespace words, with every CJK character a word of its own."""
    words = []
    for chunk in text.split():
        words.extend(piece for piece in re.split(f"({CJK.pattern})", chunk) if piece)
    return words


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
            if prev is not None and not (CJK.fullmatch(prev) and CJK.fullmatch(word)):
                pieces.append(" ")
            pieces.append(word)
        return "".join(pieces)


def spread(words: Sequence[str], start: float, end: float) -> np.ndarray:
    """(n, 2) intervals tiling [start, end], each word's share proportional to its character count."""
    if not words:
        return np.zeros((0, 2))
    edges = np.concatenate([[0], np.cumsum([len(w) for w in words])])
    edges = start + (end - start) * edges / edges[-1]
    edges[-1] = end  # exactly, despite rounding: the next cue or word may start there
    return np.stack([edges[:-1], edges[1:]], 1)


def slice_transcript(transcript: Transcript, start: float, end: float) -> Transcript:
    """The words of a timed transcript that start in [start, end), their times measured from ``start`` and
    clipped to the range (a word running past ``end`` is cut there)."""
    times = np.asarray(transcript.times)
    keep = (times[:, 0] >= start) & (times[:, 0] < end)
    kept = np.clip(times[keep] - start, 0.0, end - start)
    words = tuple(w for w, k in zip(transcript.words, keep, strict=True) if k)
    return Transcript(words, kept, transcript.source, transcript.timing, 0, 0)


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
        times.append(spread(pieces, start, end))
    return Transcript(tuple(words), np.concatenate(times) if times else np.zeros((0, 2)), source, timing)
