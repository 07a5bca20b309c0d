"""Alignment modes from timestamps: native, word (CMU-style) and clock, against brute-force overlap averages."""

from __future__ import annotations

import numpy as np
import pytest

from cmamba.extractors.align import align, average_over, clock_grid, source_intervals
from cmamba.extractors.base import FeatureSequence


def frames(values, rate: float, mask=None) -> FeatureSequence:
    values = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    mask = np.ones(len(values), bool) if mask is None else np.asarray(mask)
    names = tuple(f"f{i}" for i in range(values.shape[1]))
    return FeatureSequence(values, np.arange(len(values)) / rate, mask, names)


def words(times) -> FeatureSequence:
    times = np.asarray(times, dtype=np.float64)
    values = np.arange(len(times), dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    return FeatureSequence(
        values, times[:, 0], np.ones(len(times), bool), ("a", "b", "c", "d"), {"word_end": times[:, 1]}
    )


def brute_force(seq: FeatureSequence, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sources = source_intervals(seq)
    out, mask = np.zeros((len(targets), seq.values.shape[1])), np.zeros(len(targets), bool)
    for k, (a, b) in enumerate(targets):
        overlap = np.clip(np.minimum(sources[:, 1], b) - np.maximum(sources[:, 0], a), 0, None) * seq.mask
        if overlap.sum() > 1e-12:
            out[k], mask[k] = (overlap[:, None] * seq.values).sum(0) / overlap.sum(), True
    return out, mask


def test_clock_30fps_onto_10hz_is_the_mean_of_three_frames():
    seq = frames(np.arange(30.0), rate=30.0)  # 1 s of video at 30 fps
    out = align({"video": seq}, "clock", duration=1.0)["video"]
    assert out.length == 10
    np.testing.assert_allclose(out.timestamps, np.arange(10) / 10)
    np.testing.assert_allclose(out.values[:, 0], [np.mean([3 * k, 3 * k + 1, 3 * k + 2]) for k in range(10)], atol=1e-5)
    assert out.mask.all() and out.info["empty_rows"] == 0


def test_unobserved_frames_never_dilute_and_empty_cells_are_masked_not_hidden():
    mask = np.ones(30, bool)
    mask[3:6] = False  # cell 1 entirely without a face
    mask[6] = False  # cell 2 partly
    seq = frames(np.arange(30.0) + 100, rate=30.0, mask=mask)
    out = align({"video": seq}, "clock", duration=1.0)["video"]
    assert not out.mask[1] and out.values[1, 0] == 0.0 and out.info["empty_rows"] == 1
    assert out.mask[2] and out.values[2, 0] == pytest.approx(107.5, abs=1e-4)


def test_word_mode_averages_frames_inside_each_word_and_passes_text_through():
    audio = frames(np.arange(100.0), rate=100.0)  # 1 s at 10 ms hops
    times = np.array([[0.10, 0.30], [0.305, 0.308], [0.50, 0.90]])
    text = words(times)
    out = align({"audio": audio, "text": text}, "word", duration=1.0, word_times=times)
    assert out["text"] is text
    np.testing.assert_allclose(out["audio"].values[:, 0], [19.5, 30.0, 69.5], atol=1e-4)  # a short word takes its frame
    np.testing.assert_allclose(out["audio"].timestamps, [0.10, 0.305, 0.50])


@pytest.mark.parametrize("seed", range(5))
def test_overlap_average_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    seq = frames(
        rng.normal(size=(int(rng.integers(1, 60)), 3)), rate=float(rng.uniform(5, 40)), mask=rng.random(60) > 0.3
    )
    seq = FeatureSequence(seq.values, seq.timestamps, seq.mask[: seq.length], seq.names)
    edges = np.sort(rng.uniform(0, seq.timestamps[-1] + 0.5, size=12))
    targets = np.stack([edges[::2], edges[1::2]], 1)
    out = average_over(seq, targets)
    expected, expected_mask = brute_force(seq, targets)
    np.testing.assert_array_equal(out.mask, expected_mask)
    np.testing.assert_allclose(out.values, expected, atol=1e-4)


def test_text_onto_clock_grid_fills_cells_covered_by_words():
    text = words([[0.0, 0.25], [0.4, 0.6]])
    out = align({"text": text}, "clock", duration=1.0)["text"]
    np.testing.assert_array_equal(out.mask, [1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    assert "word_end" not in out.info


def test_clock_grid_covers_the_clip_and_native_is_untouched():
    grid = clock_grid(1.05, 10.0)
    assert len(grid) == 11 and grid[-1, 1] == pytest.approx(1.05) and grid[0, 0] == 0
    seq = frames(np.ones(5), rate=5.0)
    assert align({"a": seq}, "native", duration=1.0)["a"] is seq


def test_bad_alignment_requests_are_named():
    seq = frames(np.ones(5), rate=5.0)
    with pytest.raises(ValueError, match="not one of"):
        align({"a": seq}, "cmu", duration=1.0)
    with pytest.raises(ValueError, match="needs word times"):
        align({"a": seq}, "word", duration=1.0, word_times=None)
    with pytest.raises(ValueError, match="positive"):
        clock_grid(1.0, 0.0)


def test_a_still_image_covers_every_cell():
    still = frames(np.array([[2.0, 3.0]]), rate=1.0)
    out = align({"video": still}, "clock", duration=0.0)["video"]
    assert out.length == 1 and out.mask.all()
    np.testing.assert_allclose(out.values, [[2.0, 3.0]])
    out = align({"video": still}, "word", duration=0.0, word_times=np.array([[0.0, 0.2], [0.3, 0.5]]))["video"]
    assert out.mask.all() and np.allclose(out.values, [[2.0, 3.0], [2.0, 3.0]])
