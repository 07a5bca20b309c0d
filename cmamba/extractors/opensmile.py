"""openSMILE's eGeMAPSv02 low-level descriptors: 25 per 10 ms frame, timestamped at the centres of the 20 ms windows.

The extended Geneva Minimalistic Acoustic Parameter Set (Eyben et al. 2016), as ``opensmile.Smile(eGeMAPSv02,
LowLevelDescriptors)`` computes it; every value is a 3-frame moving average (``_sma3``; ``_sma3nz`` averages only
the nonzero frames):

- from 20 ms Hamming windows: loudness, alpha ratio, Hammarberg index, spectral slopes 0-500 / 500-1500 Hz,
  spectral flux, MFCC 1-4, and the frequency and bandwidth of formants F1-F3;
- from 60 ms Gaussian windows (the F0 family): F0 (semitones above 27.5 Hz), local jitter, local shimmer (dB),
  harmonics-to-noise ratio, H1-H2, H1-A3 and the amplitudes of F1-F3 relative to F0.

Both windows of row k start at the same sample, so the F0 family's window centre lies 20 ms after the row's
timestamp (openSMILE's layout, kept so the rows equal openSMILE's own output). openSMILE marks unvoiced frames
with values, not NaN: F0, jitter, shimmer, HNR, H1-H2 and H1-A3 are 0, and the formant amplitudes relative to F0
drop to its floor of -201 (smoothed with voiced neighbours at the edges); formant frequencies and bandwidths are
estimated in every frame, voiced or not. Cost (measured): about 12 ms per second of audio on one core, and the
peak memory of a call grows linearly with the clip, about 0.6 MB per second of audio (35 MB a minute).

openSMILE is free for research and personal use only (commercial use needs a licence from audEERING), so it is
the optional extra ``cmamba[opensmile]``; this module imports it on first use and imports without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmamba.extractors.base import (
    Extractor,
    FeatureSequence,
    InputSpec,
    Samples,
    framewise,
    register_extractor,
    shared_model,
)

INSTALL_HINT = (
    "pip install 'cmamba[opensmile]' (openSMILE is free for research and personal use only; commercial use "
    "needs a licence from audEERING)"
)

# The 25 columns of openSMILE 2.6.0's eGeMAPSv02 LLD output, in its order (the tests compare them with a real run),
# so the feature names are known without loading openSMILE.
EGEMAPS_LLD_NAMES: tuple[str, ...] = (
    "Loudness_sma3",
    "alphaRatio_sma3",
    "hammarbergIndex_sma3",
    "slope0-500_sma3",
    "slope500-1500_sma3",
    "spectralFlux_sma3",
    "mfcc1_sma3",
    "mfcc2_sma3",
    "mfcc3_sma3",
    "mfcc4_sma3",
    "F0semitoneFrom27.5Hz_sma3nz",
    "jitterLocal_sma3nz",
    "shimmerLocaldB_sma3nz",
    "HNRdBACF_sma3nz",
    "logRelF0-H1-H2_sma3nz",
    "logRelF0-H1-A3_sma3nz",
    "F1frequency_sma3nz",
    "F1bandwidth_sma3nz",
    "F1amplitudeLogRelF0_sma3nz",
    "F2frequency_sma3nz",
    "F2bandwidth_sma3nz",
    "F2amplitudeLogRelF0_sma3nz",
    "F3frequency_sma3nz",
    "F3bandwidth_sma3nz",
    "F3amplitudeLogRelF0_sma3nz",
)

FRAME_RATE = 100.0  # eGeMAPSv02 steps its windows by 10 ms
SHORT_WINDOW_HOPS = 2  # the 20 ms windows, in hops
LONG_WINDOW_HOPS = 6  # the 60 ms windows of the F0 family, in hops
MODEL_KEY = ("opensmile", "eGeMAPSv02", "LowLevelDescriptors")  # one Smile serves every sample rate
CONTEXT_FRAMES = 32  # rows of real samples on each side of a bounded window (framewise)
INT16_MAX = 32767 / 32768  # openSMILE reads 16-bit PCM: it casts samples × 32768 to int16 without clipping


@dataclass(frozen=True)
class OpenSmileConfig:
    """``sample_rate``: the rate the pipeline decodes the audio at (openSMILE resamples nothing). eGeMAPS's bands
    reach 5 kHz (alpha ratio, flux) and its mel filters 8 kHz, so at least 16 kHz; a multiple of 100 Hz keeps the
    10 ms hop a whole number of samples (at 22050 Hz openSMILE would step 221 samples, 99.8 frames/s). The
    descriptors depend on the rate (loudness sums the bands up to Nyquist), so it is part of the cache key."""

    sample_rate: int = 16000

    def __post_init__(self):
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or not 16000 <= rate <= 96000 or rate % 100:
            raise ValueError(
                f"sample_rate={rate!r}: eGeMAPS needs an integer rate in [16000, 96000] Hz that is a multiple of "
                f"100 Hz (16000, 24000, 32000, 44100, 48000)"
            )


def _load_smile() -> Any:
    """A ``Smile`` for eGeMAPSv02's LLDs; ImportError naming the extra when openSMILE is not installed."""
    try:
        import opensmile  # imported on first use: an optional extra with a research-only licence
    except ImportError as exc:
        raise ImportError(f"opensmile-egemaps needs openSMILE: {INSTALL_HINT}") from exc
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )


