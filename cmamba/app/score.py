"""Score new clips offline with a trained run (``cmamba score INPUT --model RUN --out OUT``).

    OUT/cache/        the clips' feature cache (resumable: an interrupted score continues where it stopped)
    OUT/scores.csv    one row per scored clip: clip_id, score, polarity, present, contribution_<modality>
    OUT/scores.json   clips (with trajectories), failed clips, model, extraction config, versions
    OUT/report.html   with distribution.png, trajectories.png and contributions.png beside it (``cmamba.app.report``)

Clips are extracted with the extraction config recorded in the checkpoint, after checking that the registered
extractors still produce the features the model was trained on (name, version, feature dim per modality).

Per clip: ``score`` — the regression output (classification: P(positive) − P(negative)); ``polarity`` — see
``POLARITY_RULE``; ``trajectory`` — (seconds, score) after each step of the model's time axis
(``FusionModel.trajectory``; seconds = fraction of the steps × clip duration); ``contributions`` — per modality,
score − the score with that modality marked absent (the model's learned stand-in replaces it); null for a
modality the clip lacks. Each clip is one batch of 1 + M rows (itself, then once without each modality), so a
clip's score never depends on which other clips are scored with it (the model's padding and resampling are
per batch).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from cmamba.app.extract import find_clips, install_models_on_first_use
from cmamba.app.report import IMAGES, write_report
from cmamba.app.runs import TrainedRun, open_run
from cmamba.constants import CLIP_ID_SEPARATOR
from cmamba.errors import NoMediaError, SchemaMismatchError, UnscorableCheckpointError
from cmamba.fusion.batch import collate
from cmamba.fusion.model import FusionModel
from cmamba.fusion.train import sentiment_classes
from cmamba.io import json_text, tool_versions
from cmamba.pipeline.cache.store import read_errors, shard_paths
from cmamba.pipeline.config import ExtractionConfig, SegmentConfig
from cmamba.pipeline.run import run_extraction

POLARITIES = ("negative", "neutral", "positive")
POLARITY_RULE = (
    "MMSA's three sentiment classes: negative if score < 0, positive if score > 0, neutral only if score == 0 "
    "(regression; the MOSI/MOSEI Non0 sign rule), the argmax class for a classification model"
)
TRAJECTORY_TIME = (
    "[seconds, score] after each step of the model's time axis: the prediction from the clip up to that point; "
    "seconds = fraction of the clip's steps × duration (with align='word' the steps are words, so approximate)"
)


RUN_FIELDS = ("clips", "extracted", "cached", "failed", "seconds", "worker_peak_mb")  # of the extraction summary


def recorded_extraction(meta: dict, checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's ``schema["extraction"]``; raises ``UnscorableCheckpointError`` when raw clips cannot be
    extracted like its training features (none recorded, or imported features without timestamps)."""
    extraction = (meta.get("schema") or {}).get("extraction")
    if extraction and extraction.get("time_unit") != "seconds":
        raise UnscorableCheckpointError(
            f"the checkpoint {checkpoint} was trained on imported features (time unit "
            f"{extraction.get('time_unit')!r}, e.g. an MMSA pickle), so raw clips cannot be scored with it: those "
            "features come from other extractors than this tool's, and features extracted from raw clips would not "
            "match what it learned; train it on a cache built by `cmamba extract` or `cmamba prepare`"
        )
    if not extraction or not extraction.get("config"):
        raise UnscorableCheckpointError(
            f"the checkpoint {checkpoint} records no feature extraction (it was trained on in-memory features), so "
            "raw clips cannot be scored with it: nothing says how to extract features it understands; train it on "
            "a cache built by `cmamba extract` or `cmamba prepare`"
        )
    return extraction


def check_extractors(extraction: dict[str, Any], modalities: list[str]) -> ExtractionConfig:
    """The recorded extraction config, once every modality's recorded extractor (name, version, feature dim)
    equals the one registered now; raises ``SchemaMismatchError`` naming the modality and both."""
    try:
        config = ExtractionConfig.from_dict(extraction["config"])
    except (TypeError, ValueError) as exc:
        raise SchemaMismatchError(f"this cmamba cannot read the checkpoint's extraction config: {exc}") from exc
    recorded_all = extraction.get("extractors") or {}
    for m in modalities:
        if m not in config.modalities:
            raise SchemaMismatchError(f"the model uses modality {m!r}, which the recorded extraction does not extract")
        current = config.extractor(m)
        now = {"name": current.name, "version": current.version, "feature_dim": current.feature_dim}
        recorded = {key: (recorded_all.get(m) or {}).get(key) for key in now}
        if recorded != now:
            raise SchemaMismatchError(
                "score refuses a checkpoint whose feature schema does not match the clips' extraction: modality "
                f"{m!r} was extracted for training by {recorded}, this cmamba extracts it with {now}; score with "
                "the cmamba version that trained the model, or re-extract the training data and retrain"
            )
    return config


