"""openSMILE eGeMAPSv02 LLDs on real speech: names and rows against openSMILE's own output, frame timing, short
clips, statelessness, and the error a missing [opensmile] extra gives."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from cmamba.extractors import base
from cmamba.extractors.base import InputSpec, Samples, extractor_for, get_extractor, validate_sequence
from cmamba.extractors.decode import read_audio
from cmamba.extractors.opensmile import EGEMAPS_LLD_NAMES, MODEL_KEY, OpenSmileConfig, OpenSmileEgemaps

try:
    import opensmile
except ImportError:  # the [opensmile] extra is optional; the tests of its absence still run
    opensmile = None

needs_opensmile = pytest.mark.skipif(opensmile is None, reason="needs the [opensmile] extra")

SPEECH = Path(__file__).parents[1] / "fixtures" / "media" / "arctic_a0007.wav"
F0 = "F0semitoneFrom27.5Hz_sma3nz"
VOICE_QUALITY = ("jitterLocal_sma3nz", "shimmerLocaldB_sma3nz", "HNRdBACF_sma3nz", "logRelF0-H1-H2_sma3nz",
                 "logRelF0-H1-A3_sma3nz")  # fmt: skip


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_audio(SPEECH, 16000)


@pytest.fixture(scope="module")
def speech_seq(speech):
    return OpenSmileEgemaps().extract(Samples(speech, 16000))


def column(seq, name: str) -> np.ndarray:
    return seq.values[:, list(seq.names).index(name)]


@needs_opensmile
def test_real_speech(speech, speech_seq):
    duration = len(speech) / 16000
    assert duration == 4.0
    seq = validate_sequence(speech_seq, "opensmile-egemaps", 25, duration, 100.0)
    assert seq.values.shape == (401, 25) and seq.values.dtype == np.float32  # 1 + 64000 // 160
    assert seq.info["non_finite_replaced"] == 0 and np.isfinite(speech_seq.values).all()
    np.testing.assert_allclose(seq.timestamps, np.arange(401) * 0.01, atol=1e-12)
    assert seq.timestamps[-1] == duration and seq.mask.all()
    assert np.all(seq.values.std(0) > 0), [n for n, s in zip(seq.names, seq.values.std(0), strict=True) if s == 0]

    # The clip is silent before 0.4 s and after 3.5 s (-42 dB RMS against -12..-28 dB while speaking).
    t = seq.timestamps
    silent = (t < 0.35) | (t > 3.55)
    loudness, f0 = column(seq, "Loudness_sma3"), column(seq, F0)
    voiced = f0 > 0
    assert loudness[silent].max() < 0.15 < 0.5 < np.median(loudness[voiced])
    assert np.all(f0[silent] == 0)
    assert 0.3 < voiced.mean() < 0.6  # a read sentence: voiced stretches between pauses and consonants
    assert 70 < 27.5 * 2 ** (np.median(f0[voiced]) / 12) < 250  # a plausible pitch (ARCTIC "bdl" is male), in Hz
    # Unvoiced frames carry openSMILE's markers: zeros for the voice-quality descriptors, while the formant
    # frequencies are estimated in every frame.
    for name in VOICE_QUALITY:
        assert np.all(column(seq, name)[~voiced] == 0), name
    assert np.all(column(seq, "F1frequency_sma3nz") > 0)
    assert np.all(column(seq, "F1amplitudeLogRelF0_sma3nz")[silent] == -201)


@needs_opensmile
def test_names_and_rows_equal_opensmiles_own_output(speech, speech_seq):
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    frame = smile.process_signal(speech, 16000)
    assert tuple(frame.columns) == EGEMAPS_LLD_NAMES == OpenSmileEgemaps().feature_names
    starts = frame.index.get_level_values("start").total_seconds().to_numpy()
    ends = frame.index.get_level_values("end").total_seconds().to_numpy()
    np.testing.assert_allclose(np.diff(starts), 0.01, atol=1e-9)  # the real hop: 100 rows per second
    np.testing.assert_allclose((ends - starts)[:-1], 0.02, atol=1e-9)  # 20 ms windows (the last end is clipped)
    # Unpadded, openSMILE gives 396 rows for 4 s: too few for validation (400 ± 1).
    assert len(frame) == 396
    # openSMILE's row k (window [k, k + 2] · 10 ms, centre k · 10 ms + 10 ms) is our row k + 1, stamped at that
    # centre; the padding changes only the rows at the clip's edges.
    ours = speech_seq.values[1 : 1 + len(frame)]
    inner = slice(2, -3)
    np.testing.assert_array_equal(ours[inner], frame.to_numpy()[inner])
    np.testing.assert_allclose(speech_seq.timestamps[1 : 1 + len(frame)][inner], (starts + 0.01)[inner], atol=1e-9)


@needs_opensmile
@pytest.mark.parametrize("rate", [16000, 48000])
@pytest.mark.parametrize("seconds", [1 / 16000, 0.0099, 0.01, 0.05, 0.0501, 0.0599, 0.06, 0.3, 0.3007, 1.2345])
def test_short_and_odd_clips(speech, rate, seconds):
    y = speech[16000 : 16000 + max(1, round(seconds * 16000))]  # speech from 1 s on
    if rate != 16000:
        y = np.repeat(y, rate // 16000)  # a crude upsampling is enough for timing checks
    n = max(1, round(seconds * rate))
    y = y[:n]
    extractor = OpenSmileEgemaps(OpenSmileConfig(sample_rate=rate))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # openSMILE warns "Segment too short, filling with NaN" when it gives up
        seq = extractor.extract(Samples(y, rate))
    seq = validate_sequence(seq, extractor.name, 25, len(y) / rate, extractor.frame_rate())
    assert seq.length == 1 + len(y) // (rate // 100)
    assert seq.info["non_finite_replaced"] == 0


@needs_opensmile
def test_no_state_carried_between_clips(speech):
    extractor = OpenSmileEgemaps()
    first = extractor.extract(Samples(speech, 16000)).values
    other = extractor.extract(Samples(speech[::-1].copy() * 0.5, 16000)).values  # reversed speech, quieter
    again = extractor.extract(Samples(speech, 16000)).values
    assert not np.array_equal(first[:100], other[:100])
    np.testing.assert_array_equal(first, again)


@needs_opensmile
def test_full_scale_samples_do_not_wrap():
    # openSMILE casts samples × 32768 to int16 unclipped: a ±1.0 square wave becomes a constant -32768 (no pitch).
    t = np.arange(16000) / 16000
    square = np.where(np.sin(2 * np.pi * 200 * t) >= 0, 1.0, -1.0).astype(np.float32)
    seq = OpenSmileEgemaps().extract(Samples(square, 16000))
    f0 = column(seq, F0)
    assert (f0 > 0).mean() > 0.9
    assert 195 < 27.5 * 2 ** (np.median(f0[f0 > 0]) / 12) < 205


@needs_opensmile
def test_bad_input():
    extractor = OpenSmileEgemaps()
    with pytest.raises(ValueError, match=r"got audio at 44100 Hz but the config says 16000 Hz; decode with read_audio"):
        extractor.extract(Samples(np.zeros(1000, np.float32), 44100))
    with pytest.raises(ValueError, match="expected non-empty mono samples"):
        extractor.extract(Samples(np.zeros(0, np.float32), 16000))
    with pytest.raises(ValueError, match="expected non-empty mono samples"):
        extractor.extract(Samples(np.zeros((2, 1000), np.float32), 16000))
    with pytest.raises(ValueError, match="2 samples are NaN or infinite"):
        extractor.extract(Samples(np.array([0.0, np.nan, np.inf, 0.1], np.float32), 16000))
    for rate in (8000, 22050, 16000.0, True):
        with pytest.raises(ValueError, match="multiple of 100 Hz"):
            OpenSmileConfig(sample_rate=rate)


def test_missing_opensmile_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opensmile", None)  # `import opensmile` now raises ImportError
    monkeypatch.delitem(base._MODELS, MODEL_KEY, raising=False)  # forget this process's loaded Smile
    extractor = OpenSmileEgemaps()
    assert extractor.feature_dim == 25  # names and dims need no openSMILE
    for call in (lambda: extractor.extract(Samples(np.zeros(1600, np.float32), 16000)), extractor.model_files):
        with pytest.raises(ImportError, match=r"pip install 'cmamba\[opensmile\]' \(openSMILE is free for research"):
            call()


def test_package_imports_without_opensmile():
    code = (
        "import sys; sys.modules['opensmile'] = None\n"
        "from cmamba.extractors import get_extractor\n"
        "print(get_extractor('opensmile-egemaps').feature_dim)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "25"


@needs_opensmile
def test_registry_and_model_files():
    extractor = get_extractor("opensmile-egemaps")
    assert isinstance(extractor, OpenSmileEgemaps) and extractor.modality == "audio"
    assert extractor.describe() == {
        "name": "opensmile-egemaps",
        "version": "1",
        "config": {"sample_rate": 16000},
        "feature_dim": 25,
    }
    assert isinstance(extractor_for(OpenSmileConfig()), OpenSmileEgemaps)
    high = extractor_for(OpenSmileConfig(sample_rate=48000))
    assert high.input_spec() == InputSpec("samples", rate=48000) and high.frame_rate() == 100.0
    files = extractor.model_files()
    assert all(path.is_file() for path in files.values()), files
    assert files["opensmile_egemaps_config"].name == "eGeMAPSv02.conf"
