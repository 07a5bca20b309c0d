"""Synthetic benchmark data.

``cue_flip``: a task that needs cross-modal temporal interaction. The "text" stream carries one sentiment event
(a fixed pattern times a signed amplitude a·s, a in [0.5, 3]). Half of the clips also carry a "flip" cue in the
"audio" stream. The label is a·s, negated when the cue comes *before* the sentiment event (a cue after it
changes nothing). "vision" carries a distractor event. No single modality determines the label, and neither
does the set of events without their order across modalities. Streams have different lengths (50 / 100 / 75
steps), as unaligned benchmark features do.

``mosei_shaped``: random features with CMU-MOSEI's dims (text 768, audio 74, vision 35) and unaligned lengths
(50, 500, 375), for speed tests.
"""

from __future__ import annotations

import numpy as np

from cmamba.datasets.memory import FeatureDataset

CUE_FLIP_DIMS = {"text": 16, "audio": 8, "vision": 8}
CUE_FLIP_LENGTHS = {"text": 50, "audio": 100, "vision": 75}
MOSEI_DIMS = {"text": 768, "audio": 74, "vision": 35}
MOSEI_LENGTHS = {"text": 50, "audio": 500, "vision": 375}


def _add_event(x: np.ndarray, at: float, pattern: np.ndarray, width: int) -> None:
    start = int(at * (len(x) - width))
    x[start : start + width] += pattern


def cue_flip(n: int, seed: int = 0, noise: float = 0.3) -> FeatureDataset:
    """``n`` clips of the cue-flip task (see the module docstring)."""
    patterns = np.random.default_rng(12345)  # the event patterns are fixed across splits and seeds
    text_pattern = patterns.standard_normal(CUE_FLIP_DIMS["text"])
    cue_pattern = patterns.standard_normal(CUE_FLIP_DIMS["audio"]) * 1.5
    distractor = patterns.standard_normal(CUE_FLIP_DIMS["vision"]) * 1.5
    rng = np.random.default_rng(seed)
    features = {name: [] for name in CUE_FLIP_DIMS}
    labels = []
    for _ in range(n):
        x = {m: noise * rng.standard_normal((CUE_FLIP_LENGTHS[m], d)) for m, d in CUE_FLIP_DIMS.items()}
        amplitude = rng.uniform(0.5, 3.0) * rng.choice([-1.0, 1.0])
        t_event = rng.uniform(0.05, 0.95)
        _add_event(x["text"], t_event, text_pattern * np.sign(amplitude) * (0.5 + abs(amplitude) / 3), 2)
        label = amplitude
        if rng.random() < 0.5:
            t_cue = rng.uniform(0.05, 0.95)
            _add_event(x["audio"], t_cue, cue_pattern, 4)
            if t_cue < t_event:
                label = -amplitude
        _add_event(x["vision"], rng.uniform(0.05, 0.95), distractor, 3)
        for m in features:
            features[m].append(x[m].astype(np.float32))
        labels.append(label)
    return FeatureDataset(features, labels)


def mosei_shaped(n: int, seed: int = 0) -> FeatureDataset:
    """``n`` random clips with CMU-MOSEI's feature dims and unaligned lengths; labels uniform in [-3, 3]."""
    rng = np.random.default_rng(seed)
    features = {
        m: [rng.standard_normal((MOSEI_LENGTHS[m], d), dtype=np.float32) for _ in range(n)]
        for m, d in MOSEI_DIMS.items()
    }
    return FeatureDataset(features, rng.uniform(-3, 3, n))
