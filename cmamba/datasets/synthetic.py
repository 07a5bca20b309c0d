"""Synthetic benchmark data.

``cue_flip``: a task that needs cross-modal temporal interaction. The "text" stream carries one sentiment event
(a fixed pattern times a signed amplitude a·s, a in [0.5, 3]). Half of the clips also carry a "flip" cue in the
"audio" stream. The label is a·s, negated when the cue comes *before* the sentiment event (a cue after it
changes nothing). "vision" carries a distractor event. No single modality determines the label, and neither
does the set of events without their order across modalities. Streams have different lengths (50 / 100 / 75
steps), as unaligned benchmark features do.

``mosei_shaped``: random features with CMU-MOSEI's dims (text 768, audio 74, vision 35) and unaligned lengths
(50, 500, 375), for speed tests.

``synthetic_cache``: a feature cache on disk (shards + manifest, as ``cmamba extract`` writes) of random timed
features, words and labels, with lengths that vary per clip and some modalities absent, for reader tests and
benchmarks at sizes no media folder reaches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cmamba.constants import SPLITS
from cmamba.datasets.memory import FeatureDataset
from cmamba.extractors.base import FeatureSequence
from cmamba.pipeline.cache.schema import modality_columns
from cmamba.pipeline.cache.store import shard_file, write_manifest, write_shard

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


CACHE_SHAPES = {"text": (50, 384), "audio": (400, 47), "video": (40, 58)}  # (rows of a 4 s clip, dim)


def synthetic_cache(
    out: str | Path,
    clips: int,
    shapes: Mapping[str, tuple[int, int]] = CACHE_SHAPES,
    seed: int = 0,
    vary: bool = True,
    clips_per_shard: int = 1000,
) -> Path:
    """Write a cache of ``clips`` clips of about 4 s (splits train / valid / test in turn) to ``out``.

    shapes: per modality (rows of a 4 s clip, dim). With ``vary`` the clips last 2-6 s (rows in proportion) and
    every 7th clip lacks its video, so readers meet uneven lengths and absent modalities.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    dims = {m: F for m, (_, F) in shapes.items()}
    rows, shards, splits = [], [], Counter()
    for i in range(clips):
        duration = float(rng.uniform(2.0, 6.0)) if vary else 4.0
        row = {"clip_id": f"c{i:05d}", "video_id": f"v{i // 10:04d}", "split": SPLITS[i % 3],
               "label": float(rng.uniform(-3, 3)), "duration": duration, "start": 0.0, "end": duration}  # fmt: skip
        words = max(1, round(shapes["text"][0] * duration / 4.0)) if "text" in shapes else 0
        for m, (T, F) in shapes.items():
            if vary and m == "video" and i % 7 == 3:
                row.update(modality_columns(m, None, "no face found (synthetic)"))
                continue
            count = words if m == "text" else max(1, round(T * duration / 4.0))
            values = rng.standard_normal((count, F)).astype(np.float32)
            seq = FeatureSequence(values, np.arange(count) * duration / count, np.ones(count, bool), ())
            row.update(modality_columns(m, seq, None))
        step = duration / max(words, 1)
        row["word_start"], row["word_end"] = np.arange(words) * step, np.arange(words) * step + 0.9 * step
        rows.append(row)
        splits[row["split"]] += 1
        if len(rows) == clips_per_shard or i == clips - 1:  # one shard in memory at a time
            shards.append(shard_file(out, len(shards)))
            write_shard(rows, dims, shards[-1])
            rows = []
    names = {m: [f"{m}_{j}" for j in range(F)] for m, (_, F) in shapes.items()}
    write_manifest(out, shards, dims, names, [], splits, {"time_unit": "seconds"})
    return Path(out)
