"""Benchmark of the extractors on one core (a script, not a test).

    python bench/extract.py              # all rows, 12 s clips built from the real-media fixtures
    ./run bench extract                  # the same, after the self-installing set-up

The process pins itself to one CPU and every thread pool (torch, BLAS, OpenMP, numba) to one thread before
anything imports them, so the numbers are per core. Inputs: carphone_pristine.mp4 (a real talking face, 176×144)
muxed with arctic_a0007.wav (real speech) and looped 3× to 12 s, at native size and upscaled to 640×360.
Rows (medians over repeats after one warm-up):
  video      FaceLandmarker on decoded frames (frames/s), and decode + landmarks at the default 10 Hz
  audio      decode + librosa features, both presets, and openSMILE eGeMAPS when installed (× real time)
  text       MiniLM over a transcript (tokens/s)
  asr        faster-whisper tiny.en word timestamps (× real time), when the [asr] extra is installed
  clip       extract_clip: all modalities from the file, with the label text given / with ASR (× real time)
"""

from __future__ import annotations

import importlib.util
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import argparse  # noqa: E402  (the thread settings above must precede every numeric import)
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from benchutil import machine, median_seconds  # noqa: E402

from cmamba.datasets.media import mux_clip  # noqa: E402
from cmamba.extractors import Frames, Samples, Words, get_extractor  # noqa: E402
from cmamba.extractors.decode import probe, read_audio, read_frames  # noqa: E402
from cmamba.extractors.transcripts import split_words  # noqa: E402
from cmamba.extractors.transcripts.asr import asr_status, transcribe  # noqa: E402
from cmamba.pipeline.clip import extract_clip  # noqa: E402
from cmamba.pipeline.config import ExtractionConfig  # noqa: E402

torch.set_num_threads(1)
MEDIA = Path(__file__).parents[1] / "tests" / "fixtures" / "media"
SENTENCE = "and you always want to see it in the superlative degree"


def median_time(fn, repeats: int) -> float:
    return median_seconds(fn, "cpu", warmup=1, repeats=repeats)  # the warm-up loads the models, as a worker does


def bench(clips: dict[str, Path], repeats: int) -> list[dict]:
    rows = []

    def row(name: str, unit: str, amount: float, seconds: float, **extra) -> None:
        rows.append({"row": name, "unit": unit, "rate": amount / seconds, "median_s": seconds, **extra})
        print(f"{name:<44} {amount / seconds:10.1f} {unit:<10} ({seconds * 1000:.1f} ms)", flush=True)

    face = get_extractor("mediapipe-face")
    native_fps = probe(clips["360p"]).fps
    for size, clip in clips.items():
        duration = probe(clip).duration
        for fps in (face.config.fps, native_fps):
            frames, stamps = read_frames(clip, fps, face.config.max_side)
            seconds = median_time(lambda f=frames, s=stamps: face.extract(Frames(f, s)), repeats)
            row(f"video landmarks {size} @ {fps:.3g} Hz", "frames/s", len(frames), seconds)
        seconds = median_time(lambda c=clip: face.extract_file(c), repeats)
        row(f"video decode+landmarks {size} @ {face.config.fps:g} Hz", "x realtime", duration, seconds)

    clip, duration = clips["360p"], probe(clips["360p"]).duration
    for preset in ("prosody", "sims33"):
        audio = get_extractor("librosa-audio", replace(get_extractor("librosa-audio").config, preset=preset))
        rate = audio.config.rate
        seconds = median_time(lambda a=audio, r=rate: a.extract(Samples(read_audio(clip, r), r)), repeats)
        row(f"audio decode+features {preset}", "x realtime", duration, seconds)
    if importlib.util.find_spec("opensmile") is not None:  # the optional [opensmile] extra
        egemaps = get_extractor("opensmile-egemaps")
        rate = egemaps.config.sample_rate
        seconds = median_time(lambda r=rate: egemaps.extract(Samples(read_audio(clip, r), r)), repeats)
        row("audio decode+features opensmile eGeMAPS", "x realtime", duration, seconds)
    else:
        print("opensmile skipped: pip install 'cmamba[opensmile]'")

    text = get_extractor("text-transformer")
    words = split_words(" ".join([SENTENCE] * 10))  # 110 words, one long utterance
    times = [[0.3 * i, 0.3 * i + 0.25] for i in range(len(words))]
    tokens = text.extract(Words(words, times)).info["text_bert"].shape[1]
    seconds = median_time(lambda: text.extract(Words(words, times)), repeats)
    row("text MiniLM, 110 words", "tokens/s", tokens, seconds)

    available, reason = asr_status()
    if available:
        samples = read_audio(clip, 16000)
        seconds = median_time(lambda: transcribe(samples), repeats)
        row("asr faster-whisper tiny.en", "x realtime", duration, seconds)
    else:
        print(f"asr skipped: {reason}")

    with_text = ExtractionConfig(use_asr=False)
    for size, clip in clips.items():
        duration = probe(clip).duration
        seconds = median_time(lambda c=clip: extract_clip(c, with_text, text=" ".join([SENTENCE] * 3)), repeats)
        row(f"clip all modalities {size}, label text", "x realtime", duration, seconds)
    if available:
        seconds = median_time(lambda: extract_clip(clips["360p"], ExtractionConfig()), repeats)
        row("clip all modalities 360p, ASR transcript", "x realtime", probe(clips["360p"]).duration, seconds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(machine("cpu"), f"pinned to CPU {sorted(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory() as tmp:
        sources = (MEDIA / "carphone_pristine.mp4", MEDIA / "arctic_a0007.wav")
        clips = {
            "176x144": mux_clip(*sources, Path(tmp) / "native.mp4", loops=3),
            "360p": mux_clip(*sources, Path(tmp) / "360p.mp4", size=(640, 360), loops=3),
        }
        rows = bench(clips, args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of the process: {peak:.0f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine("cpu"), "rows": rows, "peak_rss_mb": peak}, indent=1))


if __name__ == "__main__":
    main()
