"""How fast training is fed from a cache: streaming shards vs the memory-mapped training view (a script, not a test).

    python bench/train_feed.py                   # a MOSEI-sized cache: 23,000 clips at aligned_50 dims (~4 GB)
    python bench/train_feed.py --clips 5000      # smaller
    ./run bench train_feed

Builds (once, kept in --root) a synthetic cache of --clips clips with MOSEI's aligned_50 shapes (text 50×768,
audio 50×74, vision 50×35; the splits in turn, so the train split is a third), then measures on the train split,
for views stored as float32 and as float16:

- the view build: seconds and peak RSS (a fresh subprocess);
- cold epochs (each in a fresh subprocess, the page cache dropped first when the OS allows; median of
  --cold-repeats) and warm epochs (median of --repeats) at batch 1,024 with 0, 1 and 2 loader threads, in a pure
  input loop;

against ``ShardDataset`` (streaming, batch 1,024, row-group shuffle, 0 workers: the baseline), the disk's
sequential read rate (the view's largest file read after dropping the page cache: what bounds a cold epoch), and two
memory-gather floors over the same data held in ordinary arrays: the issue's (one numpy fancy-index per modality
and batch) and a tighter one (``np.take`` into a reused array: a bare copy). Then one training step of the
paper-size model on CPU, and ``cmamba train`` end to end on the cache (a subprocess, a small model, 2 epochs,
input_threads 0 and 1), whose metrics.json splits each epoch into input time and step time.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from benchutil import machine, process_peak_mb
from torch.utils.data import DataLoader

from cmamba.datasets.shards import ShardDataset
from cmamba.datasets.synthetic import synthetic_cache
from cmamba.datasets.view import training_view
from cmamba.fusion.batch import collate

ALIGNED_50 = {"text": (50, 768), "audio": (50, 74), "video": (50, 35)}
BATCH = 1024
THREADS = (0, 1, 2)
SMALL_MODEL = {"d_model": 32, "d_state": 8, "n_layers": 1, "n_heads": 2, "head_hidden": 32}


def epoch_rate(batches) -> float:
    start, seen = time.perf_counter(), 0
    for batch in batches:
        seen += len(batch["labels"])
    return seen / (time.perf_counter() - start)


def drop_page_cache() -> bool:
    """Evict the files from memory (Linux, root) so the next read comes from disk; False when not allowed."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def in_subprocess(*args: str) -> dict:
    """This script run with ``args`` (one measurement, in a process that has mapped nothing yet); its JSON line."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def measure_build(cache: Path, dtype: str) -> dict:
    start = time.perf_counter()
    view = training_view(cache, split="train", dtype=dtype)
    return {"build_s": time.perf_counter() - start, "build_peak_rss_mb": process_peak_mb(),
            "size_mb": sum(view.meta["sizes"].values()) / 2**20}  # fmt: skip


def measure_cold(cache: Path, dtype: str, threads: int) -> dict:
    view = training_view(cache, split="train", dtype=dtype)
    dropped = drop_page_cache()
    return {"samples_per_s": epoch_rate(view.loader(BATCH, seed=0, workers=threads)), "from_disk": dropped}


def disk_read_rate(path: Path) -> float | None:
    """MiB/s of reading ``path`` sequentially in 4-MB blocks after dropping the page cache; None when not allowed."""
    if not drop_page_cache():
        return None
    start, size = time.perf_counter(), 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(4 << 20):
            size += len(block)
    return size / 2**20 / (time.perf_counter() - start)


def gather_floors(cache: Path, repeats: int) -> dict:
    """Median samples/s of gathering batches from in-memory arrays of the same (float32) data: numpy fancy-indexing
    (a new array per batch and modality) and ``np.take`` into a reused array (a bare copy)."""
    view = training_view(cache, split="train")
    arrays = {m: np.array(view.values[m]).reshape(len(view), -1, view.meta["dims"][m]) for m in view.names}
    outs = {m: np.empty((BATCH, *a.shape[1:]), a.dtype) for m, a in arrays.items()}
    rates: dict[str, list[float]] = {"fancy_index": [], "take_into_reused": []}
    for k in range(repeats):
        order = torch.randperm(len(view), generator=torch.Generator().manual_seed(k)).numpy()
        chunks = [order[s : s + BATCH] for s in range(0, len(order), BATCH)]
        start = time.perf_counter()
        for chunk in chunks:
            for m in view.names:
                arrays[m][chunk]
        rates["fancy_index"].append(len(order) / (time.perf_counter() - start))
        start = time.perf_counter()
        for chunk in chunks:
            for m in view.names:
                np.take(arrays[m], chunk, axis=0, out=outs[m][: len(chunk)], mode="clip")
        rates["take_into_reused"].append(len(order) / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def model_step_seconds(cache: Path) -> float:
    """One training step (forward, backward, Adam) of the paper-size coupled model on a batch of BATCH clips."""
    from cmamba.fusion.config import FusionConfig
    from cmamba.fusion.model import build_model

    view = training_view(cache, split="train")
    batch = view.batch(np.arange(min(BATCH, len(view))))
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


def train_cli(cache: Path, root: Path, threads: int) -> dict:
    """`cmamba train` on the cache as a user runs it: 2 epochs of a small model at batch 1,024, one seed."""
    out, config = root / f"run-threads{threads}", root / f"small-threads{threads}.toml"
    model = "\n".join(f"{k} = {v}" for k, v in SMALL_MODEL.items())
    config.write_text(f"[model]\n{model}\n[train]\nepochs = 2\nbatch_size = {BATCH}\npatience = 10\n"
                      f"input_threads = {threads}\nseeds = [1]\nprogress = false\n")  # fmt: skip
    command = [sys.executable, "-m", "cmamba.cli", "train", str(cache), "--out", str(out), "--config", str(config),
               "--overwrite"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"cmamba train failed:\n{done.stderr[-2000:]}")
    rows = json.loads((out / "seed-1" / "metrics.json").read_text())
    warm = rows[-1]  # epoch 2: the views exist and are in the page cache
    return {"wall_s": time.perf_counter() - start, "epochs": len(rows), "input_s": warm["input_s"],
            "step_s": warm["step_s"], "input_share": warm["input_s"] / (warm["input_s"] + warm["step_s"]),
            "train_loss": [r["train_loss"] for r in rows]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=23000)
    parser.add_argument("--root", type=Path, default=Path("results/train_feed"))
    parser.add_argument("--repeats", type=int, default=5, help="warm epochs per setting (the median is reported)")
    parser.add_argument("--cold-repeats", type=int, default=3, help="cold epochs per setting (median reported)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)  # a single measurement (in_subprocess)
    args = parser.parse_args()
    cache = args.root / f"cache-{args.clips}"
    if args.one:
        kind, dtype, *rest = args.one
        done = measure_build(cache, dtype) if kind == "build" else measure_cold(cache, dtype, int(rest[0]))
        print(json.dumps(done))
        return
    print(machine("cpu"), flush=True)
    if not (cache / "manifest.json").is_file():
        start = time.perf_counter()
        synthetic_cache(cache, args.clips, ALIGNED_50, vary=False, clips_per_shard=1000)
        print(f"cache of {args.clips} clips written in {time.perf_counter() - start:.0f} s", flush=True)
    for old in (cache / "views").glob("*"):  # a fresh build every run
        subprocess.run(["rm", "-rf", str(old)], check=True)
    stream = ShardDataset(cache, split="train")
    loader = DataLoader(stream, batch_size=BATCH, sampler=stream.sampler(), collate_fn=collate)
    row: dict = {"clips": args.clips, "train_clips": len(stream), "stream_samples_per_s": epoch_rate(loader)}
    row["stream_epoch_s"] = len(stream) / row["stream_samples_per_s"]
    print(f"ShardDataset streaming epoch: {row['stream_samples_per_s']:,.0f} samples/s "
          f"({row['stream_epoch_s']:.1f} s)", flush=True)  # fmt: skip
    for dtype in ("float32", "float16"):
        result = row[dtype] = in_subprocess("--clips", str(args.clips), "--root", str(args.root), "--one", "build",
                                            dtype)  # fmt: skip
        print(f"{dtype} view build: {result['build_s']:.1f} s ({result['build_s'] / row['stream_epoch_s']:.2f}× a "
              f"streaming epoch), peak RSS {result['build_peak_rss_mb']:.0f} MB, {result['size_mb']:,.0f} MB",
              flush=True)  # fmt: skip
        if dtype == "float32":
            row["disk_read_mib_per_s"] = rate = disk_read_rate(training_view(cache, split="train").values_file("text"))
            print(f"disk, sequential read after dropping the page cache: {rate or float('nan'):,.0f} MiB/s")
        # every cold epoch before this process maps the view: pages a process has mapped survive drop_caches
        colds = {
            threads: [
                in_subprocess(
                    "--clips", str(args.clips), "--root", str(args.root), "--one", "cold", dtype, str(threads)
                )
                for _ in range(args.cold_repeats)
            ]
            for threads in THREADS
        }
        view = training_view(cache, split="train", dtype=dtype)
        for threads in THREADS:
            cold = [c["samples_per_s"] for c in colds[threads]]
            warm = [epoch_rate(view.loader(BATCH, seed=1 + k, workers=threads)) for k in range(args.repeats)]
            result[f"threads{threads}"] = {"cold": statistics.median(cold), "cold_runs": cold,
                                           "cold_from_disk": all(c["from_disk"] for c in colds[threads]),
                                           "warm": statistics.median(warm), "warm_runs": warm}  # fmt: skip
            print(f"{dtype} view, {threads} loader thread(s): cold {statistics.median(cold):,.0f} (from disk: "
                  f"{all(c['from_disk'] for c in colds[threads])}; {', '.join(f'{c:,.0f}' for c in cold)}), warm "
                  f"{statistics.median(warm):,.0f} samples/s ({', '.join(f'{w:,.0f}' for w in warm)})",
                  flush=True)  # fmt: skip
        del view
        gc.collect()  # unmapped before the next measurements
    row["floors"] = gather_floors(cache, args.repeats)
    row["process_peak_rss_mb"] = process_peak_mb()
    print(f"memory-gather floors: fancy index {row['floors']['fancy_index']:,.0f}, take into a reused array "
          f"{row['floors']['take_into_reused']:,.0f} samples/s", flush=True)  # fmt: skip
    row["model_step_s"] = model_step_seconds(cache)
    rate = row["float32"]["threads0"]["warm"]  # no overlap with the step: the largest share input can take
    row["input_share_of_step"] = (BATCH / rate) / (BATCH / rate + row["model_step_s"])
    print(f"paper-size model step on CPU at batch {BATCH}: {row['model_step_s']:.2f} s; the float32 view's warm "
          f"input (0 threads) is {100 * row['input_share_of_step']:.2f}% of input + step", flush=True)  # fmt: skip
    for threads in (0, 1):
        row[f"train_cli_threads{threads}"] = run = train_cli(cache, args.root, threads)
        print(f"cmamba train (small model, input_threads {threads}): {run['wall_s']:.0f} s; epoch 2: input "
              f"{run['input_s']:.2f} s, steps {run['step_s']:.2f} s ({100 * run['input_share']:.1f}% input)",
              flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine("cpu"), "date": time.strftime("%Y-%m-%d"), "row": row},
                                        indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
