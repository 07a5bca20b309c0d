"""The extractor contract, registry, shared models and write-time validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cmamba.extractors.audio import AudioConfig
from cmamba.extractors.base import (
    EXTRACTORS,
    Extractor,
    FeatureSequence,
    InputSpec,
    Samples,
    available_extractors,
    extractor_for,
    get_extractor,
    register_extractor,
    shared_model,
    validate_sequence,
)


@dataclass
class RampConfig:
    rate: float = 10.0
    width: int = 2


class Ramp(Extractor[Samples]):
    """A tiny audio extractor that only looks at the clip's duration: feature j at time t is j·t."""

    name = "test-ramp"
    version = "1"
    modality = "audio"
    input_type = Samples
    config_type = RampConfig

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"ramp_{j}" for j in range(self.config.width))

    def input_spec(self) -> InputSpec:
        return InputSpec("samples", rate=8000)

    def frame_rate(self) -> float:
        return self.config.rate

    def extract(self, data: Samples) -> FeatureSequence:
        duration = len(data.samples) / data.sample_rate
        t = np.arange(round(duration * self.config.rate)) / self.config.rate
        values = (t[:, None] * np.arange(self.config.width)[None]).astype(np.float32)
        return FeatureSequence(values, t, np.ones(len(t), bool), self.feature_names)


@pytest.fixture()
def ramp_registered():
    register_extractor(Ramp)
    yield
    EXTRACTORS.pop("test-ramp")


def test_registry_round_trip(ramp_registered):
    assert "test-ramp" in available_extractors()
    ramp = get_extractor("test-ramp", RampConfig(width=3))
    assert ramp.feature_dim == 3 and ramp.describe() == {
        "name": "test-ramp",
        "version": "1",
        "config": {"rate": 10.0, "width": 3},
        "feature_dim": 3,
    }
    seq = validate_sequence(ramp.extract(Samples(np.zeros(16000), 8000)), "test-ramp", 3, duration=2.0, rate=10.0)
    assert seq.length == 20 and seq.info["non_finite_replaced"] == 0
    assert "test-ramp" in available_extractors("audio") and "test-ramp" not in available_extractors("video")
    assert isinstance(extractor_for(RampConfig(width=3)), Ramp) and extractor_for(RampConfig(width=3)).feature_dim == 3


def test_registration_checks_the_contract(ramp_registered):
    class NoModality(Extractor):
        name, version, input_type, config_type = "x", "1", Samples, RampConfig

    class BadModality(Ramp):
        name, modality = "x", "smell"

    class BadInput(Ramp):
        name, input_type = "x", np.ndarray

    class SharedConfig(Ramp):
        name = "x"

    with pytest.raises(TypeError, match="must define the class attribute 'modality'"):
        register_extractor(NoModality)
    with pytest.raises(TypeError, match="modality 'smell' is not one of"):
        register_extractor(BadModality)
    with pytest.raises(TypeError, match="input_type must be Frames, Samples or Words"):
        register_extractor(BadInput)
    with pytest.raises(ValueError, match="the config type RampConfig already belongs to 'test-ramp'"):
        register_extractor(SharedConfig)
    with pytest.raises(TypeError, match="no registered extractor takes a dict"):
        extractor_for({"preset": "prosody"})
    assert extractor_for(AudioConfig()).name == "librosa-audio"


def test_registry_errors(ramp_registered):
    with pytest.raises(ValueError, match=r"unknown extractor 'nope'; available: \[.*'test-ramp'"):
        get_extractor("nope")
    with pytest.raises(TypeError, match="test-ramp takes a RampConfig, got dict"):
        get_extractor("test-ramp", {"rate": 5})

    class Clash(Ramp):
        pass

    with pytest.raises(ValueError, match="an extractor named 'test-ramp' is already registered"):
        register_extractor(Clash)


def test_shared_model_is_built_once():
    calls = []
    first = shared_model(("test", 1), lambda: calls.append(1) or object())
    assert shared_model(("test", 1), lambda: calls.append(1) or object()) is first
    assert calls == [1]


def sequence(T=5, F=2, **overrides) -> FeatureSequence:
    fields = dict(
        values=np.ones((T, F), np.float32),
        timestamps=np.arange(T) * 0.1,
        mask=np.ones(T, bool),
        names=tuple(f"f{i}" for i in range(F)),
    )
    fields.update(overrides)
    return FeatureSequence(**fields)


def test_non_finite_values_are_replaced_and_counted():
    values = np.ones((5, 2), np.float32)
    values[1, 0], values[3, 1], values[4, 1] = np.nan, np.inf, -np.inf
    seq = validate_sequence(sequence(values=values), "x", 2)
    assert seq.info["non_finite_replaced"] == 3
    assert np.isfinite(seq.values).all() and seq.values[1, 0] == 0.0 and seq.values[0, 0] == 1.0


@pytest.mark.parametrize(
    "overrides, kwargs, message",
    [
        ({"values": np.ones((5, 3), np.float32)}, {}, "declares 2 features but produced 3 values"),
        ({"timestamps": np.array([0.0, 0.1, 0.1, 0.3, 0.4])}, {}, "frame 2 at 0.1000 s follows 0.1000 s"),
        ({"timestamps": np.array([0.0, 0.2, 0.1, 0.3, 0.4])}, {}, "timestamps must increase strictly"),
        ({"mask": np.ones(4, bool)}, {}, r"5 frames but timestamps \(5,\) and mask \(4,\)"),
        ({}, {"duration": 0.3}, r"outside the clip's \[0, 0.3000\] s"),
        ({}, {"duration": 0.45, "rate": 20.0}, "5 frames for 0.4500 s at 20 Hz"),
    ],
)
def test_broken_invariants_are_named(overrides, kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate_sequence(sequence(**overrides), "face", 2, **kwargs)


def test_shared_model_factories_may_nest():
    """A factory that resolves another shared value (e.g. a model directory) must not deadlock."""
    outer = shared_model(("test", "outer"), lambda: ("built", shared_model(("test", "inner"), lambda: 7)))
    assert outer == ("built", 7)
