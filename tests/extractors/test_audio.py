"""librosa audio features on real speech: dims, frame timing, and what the features say about the signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmamba.extractors.audio import AudioConfig, LibrosaAudio
from cmamba.extractors.base import Samples, get_extractor, validate_sequence
from cmamba.extractors.decode import read_audio

SPEECH = Path(__file__).parents[1] / "fixtures" / "media" / "arctic_a0007.wav"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return read_audio(SPEECH, 16000)


def test_prosody_features_on_real_speech(speech):
    extractor = get_extractor("librosa-audio")
    seq = extractor.extract(Samples(speech, 16000))
    duration = len(speech) / 16000
    seq = validate_sequence(seq, extractor.name, extractor.feature_dim, duration, extractor.frame_rate())
    assert extractor.feature_dim == 47 and seq.values.shape == (seq.length, 47)
    assert abs(seq.length - duration * 100) <= 1  # 10 ms hop
    np.testing.assert_allclose(np.diff(seq.timestamps), 0.01, atol=1e-12)
    names = list(seq.names)
    f0, voicing = seq.values[:, names.index("f0")], seq.values[:, names.index("voicing")]
    voiced = voicing >= 0.5
    assert 0.3 < voiced.mean() < 0.95  # a read sentence: mostly voiced, with pauses and consonants
    assert 70 < np.median(f0[voiced]) < 250  # a plausible speaking pitch (the ARCTIC "bdl" voice is male)
    assert np.all(f0[~voiced] == 0)
    energy = seq.values[:, names.index("log_energy")]
    assert energy[voiced].mean() > energy[~voiced].mean() + 6  # voiced frames are louder (dB)
    assert seq.info["non_finite_replaced"] == 0


def test_silence_is_unvoiced_and_quiet():
    extractor = LibrosaAudio()
    seq = extractor.extract(Samples(np.zeros(8000, np.float32), 16000))
    names = list(seq.names)
    assert np.all(seq.values[:, names.index("voicing")] < 0.5) and np.all(seq.values[:, names.index("f0")] == 0)


def test_sims33_preset(speech):
    extractor = LibrosaAudio(AudioConfig(preset="sims33"))
    samples = read_audio(SPEECH, extractor.config.rate)
    seq = extractor.extract(Samples(samples, extractor.config.rate))
    assert extractor.feature_dim == 33 and seq.values.shape[1] == 33
    assert seq.names[0] == "zcr" and seq.names[-1] == "chroma_11"
    validate_sequence(seq, extractor.name, 33, len(samples) / 22050, extractor.frame_rate())


def test_very_short_clip_gives_whole_frames():
    seq = LibrosaAudio().extract(Samples(np.random.default_rng(0).standard_normal(100).astype(np.float32), 16000))
    assert seq.length == 1 and np.isfinite(seq.values).all()


def test_bad_audio_input():
    with pytest.raises(ValueError, match=r"got audio at 44100 Hz but the prosody preset needs 16000 Hz"):
        LibrosaAudio().extract(Samples(np.zeros(100, np.float32), 44100))
    with pytest.raises(ValueError, match="expected non-empty mono samples"):
        LibrosaAudio().extract(Samples(np.zeros(0, np.float32), 16000))
    with pytest.raises(ValueError, match=r"preset='mfcc' is not one of \('prosody', 'sims33'\)"):
        AudioConfig(preset="mfcc")
