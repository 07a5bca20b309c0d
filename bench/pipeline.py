"""Benchmark of the extraction pipeline and the training reader (a script, not a test).

    python bench/pipeline.py                 # 32 clips of 4 s, 1 vs 2 workers, then the reader
    ./run bench pipeline                     # the same, after the self-installing set-up

Extraction: a folder of real-media clips (carphone_pristine.mp4, a real talking face, muxed with
arctic_a0007.wav, real speech; each copy made distinct so every clip is extracted), labels.csv with the
transcript, ASR off. Each worker count runs `run_extraction` on a fresh cache as a user would (cluster start,
model loading and shard writing included); medians over repeats. Reported: wall time, × real time (media seconds
per wall second), scaling 2 workers vs 1, and each worker's peak resident memory.
Reader: a synthetic cache shaped like CMU-MOSI unaligned features at our dims (text 50 × 384, audio 400 × 47,
video 40 × 58; 5,000 clips) read through `ShardDataset` (native and clock alignment) and a DataLoader batch 32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchutil import machine
from torch.utils.data import DataLoader

from cmamba.datasets.media import distinct_copy, mux_clip
from cmamba.datasets.shards import ShardDataset
from cmamba.datasets.synthetic import synthetic_cache
from cmamba.fusion.batch import collate
from cmamba.pipeline.config import ExtractionConfig
from cmamba.pipeline.layout import folder_clips
from cmamba.pipeline.run import run_extraction

MEDIA = Path(__file__).parents[1] / "tests" / "fixtures" / "media"
SENTENCE = "and you always want to see it in the superlative degree"


def make_folder(root: Path, clips: int) -> tuple[Path, float]:
    talk = mux_clip(MEDIA / "carphone_pristine.mp4", MEDIA / "arctic_a0007.wav", root / "talk.mp4")
    folder = root / "clips"
    folder.mkdir()
    for i in range(clips):
        distinct_copy(talk, folder / f"clip{i:03d}.mp4", i)  # every clip is extracted, none comes from the cache
    labels = [f"clip{i:03d},{(i % 7) - 3},train,{SENTENCE}" for i in range(clips)]
    (folder / "labels.csv").write_text("clip_id,label,split,text\n" + "\n".join(labels) + "\n")
    return folder, 4.0 * clips


def bench_extraction(folder: Path, media_seconds: float, repeats: int, root: Path) -> list[dict]:
    rows, clips = [], folder_clips(folder)
    for workers in (1, 2):
        times, peaks = [], []
        for r in range(repeats):
            out = root / f"cache-{workers}-{r}"
            summary = run_extraction(clips, out, ExtractionConfig(use_asr=False), workers=workers, progress=False)
            assert not summary.failed, summary
            times.append(summary.seconds)
            peaks.append(max(summary.worker_peak_mb.values()))
            shutil.rmtree(out)
        seconds = statistics.median(times)
        rows.append({"workers": workers, "median_s": seconds, "x_realtime": media_seconds / seconds,
                     "worker_peak_mb": max(peaks), "times": times})  # fmt: skip
        print(
            f"extract {len(clips)} clips, {workers} worker(s): {seconds:.1f} s, {media_seconds / seconds:.1f}x "
            f"real time, worker peak {max(peaks):.0f} MB (runs: {[round(t, 1) for t in times]})",
            flush=True,
        )
    print(f"scaling 2 vs 1 workers: {rows[0]['median_s'] / rows[1]['median_s']:.2f}x", flush=True)
    return rows


def bench_reader(root: Path, clips: int) -> list[dict]:
    """Each measurement starts from a fresh dataset, so row-group decoding is always included."""
    out = root / "synthetic"
    synthetic_cache(out, clips, vary=False)
    results = []
    for align in ("native", "clock"):
        dataset = ShardDataset(out, align=align)
        count = len(dataset) if align == "native" else min(1000, len(dataset))
        start = time.perf_counter()
        for i in range(count):
            dataset[i]
        row = {"align": align, "item_samples_per_s": count / (time.perf_counter() - start)}
        for workers in (0, 2):
            dataset = ShardDataset(out, align=align)
            loader = DataLoader(dataset, batch_size=32, sampler=dataset.sampler(), collate_fn=collate,
                                num_workers=workers)  # fmt: skip
            start, seen = time.perf_counter(), 0
            for batch in loader:
                seen += len(batch["labels"])
                if seen >= count:
                    break
            row[f"loader{workers}_samples_per_s"] = seen / (time.perf_counter() - start)
        results.append(row)
        print(f"reader {align}: {row['item_samples_per_s']:,.0f} samples/s item by item; DataLoader batch 32 "
              f"(row-group shuffle + collate): {row['loader0_samples_per_s']:,.0f}/s in-process, "
              f"{row['loader2_samples_per_s']:,.0f}/s with 2 loader workers", flush=True)  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reader-clips", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(machine("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder, media_seconds = make_folder(root, args.clips)
        extraction = bench_extraction(folder, media_seconds, args.repeats, root)
        reader = bench_reader(root, args.reader_clips)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine("cpu"), "extraction": extraction, "reader": reader}
        args.json.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