def _run_info(trained: TrainedRun) -> dict[str, Any]:
    run, checkpoint, meta, model = trained.path, trained.checkpoint, trained.meta, trained.model
    train, summary_path = trained.train_config, run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {
        "run": str(run.resolve()),
        "checkpoint": str(checkpoint.resolve()),
        "task": model.config.task,
        "modalities": list(model.names),
        "dataset": train.get("dataset"),
        "seed": train.get("seed"),
        "seeds": summary.get("seeds"),  # the checkpoint is the seed with the lowest valid loss (best_checkpoint)
        "epoch": meta.get("epoch"),
        "valid": meta.get("valid") or {},  # the selection metrics (null where undefined, e.g. Corr of a constant)
        "illustrative": bool(summary.get("illustrative", False)),
    }


CLIP_COLUMNS = ("clip_id", "video_id", "start", "end", "duration", "text_raw")


def _clip_info(cache: Path) -> dict[str, dict[str, Any]]:
    """Per clip of the cache: its recording (video_id), range in the source file, duration and text."""
    info = {}
    for path in shard_paths(cache):
        table = pq.read_table(path, columns=list(CLIP_COLUMNS)).to_pylist()
        info.update((row["clip_id"], row) for row in table)
    return info


def recording_summaries(clips: list[dict], failed: list[dict], info: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per recording: its duration (up to its last segment), segments scored and failed, the
    duration-weighted mean score and the share of scored time that is positive / neutral / negative."""
    by_recording: dict[str, dict[str, Any]] = {}
    for clip in clips:
        row = info[clip["clip_id"]]
        entry = by_recording.setdefault(row["video_id"], {"video_id": row["video_id"], "clips": [], "failed": 0})
        entry["clips"].append((clip, row))
    failed_ids = {f["clip_id"] for f in failed}
    for clip_id in failed_ids:
        video_id = clip_id.split(CLIP_ID_SEPARATOR, 1)[0]
        by_recording.setdefault(video_id, {"video_id": video_id, "clips": [], "failed": 0})["failed"] += 1
    summaries = []
    for video_id, entry in sorted(by_recording.items()):
        weights = np.array([row["duration"] for _, row in entry["clips"]], dtype=np.float64)
        scores = np.array([clip["score"] for clip, _ in entry["clips"]], dtype=np.float64)
        total = float(weights.sum())
        shares = {p: float(weights[[c["polarity"] == p for c, _ in entry["clips"]]].sum()) / total if total else None
                  for p in POLARITIES}  # fmt: skip
        summaries.append({
            "video_id": video_id,
            "duration": max((row["end"] for _, row in entry["clips"]), default=0.0),
            "segments_scored": len(entry["clips"]),
            "segments_failed": entry["failed"],
            "mean_score": float((weights * scores).sum() / total) if total else None,
            **{f"share_{p}": shares[p] for p in POLARITIES},
        })  # fmt: skip
    return summaries


def _without_each(batch: dict, names: list[str]) -> dict:
    """A one-clip batch repeated 1 + M times: row 0 as it is, row 1 + k with modality k marked absent."""
    rows = 1 + len(names)
    out: dict = {n: batch[n].expand(rows, -1, -1) for n in names}
    out["lengths"] = {n: batch["lengths"][n].expand(rows) for n in names}
    out["present"] = {}
    for k, n in enumerate(names):
        present = batch["present"][n].repeat(rows)
        present[1 + k] = False
        out["present"][n] = present
    return out


def _sentiment(out: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs (*) or logits (*, 3) → (scores (*), polarity class ids (*))."""
    if task == "regression":
        return out, sentiment_classes(out)
    probs = out.softmax(-1)
    return probs[..., 2] - probs[..., 0], out.argmax(-1)


@torch.no_grad()
def score_dataset(
    model: FusionModel, dataset: Dataset, durations: dict[str, float], progress: bool = True
) -> list[dict]:
    """Score every item of ``dataset`` (``ShardDataset``-style items); returns the per-clip records."""
    names, task, records = list(model.names), model.config.task, []
    for i in tqdm(range(len(dataset)), desc="score", unit="clip", disable=not progress):
        item = dataset[i]
        batch = collate([item])
        scores, classes = _sentiment(model(_without_each(batch, names)), task)  # (1 + M,)
        trajectory = model.trajectory(batch)
        steps, _ = _sentiment(trajectory.scores[0], task)
        valid = torch.isfinite(trajectory.fraction[0])
        duration = durations[item["id"]]
        seconds = (trajectory.fraction[0][valid] * duration).tolist()
        present = [n for n in names if item["present"][n]]
        records.append(
            {
                "clip_id": item["id"],
                "score": float(scores[0]),
                "polarity": POLARITIES[int(classes[0])],
                "label": None if math.isnan(item["label"]) else item["label"],
                "duration": duration,
                "present": present,
                "contributions": {
                    n: float(scores[0] - scores[1 + k]) if n in present else None for k, n in enumerate(names)
                },
                "trajectory": [[round(t, 4), s] for t, s in zip(seconds, steps[valid].tolist(), strict=True)],
            }
        )
    return records


def _cell(value: Any) -> Any:
    """A CSV cell safe to open in a spreadsheet: text starting like a formula (``=``, ``+``, ``-``, ``@``, tab,
    carriage return: clip names and transcripts come from users' files) is quoted with a leading apostrophe."""
    if value is None:
        return ""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def write_csv(scores: dict[str, Any], path: Path) -> None:
    """``scores.csv``, one row per clip (a segment of a recording, or a whole file): video_id, clip_id, start, end
    (seconds in the source file), text, score, polarity, present (modalities joined by "+"),
    contribution_<modality>."""
    names = scores["model"]["modalities"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "clip_id", "start", "end", "text", "score", "polarity", "present",
                         *[f"contribution_{n}" for n in names]])  # fmt: skip
        for clip in scores["clips"]:
            contributions = [clip["contributions"][n] for n in names]
            cells = [clip["video_id"], clip["clip_id"], clip["start"], clip["end"], clip["text"], clip["score"],
                     clip["polarity"], "+".join(clip["present"]), *contributions]  # fmt: skip
            writer.writerow([_cell(c) for c in cells])


