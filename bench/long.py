"""Benchmark of long recordings: segmentation and extraction in bounded memory (a script, not a test).

    python bench/long.py                     # 1- and 10-minute recordings, 1 and 2 workers
    python bench/long.py --minutes 1 10 60   # the issue's full set (the 60-minute one takes a while to encode)
    ./run bench long                         # the same, after the self-installing set-up

Recordings are built from the real-media fixtures: carphone_pristine.mp4 (a real talking face, 29.97 fps) muxed with
arctic_a0007.wav (real speech, about 0.9 s of silence between repeats), upscaled to 640×360, looped to length and
encoded with PyAV (h264 + AAC). For each length: utterance segmentation alone (silero-vad, × real time), then
`run_extraction` with `segment=auto` as `cmamba extract` runs it (fresh cache, cluster start and model loading
included), with 1 and 2 workers: wall time, × real time, scaling 2 vs 1, and each worker's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchutil import machine

from cmamba.datasets.media import mux_clip
from cmamba.pipeline.config import ExtractionConfig, SegmentConfig
from cmamba.pipeline.layout import folder_clips
from cmamba.pipeline.run import run_extraction
from cmamba.pipeline.segment import segment_recording

MEDIA = Path(__file__).parents[1] / "tests" / "fixtures" / "media"
LOOP_SECONDS = 4.0  # one pass of the fixtures


def bench(minutes: list[float], workers: list[int], root: Path) -> list[dict]:
    rows = []
    for length in minutes:
        folder = root / f"rec-{length:g}min"
        folder.mkdir()
        start = time.perf_counter()
        path = mux_clip(MEDIA / "carphone_pristine.mp4", MEDIA / "arctic_a0007.wav", folder / "recording.mp4",
                        size=(640, 360), loops=max(1, round(length * 60 / LOOP_SECONDS)))  # fmt: skip
        print(f"{length:g} min: encoded in {time.perf_counter() - start:.0f} s", flush=True)
        seconds = length * 60
        start = time.perf_counter()
        cut = segment_recording(path, SegmentConfig(mode="vad"))
        took = time.perf_counter() - start
        row = {"minutes": length, "segments": len(cut.intervals), "segment_s": took, "segment_rtf": seconds / took}
        print(f"  segmentation: {len(cut.intervals)} segments in {took:.1f} s ({seconds / took:.0f}× real time)")
        for count in workers:
            cache = root / f"cache-{length:g}-{count}"
            start = time.perf_counter()
            summary = run_extraction(folder_clips(folder), cache, ExtractionConfig(use_asr=False), workers=count,
                                     progress=False, segment=SegmentConfig())  # fmt: skip
            wall = time.perf_counter() - start
            peak = max(summary.worker_peak_mb.values())
            row[f"workers{count}"] = {"wall_s": wall, "rtf": seconds / wall, "peak_worker_mb": peak,
                                      "clips": summary.clips, "failed": summary.failed}  # fmt: skip
            print(
                f"  {count} worker(s): {summary.clips} clips in {wall:.1f} s ({seconds / wall:.1f}× real time), "
                f"peak worker RSS {peak:.0f} MB, failed {summary.failed}",
                flush=True,
            )
            shutil.rmtree(cache)
        if 1 in workers and 2 in workers:
            row["scaling_2_vs_1"] = row["workers1"]["wall_s"] / row["workers2"]["wall_s"]
            print(f"  2 workers vs 1: {row['scaling_2_vs_1']:.2f}×")
        rows.append(row)
        shutil.rmtree(folder)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(machine("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench(args.minutes, args.workers, Path(tmp))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine("cpu"), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
