"""Benchmark of long recordings: segmentation and extraction in bounded memory (a script, not a test).

    python bench/long.py                     # 1- and 10-minute recordings, 1 and 2 workers
    python bench/long.py --minutes 1 10 60   # the issue's full set (the 60-minute one takes a while to encode)
    python bench/long.py --score             # also `cmamba score` each recording with the demo's trained run
    ./run bench long                         # the same, after the self-installing set-up

Recordings are built from the real-media fixtures: carphone_pristine.mp4 (a real talking face, 29.97 fps) muxed with
arctic_a0007.wav (real speech, about 0.9 s of silence between repeats), upscaled to 640×360, looped to length and
encoded with PyAV (h264 + AAC). For each length: utterance segmentation alone (silero-vad, × real time), then
`run_extraction` with `segment=auto` as `cmamba extract` runs it (fresh cache, cluster start and model loading
included), with 1 and 2 workers: wall time, × real time, scaling 2 vs 1, and each worker's peak resident memory.
With ``--score``: `cmamba score` as a user runs it (a subprocess, 2 workers, the run `cmamba demo` trains): wall
time, the peak resident memory of the CLI process (with every process it reaped) and of its workers, and whether
report.html holds the recording's timeline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
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


def score_cli(folder: Path, run: Path, out: Path, workers: int) -> dict:
    """`cmamba score folder` in a subprocess: wall time, peak RSS of the CLI process (with the processes it reaped),
    its workers' peak RSS (recorded in scores.json) and whether the report has the recording's timeline."""
    command = [sys.executable, "-m", "cmamba.cli", "score", str(folder), "--model", str(run), "--out", str(out),
               "--workers", str(workers)]  # fmt: skip
    start = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w+") as log:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        if status != 0:
            log.seek(0)
            raise SystemExit(f"cmamba score failed: {' '.join(command)}\n{log.read()[-2000:]}")
    scores = json.loads((out / "scores.json").read_text())
    report = (out / "report.html").read_text()
    return {"wall_s": wall, "process_peak_mb": usage.ru_maxrss / 1024,
            "peak_worker_mb": max(scores["extraction"]["run"]["worker_peak_mb"].values()),
            "segments_scored": len(scores["clips"]), "failed": len(scores["failed"]),
            "timeline": "timelines.png" in report and (out / "timelines.png").stat().st_size > 0}  # fmt: skip


def bench(minutes: list[float], workers: list[int], root: Path, run: Path | None) -> list[dict]:
    rows = []
    for length in minutes:
        folder = root / f"rec-{length:g}min"
        folder.mkdir()
        start = time.perf_counter()
        loops = max(1, round(length * 60 / LOOP_SECONDS))
        path = mux_clip(MEDIA / "carphone_pristine.mp4", MEDIA / "arctic_a0007.wav", folder / "recording.mp4",
                        size=(640, 360), loops=loops, preset="veryfast")  # fmt: skip
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
        if run is not None:
            scored = row["score"] = score_cli(folder, run, root / f"scores-{length:g}", max(workers))
            print(f"  cmamba score: {scored['segments_scored']} segments in {scored['wall_s']:.1f} s "
                  f"({seconds / scored['wall_s']:.1f}× real time), peak RSS {scored['process_peak_mb']:.0f} MB "
                  f"(CLI), {scored['peak_worker_mb']:.0f} MB (worker), timeline {scored['timeline']}")  # fmt: skip
        rows.append(row)
        shutil.rmtree(folder)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--score", action="store_true", help="also run `cmamba score` (trains the demo run first)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(machine("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        run = None
        if args.score:
            from cmamba.app.demo import run_demo

            run_demo(Path(tmp) / "demo", workers=max(args.workers), echo=lambda line: None)
            run = Path(tmp) / "demo" / "run"
        rows = bench(args.minutes, args.workers, Path(tmp), run)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine("cpu"), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