def write_recordings_csv(recordings: list[dict[str, Any]], path: Path) -> None:
    """``recordings.csv``: one row per recording (``recording_summaries``)."""
    columns = ["video_id", "duration", "segments_scored", "segments_failed", "mean_score",
               *[f"share_{p}" for p in POLARITIES]]  # fmt: skip
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in recordings)


def _our_output(path: Path, out: Path) -> bool:
    """Whether ``path`` is something ``score`` wrote into ``out`` (its report images, its cache): an ``--out`` inside
    the input folder must not feed the next run its own output."""
    path, out = path.resolve(), out.resolve()
    return path.is_relative_to(out / "cache") or (path.parent == out and path.name in IMAGES)


def score(
    input_path: str | Path,
    run: str | Path,
    out: str | Path,
    workers: int | None = None,
    progress: bool = True,
    segment: SegmentConfig | None = None,
) -> dict[str, Any]:
    """Extract the clips of ``input_path`` like the run's training data, score them and write ``out`` (see the
    module doc); returns the content of ``scores.json``. Clips that fail extraction are listed, not scored. Long
    recordings are cut into utterances first (``segment``, default: files longer than 30 s) and scored per segment;
    ``recordings.csv`` sums each recording up."""
    out = Path(out)
    trained = open_run(run)
    extraction = recorded_extraction(trained.meta, trained.checkpoint)
    config = check_extractors(extraction, trained.model.names)
    clips, source = find_clips(input_path)
    clips = [c for c in clips if c.path is None or not _our_output(Path(c.path), out)]
    if not clips:
        raise NoMediaError(f"{input_path} holds no media besides what `cmamba score` wrote into {out}")
    install_models_on_first_use(config)
    cache = out / "cache"
    segment = segment or SegmentConfig()
    # the cache is score's own: one made for another run's extractors is replaced, not refused
    summary = run_extraction(clips, cache, config, workers, source=source, progress=progress, segment=segment,
                             overwrite=True)  # fmt: skip
    dataset, info = trained.read(cache, require_labels=False), _clip_info(cache)
    records = score_dataset(trained.model, dataset, {k: v["duration"] for k, v in info.items()}, progress)
    for record in records:
        row = info[record["clip_id"]]
        record.update(video_id=row["video_id"], start=row["start"], end=row["end"], text=row["text_raw"])
    failed = read_errors(cache)
    scores = {
        "format": "cmamba-scores",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": source,
        "model": _run_info(trained),
        "extraction": {
            "config": config.to_dict(),
            "align": extraction["align"],
            "clock_rate": extraction["clock_rate"],
            "extractors": extraction.get("extractors", {}),
            "run": {key: getattr(summary, key) for key in RUN_FIELDS},
        },
        "polarity_rule": POLARITY_RULE,
        "trajectory_time": TRAJECTORY_TIME,
        "versions": tool_versions(),
        "segment": dataclasses.asdict(segment),
        "clips": records,
        "recordings": recording_summaries(records, failed, info),
        "failed": failed,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_csv(scores, out / "scores.csv")
    write_recordings_csv(scores["recordings"], out / "recordings.csv")
    (out / "scores.json").write_text(json_text(scores))
    write_report(scores, out)
    return scores
