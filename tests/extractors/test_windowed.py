"""Bounded-memory extraction: every framewise audio extractor computes a long recording window by window, and the
rows equal the whole-clip rows (issue #11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmamba.extractors import base
from cmamba.extractors.audio import AudioConfig
from cmamba.extractors.base import Samples, framewise, get_extractor
from cmamba.extractors.decode import read_audio

SPEECH = Path(__file__).parents[1] / "fixtures" / "media" / "arctic_a0007.wav"


def test_framewise_equals_one_call_for_a_local_feature():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(10_007).astype(np.float32)

    def energy(x: np.ndarray) -> np.ndarray:  # row k: energy of the 8 samples around sample 4k (zero-padded)
        padded = np.pad(x, 4)
        return np.array([[np.sum(padded[4 * k : 4 * k + 8] ** 2)] for k in range(1 + len(x) // 4)])

    np.testing.assert_allclose(framewise(y, 4, 3, energy, window=50), energy(y), rtol=1e-6)
    assert len(framewise(y, 4, 3, energy, window=50)) == 1 + len(y) // 4


@pytest.mark.parametrize(
    "name, config, rate, atol",
    [
        ("librosa-audio", AudioConfig(), 16000, 1e-4),
        ("librosa-audio", AudioConfig(preset="sims33"), 22050, 2e-3),
        ("opensmile-egemaps", None, 16000, 1e-3),
    ],
)
def test_windowed_rows_equal_the_whole_clip_rows(name, config, rate, atol, monkeypatch):
    speech = read_audio(SPEECH, rate)
    y = np.tile(speech, 5)[: 19 * rate + 123]  # 19 s, not a multiple of the hop
    extractor = get_extractor(name, config)
    whole = extractor.extract(Samples(y, rate))  # one window: fits WINDOW_FRAMES
    monkeypatch.setattr(base, "WINDOW_FRAMES", 300)  # ~3 s windows
    windowed = extractor.extract(Samples(y, rate))
    assert windowed.values.shape == whole.values.shape and windowed.length > 19 * rate / 512
    np.testing.assert_array_equal(windowed.timestamps, whole.timestamps)
    scale = np.abs(whole.values).max(0) + 1e-6  # per feature: MFCCs and loudness live on different scales
    err = np.abs(windowed.values - whole.values) / scale
    print(name, "max relative error", err.max())
    assert err.max() < atol, err.max()
