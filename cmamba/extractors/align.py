"""Alignment: put the modalities of one clip on a common time axis, from their timestamps alone.

Modes (the same extracted sequences yield each):
- ``native``: every modality at its own rate (video frames, audio hops, words) — what unaligned models take.
- ``word``: CMU-style — one row per transcript word, the average of each modality over the word's interval.
- ``clock``: one row per cell of a fixed grid (default 10 Hz) covering the clip.

Every source row stands for an interval of time: a word for [start, end] (``info["word_end"]``), a sampled
frame for [t_i, t_{i+1}) (the last one for the median step). A target row is the overlap-weighted mean of the
*observed* source rows (mask True) it covers, so a short word still takes the frame it falls in, and unobserved
frames (no face) never dilute the average. A target with nothing observed is zero with mask False — the mask,
not the zeros, says "no observation"; ``info["empty_rows"]`` counts them.
"""

from __future__ import annotations

import numpy as np

from cmamba.constants import ALIGN_MODES
from cmamba.extractors.base import FeatureSequence


def source_intervals(seq: FeatureSequence) -> np.ndarray:
    """(T, 2) start/end seconds of each row of ``seq``."""
    starts = np.asarray(seq.timestamps, dtype=np.float64)
    if "word_end" in seq.info:
        return np.stack([starts, np.asarray(seq.info["word_end"], dtype=np.float64)], 1)
    if len(starts) == 0:
        return np.zeros((0, 2))
    if len(starts) == 1:  # a single sample (a still image) stands for the whole clip
        return np.array([[starts[0], np.inf]])
    step = float(np.median(np.diff(starts)))
    return np.stack([starts, np.append(starts[1:], starts[-1] + step)], 1)


def _running_integral(intervals: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """∫_{-inf}^{at} of the piecewise-constant signal that is ``values[i]`` on ``intervals[i]`` (0 elsewhere).

    intervals (T, 2) sorted and non-overlapping; values (T, F); at (K,) → (K, F). O((T + K) F).
    """
    start, length = intervals[:, 0], np.maximum(intervals[:, 1] - intervals[:, 0], 0.0)
    length = np.where(np.isfinite(length), length, 0.0)  # an open-ended last row only counts partially (below)
    before = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values * length[:, None], 0)])
    row = np.searchsorted(start, at, side="right") - 1  # last interval starting at or before `at`
    safe = np.maximum(row, 0)
    full = np.where(np.isfinite(intervals[safe, 1]), length[safe], np.inf)
    inside = np.where(row >= 0, np.clip(at - start[safe], 0.0, full), 0.0)
    return before[safe] + values[safe] * inside[:, None]  # the rows wholly before `row`, plus part of `row`


def average_over(seq: FeatureSequence, targets: np.ndarray) -> FeatureSequence:
    """``seq`` averaged over each target interval; targets (K, 2) sorted start/end seconds."""
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    sources = source_intervals(seq)
    observed = np.asarray(seq.mask, dtype=bool)
    weighted = np.asarray(seq.values, dtype=np.float64) * observed[:, None]
    both = np.concatenate([weighted, observed[:, None].astype(np.float64)], 1)
    if len(sources):
        totals = _running_integral(sources, both, targets[:, 1]) - _running_integral(sources, both, targets[:, 0])
    else:
        totals = np.zeros((len(targets), both.shape[1]))
    weight = totals[:, -1]
    mask = weight > 1e-12
    values = np.where(mask[:, None], totals[:, :-1] / np.where(mask, weight, 1.0)[:, None], 0.0)
    info = {k: v for k, v in seq.info.items() if k != "word_end"}
    info["empty_rows"] = int((~mask).sum())
    return FeatureSequence(values.astype(np.float32), targets[:, 0].copy(), mask, seq.names, info)


def clock_grid(duration: float, rate: float) -> np.ndarray:
    """(K, 2) cells [k/rate, (k+1)/rate) covering [0, duration]; the last cell ends at the clip's end (a still
    image, duration 0, gets one cell)."""
    if rate <= 0:
        raise ValueError(f"clock rate must be positive, got {rate}")
    count = max(1, int(np.ceil(duration * rate - 1e-9)))
    starts = np.arange(count) / rate
    ends = starts + 1.0 / rate
    if duration > 0:
        ends = np.minimum(ends, duration)
    return np.stack([starts, ends], 1)


def align(
    sequences: dict[str, FeatureSequence],
    mode: str,
    duration: float,
    word_times: np.ndarray | None = None,
    rate: float = 10.0,
) -> dict[str, FeatureSequence]:
    """Align one clip's modalities. ``word_times`` (W, 2) is required for ``word`` mode; ``duration`` (seconds)
    bounds the ``clock`` grid. Returns new sequences; the inputs are not modified."""
    if mode not in ALIGN_MODES:
        raise ValueError(f"alignment mode {mode!r} is not one of {ALIGN_MODES}")
    if mode == "native":
        return dict(sequences)
    if mode == "word":
        if word_times is None or len(word_times) == 0:
            raise ValueError("word alignment needs word times; the clip has no timed transcript")
        targets = np.asarray(word_times, dtype=np.float64).reshape(-1, 2)
    else:
        targets = clock_grid(duration, rate)
    aligned = {}
    for name, seq in sequences.items():
        if mode == "word" and "word_end" in seq.info and len(seq.timestamps) == len(targets):
            aligned[name] = seq  # the text sequence is already one row per word
        else:
            aligned[name] = average_over(seq, targets)
    return aligned
