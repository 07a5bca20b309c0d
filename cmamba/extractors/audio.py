"""Audio features with librosa at a fixed hop, one row per frame, timestamped at frame centres.

Presets:
- ``prosody`` (default, 16 kHz, hop 10 ms = 160 samples, 47 features): MFCC 1-20, their deltas, RMS,
  log-energy (dB of RMS), f0 (YIN, 60-400 Hz), voicing probability (normalised autocorrelation at the YIN
  period, clipped to [0, 1]; f0 is reported as 0 where voicing < 0.5), zero-crossing rate, spectral centroid
  and spectral flux (half-wave-rectified frame-to-frame change of the magnitude spectrum).
- ``sims33`` (22.05 kHz, 33 features): ZCR 1 + MFCC 20 + chroma_cqt 12, the CH-SIMS recipe. chroma_cqt needs a
  hop divisible by 64 samples, so its hop is 256 samples (11.6 ms) rather than 10 ms.

Rows never depend on the rest of the clip (no top_db clamp relative to the loudest frame, no whole-clip tuning
estimate), so a long recording is computed in bounded windows (``framewise``) with the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmamba.extractors.base import Extractor, FeatureSequence, InputSpec, Samples, framewise, register_extractor

PRESETS = ("prosody", "sims33")


@dataclass(frozen=True)
class AudioConfig:
    preset: str = "prosody"
    sample_rate: int | None = None  # None: the preset's rate (16000 prosody, 22050 sims33)
    hop_length: int | None = None  # samples; None: 10 ms (prosody) or 256 (sims33)
    n_fft: int = 512
    n_mfcc: int = 20
    fmin: float = 60.0  # f0 search range (Hz)
    fmax: float = 400.0

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} is not one of {PRESETS}")
        # bounded: rows per second grow as the hop shrinks, each row's window with n_fft
        if not 8000 <= self.rate <= 96000:
            raise ValueError(f"sample_rate must lie in [8000, 96000] Hz, got {self.rate}")
        if not 64 <= self.n_fft <= 16384:
            raise ValueError(f"n_fft must lie in [64, 16384] samples, got {self.n_fft}")
        if not self.rate // 1000 <= self.hop <= self.n_fft:
            raise ValueError(f"hop_length must lie in [1 ms = {self.rate // 1000}, n_fft = {self.n_fft}] samples, "
                             f"got {self.hop}")  # fmt: skip
        if not 0 < self.fmin < self.fmax < self.rate / 2:
            raise ValueError(f"need 0 < fmin < fmax < sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}")

    @property
    def rate(self) -> int:
        return self.sample_rate or (22050 if self.preset == "sims33" else 16000)

    @property
    def hop(self) -> int:
        return self.hop_length or (256 if self.preset == "sims33" else self.rate // 100)


@register_extractor
class LibrosaAudio(Extractor[Samples]):
    name = "librosa-audio"
    version = "2"  # 2: no per-clip normalisation (MFCC top_db clamp, chroma tuning estimate)
    modality = "audio"
    input_type = Samples
    config_type = AudioConfig

    @property
    def feature_names(self) -> tuple[str, ...]:
        mfcc = tuple(f"mfcc_{i}" for i in range(1, self.config.n_mfcc + 1))
        if self.config.preset == "sims33":
            return ("zcr", *mfcc, *(f"chroma_{i}" for i in range(12)))
        deltas = tuple(f"d_{m}" for m in mfcc)
        return (*mfcc, *deltas, "rms", "log_energy", "f0", "voicing", "zcr", "centroid", "flux")

    def input_spec(self) -> InputSpec:
        return InputSpec("samples", rate=self.config.rate)

    def frame_rate(self) -> float:
        return self.config.rate / self.config.hop

    def extract(self, data: Samples) -> FeatureSequence:
        """data: mono float32 samples at the config's rate (decode with that rate)."""
        cfg, samples, sample_rate = self.config, data.samples, data.sample_rate
        if sample_rate != cfg.rate:
            raise ValueError(
                f"{self.name}: got audio at {sample_rate} Hz but the {cfg.preset} preset needs {cfg.rate} Hz; "
                f"decode with read_audio(path, {cfg.rate})"
            )
        y = np.asarray(samples, dtype=np.float32)
        if y.ndim != 1 or len(y) == 0:
            raise ValueError(f"{self.name}: expected non-empty mono samples, got shape {y.shape}")
        values = framewise(y, cfg.hop, self._context_frames(), self._rows)
        T = len(values)
        timestamps = np.arange(T) * cfg.hop / cfg.rate
        return FeatureSequence(values, timestamps, np.ones(T, bool), self.feature_names)

    def _context_frames(self) -> int:
        """Frames of real samples each bounded window needs on each side for rows equal to the whole clip's: the
        STFT / YIN windows, the delta and flux neighbours; chroma_cqt's lowest filters span about a second."""
        return 160 if self.config.preset == "sims33" else 16

    def _rows(self, y: np.ndarray) -> np.ndarray:
        """(T, F) float32 rows of the samples ``y``, row k at sample k · hop."""
        import librosa  # imported on first use: numba and scipy make it slow to import

        cfg = self.config
        hop, n_fft = cfg.hop, cfg.n_fft
        y_pad = np.pad(y, (0, max(0, n_fft - len(y))))  # very short clips still give whole frames
        mel = librosa.feature.melspectrogram(y=y_pad, sr=cfg.rate, n_fft=n_fft, hop_length=hop)
        # dB without librosa's default top_db clamp, which is relative to the loudest frame of the input: a row
        # must not depend on how loud the rest of the clip is (and windows of a long recording must agree)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=cfg.n_mfcc)
        zcr = librosa.feature.zero_crossing_rate(y_pad, frame_length=n_fft, hop_length=hop)
        if cfg.preset == "sims33":
            # tuning fixed at A440: librosa would estimate it from the whole input, so rows would depend on the rest
            # of the clip (and windows of a long recording would disagree)
            chroma = librosa.feature.chroma_cqt(y=y_pad, sr=cfg.rate, hop_length=hop, tuning=0.0)
            T = min(mfcc.shape[1], zcr.shape[1], chroma.shape[1])
            columns = [zcr[:, :T], mfcc[:, :T], chroma[:, :T]]
        else:
            columns = self._prosody(y_pad, mfcc, zcr)
            T = min(c.shape[1] for c in columns)
            columns = [c[:, :T] for c in columns]
        T = min(T, 1 + len(y) // hop)  # frames whose centre lies inside the clip
        return np.concatenate(columns, 0).T[:T].astype(np.float32)

    def _prosody(self, y: np.ndarray, mfcc: np.ndarray, zcr: np.ndarray) -> list[np.ndarray]:
        import librosa

        cfg = self.config
        hop, n_fft = cfg.hop, cfg.n_fft
        delta = librosa.feature.delta(mfcc, width=9, mode="nearest")  # "nearest" edges work for any length
        rms = librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop)
        log_energy = librosa.amplitude_to_db(rms, ref=1.0, top_db=None)
        spectrum = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
        centroid = librosa.feature.spectral_centroid(S=spectrum, sr=cfg.rate)
        flux = np.concatenate([[0.0], np.maximum(np.diff(spectrum, axis=1), 0).sum(0)])[None]
        frame_length = max(n_fft, int(np.ceil(2 * cfg.rate / cfg.fmin)))  # YIN needs two periods of fmin
        f0 = librosa.yin(y, fmin=cfg.fmin, fmax=cfg.fmax, sr=cfg.rate, frame_length=frame_length, hop_length=hop)
        voicing = self._voicing(y, f0, frame_length)
        f0 = np.where(voicing >= 0.5, f0, 0.0)
        return [mfcc, delta, rms, log_energy, f0[None], voicing[None], zcr, centroid, flux]

    def _voicing(self, y: np.ndarray, f0: np.ndarray, frame_length: int) -> np.ndarray:
        """Normalised autocorrelation at the YIN period per frame, clipped to [0, 1]."""
        import librosa

        padded = np.pad(y, frame_length // 2)
        frames = librosa.util.frame(padded, frame_length=frame_length, hop_length=self.config.hop)  # (W, T)
        frames = frames[:, : len(f0)] - frames[:, : len(f0)].mean(0, keepdims=True)
        lag = np.clip(np.round(self.config.rate / f0).astype(int), 1, frame_length - 1)
        later = np.arange(frame_length)[:, None] + lag[None]  # sample index one period later, per frame
        shifted = np.take_along_axis(frames, np.minimum(later, frame_length - 1), 0)
        shifted = np.where(later < frame_length, shifted, 0.0)
        num = (frames * shifted).sum(0)
        den = np.sqrt((frames**2).sum(0) * (shifted**2).sum(0)) + 1e-12
        voicing = np.clip(num / den, 0.0, 1.0)
        return np.pad(voicing, (0, len(f0) - len(voicing)))