@register_extractor
class OpenSmileEgemaps(Extractor[Samples]):
    name = "opensmile-egemaps"
    version = "1"
    modality = "audio"
    input_type = Samples
    config_type = OpenSmileConfig
    requires = ("opensmile",)
    install_hint = INSTALL_HINT

    @property
    def feature_names(self) -> tuple[str, ...]:
        return EGEMAPS_LLD_NAMES

    def input_spec(self) -> InputSpec:
        return InputSpec("samples", rate=self.config.sample_rate)

    def frame_rate(self) -> float:
        return FRAME_RATE

    def model_files(self) -> dict[str, Path]:
        """The openSMILE config files that define the LLDs (the pipeline's preflight records their sha256, and
        fails fast here when openSMILE is not installed)."""
        root = Path(_smile().config_path).parent  # .../opensmile/core/config/egemaps/v02
        return {
            "opensmile_egemaps_config": root / "eGeMAPSv02.conf",
            "opensmile_egemaps_lld": root / "eGeMAPSv02_core.lld.conf.inc",
            "opensmile_gemaps_lld": root.parents[1] / "gemaps" / "v01b" / "GeMAPSv01b_core.lld.conf.inc",
        }

    def extract(self, data: Samples) -> FeatureSequence:
        """data: mono float32 samples (S,) at the config's rate. Returns values (T, 25) float32 with
        T = 1 + S // hop (hop = 10 ms): row k is stamped k · 10 ms, the centre of its 20 ms window, so every
        timestamp lies in [0, S / rate]. The mask is all True: every row is an observation (unvoiced frames carry
        openSMILE's 0 / -201 markers, module doc). Non-finite outputs are left in for validation to count."""
        cfg = self.config
        if data.sample_rate != cfg.sample_rate:
            raise ValueError(
                f"{self.name}: got audio at {data.sample_rate} Hz but the config says {cfg.sample_rate} Hz; decode "
                f"with read_audio(path, {cfg.sample_rate}) or use OpenSmileConfig(sample_rate={data.sample_rate})"
            )
        y = np.asarray(data.samples, dtype=np.float32)
        if y.ndim != 1 or len(y) == 0:
            raise ValueError(f"{self.name}: expected non-empty mono samples, got shape {y.shape}")
        if not np.isfinite(y).all():  # openSMILE would cast NaN / inf to arbitrary 16-bit values
            raise ValueError(f"{self.name}: {int((~np.isfinite(y)).sum())} samples are NaN or infinite")
        hop = cfg.sample_rate // 100
        # bounded memory for any length: openSMILE's rows depend on at most 60 ms around them (+ 3-frame smoothing)
        values = framewise(np.clip(y, -1.0, INT16_MAX), hop, CONTEXT_FRAMES, self._rows)
        T = len(values)
        timestamps = np.arange(T) * hop / cfg.sample_rate
        return FeatureSequence(values, timestamps, np.ones(T, bool), EGEMAPS_LLD_NAMES)

    def _rows(self, y: np.ndarray) -> np.ndarray:
        """(1 + S // hop, 25) float32 rows of samples ``y`` (already clipped), row k at sample k · hop."""
        cfg = self.config
        hop = cfg.sample_rate // 100
        T = 1 + len(y) // hop  # the rows whose timestamp k · hop lies inside the clip
        # openSMILE frames start at sample 0 ("left" framing) and it emits a row only once the 60 ms window fits,
        # so on its own its row k's 20 ms window is centred at 10 ms + k · 10 ms and it returns 4 rows fewer than
        # duration × 100 (396 for 4 s; below 60 ms a single NaN row and a warning). Zeros before the clip (one hop,
        # half a 20 ms window) put row k's centre at k · hop; zeros after it (one 60 ms window) give every row up to
        # the clip's end a whole window. Rows away from the edges equal openSMILE's rows of the unpadded clip.
        # The caller clips to the int16 range: openSMILE's cast wraps 1.0 around to -32768 (peaks flip sign).
        padded = np.pad(y, (SHORT_WINDOW_HOPS // 2 * hop, LONG_WINDOW_HOPS * hop))
        frame = _smile().process_signal(padded, cfg.sample_rate)
        if tuple(frame.columns) != EGEMAPS_LLD_NAMES:
            raise RuntimeError(
                f"{self.name}: openSMILE returned columns {list(frame.columns)[:3]}... instead of eGeMAPSv02's 25 "
                f"LLDs; install the version this extractor was written for: {INSTALL_HINT}"
            )
        if len(frame) < T:  # the padding above rules this out for openSMILE 2.6.0's framing
            raise RuntimeError(f"{self.name}: openSMILE returned {len(frame)} rows for {len(y)} samples, need {T}")
        return frame.to_numpy(dtype=np.float32)[:T]  # rows past T are stamped after the clip's end


def _smile() -> Any:
    """The process-wide ``Smile``: it holds only its configuration (every ``process_signal`` call runs a fresh
    openSMILE instance), so clips do not influence each other."""
    return shared_model(MODEL_KEY, _load_smile)
