"""How fast training is fed from a cache: streaming shards vs the memory-mapped training view (a script, not a test).

    python bench/train_feed.py                   # a MOSEI-sized cache: 23,000 clips at aligned_50 dims (~4 GB)
    python bench/train_feed.py --clips 5000      # smaller
    ./run bench train_feed

Builds (once, kept in --root) a synthetic cache of --clips clips with MOSEI's aligned_50 shapes (text 50×768,
audio 50×74, vision 50×35; the splits in turn, so the train split is a third), then measures on the train split:
the view build (seconds and this process's peak RSS, in a fresh subprocess), samples/s of a cold epoch (the page
cache dropped first, when the OS allows) and of warm ones (median of --repeats) at batch 1,024 with 0, 1 and 2
loader threads, against
``ShardDataset`` (streaming, batch 1,024, row-group shuffle, 0 workers: the baseline) and the memory-gather
floor: one numpy fancy-index per modality of the same in-memory arrays (what no reader can beat); and one training
step of the paper-size model on CPU, to put the input time in proportion.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from benchutil import machine
from torch.utils.data import DataLoader

from cmamba.datasets.shards import ShardDataset
from cmamba.datasets.synthetic import synthetic_cache
from cmamba.datasets.view import training_view
from cmamba.fusion.batch import collate

ALIGNED_50 = {"text": (50, 768), "audio": (50, 74), "video": (50, 35)}
BATCH = 1024


def epoch_rate(batches) -> float:
    start, seen = time.perf_counter(), 0
    for batch in batches:
        seen += len(batch["labels"])
    return seen / (time.perf_counter() - start)


def drop_page_cache() -> bool:
    """Evict the files from memory (Linux, root) so the next epoch reads from disk; False when not allowed."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def view_epochs(cache: Path, workers: int, repeats: int) -> dict:
    view = training_view(cache, split="train")
    dropped = drop_page_cache()
    cold = epoch_rate(view.loader(BATCH, seed=0, workers=workers))
    warm = [epoch_rate(view.loader(BATCH, seed=1 + k, workers=workers)) for k in range(repeats)]
    return {"cold": cold, "cold_from_disk": dropped, "warm": statistics.median(warm), "warm_runs": warm}


def gather_floor(cache: Path, repeats: int) -> float:
    """Median samples/s of one numpy fancy-index per modality and batch over in-memory arrays of the same data."""
    view = training_view(cache, split="train")
    arrays = {m: np.array(view.values[m]).reshape(len(view), -1, view.meta["dims"][m]) for m in view.names}
    rates = []
    for k in range(repeats):
        order = torch.randperm(len(view), generator=torch.Generator().manual_seed(k)).numpy()
        start = time.perf_counter()
        for s in range(0, len(order), BATCH):
            for m in view.names:
                arrays[m][order[s : s + BATCH]]
        rates.append(len(order) / (time.perf_counter() - start))
    return statistics.median(rates)


def model_step_seconds(cache: Path) -> float:
    """One training step (forward, backward, Adam) of the paper-size coupled model on a batch of BATCH clips."""
    from cmamba.fusion.config import FusionConfig
    from cmamba.fusion.model import build_model

    view = training_view(cache, split="train")
    batch = view.batch(np.arange(BATCH))
    model = build_model(FusionConfig(modalities=view.dims()))  # d_model 128, d_state 64, 3 layers
    optimizer = torch.optim.Adam(model.parameters())

    def step() -> None:
        loss = (model(batch).float().squeeze(-1) - batch["labels"]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def build_in_subprocess(cache: Path) -> dict:
    code = (f"import time, resource; from cmamba.datasets.view import training_view; t = time.perf_counter(); "
            f"training_view({str(cache)!r}, split='train'); print(time.perf_counter() - t, "
            f"resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, peak = map(float, done.stdout.split())
    return {"build_s": seconds, "build_peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=23000)
    parser.add_argument("--root", type=Path, default=Path("results/train_feed"))
    parser.add_argument("--repeats", type=int, default=5, help="warm epochs per setting (the median is reported)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(machine("cpu"), flush=True)
    cache = args.root / f"cache-{args.clips}"
    if not (cache / "manifest.json").is_file():
        start = time.perf_counter()
        synthetic_cache(cache, args.clips, ALIGNED_50, vary=False, clips_per_shard=1000)
        print(f"cache of {args.clips} clips written in {time.perf_counter() - start:.0f} s", flush=True)
    for old in (cache / "views").glob("*"):  # a fresh build every run
        subprocess.run(["rm", "-rf", str(old)], check=True)
    row: dict = {"clips": args.clips, **build_in_subprocess(cache)}
    print(f"view build: {row['build_s']:.1f} s, peak RSS {row['build_peak_rss_mb']:.0f} MB", flush=True)
    stream = ShardDataset(cache, split="train")
    loader = DataLoader(stream, batch_size=BATCH, sampler=stream.sampler(), collate_fn=collate)
    row["stream_samples_per_s"] = epoch_rate(loader)
    row["stream_epoch_s"] = len(stream) / row["stream_samples_per_s"]
    print(f"ShardDataset streaming epoch: {row['stream_samples_per_s']:,.0f} samples/s", flush=True)
    for workers in (0, 1, 2):
        row[f"view_workers{workers}"] = rates = view_epochs(cache, workers, args.repeats)
        print(f"view, {workers} loader thread(s): cold {rates['cold']:,.0f} (from disk: {rates['cold_from_disk']}), "
              f"warm {rates['warm']:,.0f} samples/s (median of {args.repeats})", flush=True)  # fmt: skip
    row["gather_floor_samples_per_s"] = gather_floor(cache, args.repeats)
    row["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory-gather floor: {row['gather_floor_samples_per_s']:,.0f} samples/s", flush=True)
    row["model_step_s"] = model_step_seconds(cache)
    best = max(row[f"view_workers{w}"]["warm"] for w in (0, 1, 2))
    row["input_share_of_step"] = (BATCH / best) / (BATCH / best + row["model_step_s"])
    print(f"paper-size model step on CPU at batch {BATCH}: {row['model_step_s']:.2f} s; the view's warm input is "
          f"{100 * row['input_share_of_step']:.1f}% of input + step", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine("cpu"), "row": row}, indent=1))


if __name__ == "__main__":
    main()
