"""``score`` end to end on real clips (extract + train a tiny run, score a folder with a corrupt file, resume from
the cache, refuse mismatched or imported-feature checkpoints) and ``FusionModel.trajectory`` on random inputs."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmamba.app.extract import extract
from cmamba.app.runs import evaluate_run, open_run, train_cache
from cmamba.app.score import score
from cmamba.datasets.media import distinct_copy
from cmamba.datasets.mmsa import import_mmsa
from cmamba.errors import SchemaMismatchError, UnscorableCheckpointError
from cmamba.fusion.checkpoint import load_checkpoint, save_checkpoint
from cmamba.fusion.config import FUSIONS, FusionConfig, TrainConfig
from cmamba.fusion.model import build_model
from cmamba.pipeline.config import ExtractionConfig
from tests.datasets.mmsa.test_mmsa import mmsa_pickle

TEXT = "and you always want to see it in the superlative degree"
TINY = {"d_model": 16, "d_state": 4, "n_layers": 1}
RECIPE = TrainConfig(dataset="mosi", epochs=2, batch_size=2, progress=False)
PNG = b"\x89PNG\r\n\x1a\n"
# Copies of one clip get one prediction, so the validation metrics' Pearson correlation is undefined (numpy warns).
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:numpy")


@pytest.fixture(scope="module")
def run(talking_clip, tmp_path_factory) -> Path:
    """A one-seed run of a tiny model trained on four labelled copies of the talking clip."""
    root = tmp_path_factory.mktemp("labelled")
    rows = [("c0", 1.5, "train"), ("c1", -0.5, "train"), ("c2", 0.5, "valid"), ("c3", -1.0, "test")]
    for tag, (clip_id, _, _) in enumerate(rows):
        distinct_copy(talking_clip, root / f"{clip_id}.mp4", tag)
    lines = [f"{clip_id},{label},{split},{TEXT}" for clip_id, label, split in rows]
    (root / "labels.csv").write_text("clip_id,label,split,text\n" + "\n".join(lines) + "\n")
    cache, out = root.parent / "train-cache", root.parent / "run"
    extract(root, cache, config=ExtractionConfig(use_asr=False), workers=0, progress=False)
    train_cache(cache, out, model=TINY, train=RECIPE, seeds=(1111,))
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "illustrative": True}))
    return out


@pytest.fixture(scope="module")
def scored(run, talking_clip, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(clips folder, output folder, scores) for two good clips (only a has a transcript) and a corrupt file."""
    folder = tmp_path_factory.mktemp("new-clips")
    distinct_copy(talking_clip, folder / "a.mp4", 10)
    (folder / "a.txt").write_text(TEXT)
    distinct_copy(talking_clip, folder / "b.mp4", 11)
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    out = folder.parent / "scored"
    return folder, out, score(folder, run, out, workers=0, progress=False)


def test_score_writes_scores_and_a_report(scored):
    _, out, scores = scored
    assert json.loads((out / "scores.json").read_text()) == json.loads(json.dumps(scores))
    names = scores["model"]["modalities"]
    assert sorted(names) == ["audio", "text", "video"] and scores["model"]["seed"] == 1111
    assert scores["extraction"]["config"]["use_asr"] is False and scores["versions"]["torch"]
    assert [(f["clip_id"], f["stage"]) for f in scores["failed"]] == [("broken", "open")]
    a, b = scores["clips"]
    assert (a["clip_id"], b["clip_id"]) == ("a", "b") and a["label"] is None
    assert sorted(a["present"]) == sorted(names) and sorted(b["present"]) == ["audio", "video"]  # b: no transcript
    assert b["contributions"]["text"] is None  # nothing to take away
    for clip in (a, b):
        assert math.isfinite(clip["score"]) and clip["polarity"] == ("positive" if clip["score"] > 0 else "negative")
        assert all(math.isfinite(clip["contributions"][n]) for n in clip["present"])
        times = [t for t, _ in clip["trajectory"]]
        assert times == sorted(times) and times[-1] == pytest.approx(clip["duration"], abs=1e-3)
        assert clip["trajectory"][-1][1] == pytest.approx(clip["score"], abs=1e-4)
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["clip_id"] for r in rows] == ["a", "b"]
    assert [r["present"] for r in rows] == ["text+audio+video", "audio+video"]
    assert rows[1]["contribution_text"] == "" and float(rows[1]["contribution_audio"]) == b["contributions"]["audio"]
    page = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 3 and "<script" not in page and "http" not in page
    for name in images:
        assert (out / name).read_bytes().startswith(PNG)
    assert "Illustrative only" in page and "broken" in page and scores["failed"][0]["reason"][:20] in page


def test_rescoring_extracts_only_what_failed(scored, run):
    folder, out, first = scored
    again = score(folder, run, out, workers=0, progress=False)
    assert again["extraction"]["run"]["cached"] == 6  # both good clips' three modalities come from the cache
    assert again["extraction"]["run"]["extracted"] == 3  # only the corrupt file is tried again
    assert [c["score"] for c in again["clips"]] == [c["score"] for c in first["clips"]]


def test_a_changed_extractor_version_is_refused(run, talking_clip, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    meta_path = copy / "seed-1111" / "best" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["schema"]["extraction"]["extractors"]["audio"]["version"] = "0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SchemaMismatchError, match=r"modality 'audio' was extracted for training by .*'version': '0'"):
        score(talking_clip, copy, tmp_path / "out", workers=0, progress=False)
    assert not (tmp_path / "out").exists()  # refused before any extraction


def test_a_model_trained_on_imported_mmsa_features_is_refused(talking_clip, tmp_path):
    mmsa_pickle(tmp_path / "unaligned_39.pkl", aligned=False)
    import_mmsa(tmp_path / "unaligned_39.pkl", tmp_path / "cache")
    train_cache(tmp_path / "cache", tmp_path / "run", model=TINY, train=RECIPE, seeds=(1111,))
    with pytest.raises(UnscorableCheckpointError, match=r"imported features .* raw clips cannot be scored"):
        score(talking_clip, tmp_path / "run", tmp_path / "out", workers=0, progress=False)


DIMS = {"text": 12, "audio": 5, "vision": 7}


def test_a_model_trained_on_in_memory_features_is_refused(talking_clip, tmp_path):
    save_checkpoint(tmp_path / "run" / "best", build_model(FusionConfig(DIMS, d_model=16, d_state=4, n_layers=1)))
    with pytest.raises(UnscorableCheckpointError, match="records no feature extraction"):
        score(talking_clip, tmp_path / "run", tmp_path / "out", workers=0, progress=False)


def random_batch(lengths: dict[str, list[int]], seed: int = 0) -> dict:
    """Right-padded random features with the given valid lengths per modality and sample."""
    g = torch.Generator().manual_seed(seed)
    batch: dict = {n: torch.randn(len(ls), max(ls), DIMS[n], generator=g) for n, ls in lengths.items()}
    batch["lengths"] = {n: torch.tensor(ls) for n, ls in lengths.items()}
    return batch


@pytest.mark.parametrize("pooling", ["max", "mean"])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_trajectory_ends_at_the_forward_output(fusion, pooling):
    torch.manual_seed(0)
    model = build_model(FusionConfig(DIMS, fusion=fusion, pooling=pooling, d_model=16, d_state=8, n_heads=2)).eval()
    # Unequal lengths are resampled onto seq_len steps; equal padded lengths pass through with their own prefix.
    resampled = random_batch({"text": [9, 4, 6], "audio": [20, 13, 20], "vision": [14, 14, 3]})
    resampled["present"] = {"vision": torch.tensor([True, False, True])}
    aligned = random_batch({"text": [11, 6, 3], "audio": [11, 4, 3], "vision": [11, 6, 2]})
    for batch, last in ((resampled, [49, 49, 49]), (aligned, [10, 5, 2])):
        with torch.no_grad():
            out, trajectory = model(batch), model.trajectory(batch)
        steps = torch.arange(3)
        torch.testing.assert_close(trajectory.scores[steps, last], out, atol=1e-5, rtol=1e-5)
        assert torch.equal(trajectory.fraction[steps, last], torch.ones(3))
        after = torch.arange(trajectory.fraction.shape[1])[None] > torch.tensor(last)[:, None]
        assert trajectory.scores[after].isnan().all() and trajectory.scores[~after].isfinite().all()
        assert trajectory.fraction[after].isnan().all()


def test_trajectory_is_causal_and_gives_class_logits():
    torch.manual_seed(0)
    model = build_model(FusionConfig(DIMS, d_model=16, d_state=8, n_layers=2, task="classification")).eval()
    batch = random_batch({n: [12, 12] for n in DIMS})
    later = {**batch, **{n: batch[n].clone() for n in DIMS}}
    for n in DIMS:
        later[n][:, 7:] += 5.0  # change only steps 7..11
    with torch.no_grad():
        before, after = model.trajectory(batch).scores, model.trajectory(later).scores
    assert before.shape == (2, 12, 3)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_evaluate_reads_a_cache_on_the_checkpoint_s_own_time_axis(run, tmp_path):
    """evaluate opens a run as score does: a checkpoint trained on a 4 Hz clock grid is evaluated on 4 Hz rows,
    whatever the cache's own default grid (10 Hz here)."""
    cache = run.parent / "train-cache"
    model, meta = load_checkpoint(run / "seed-1111" / "best")
    meta["schema"]["extraction"].update(align="clock", clock_rate=4.0)
    save_checkpoint(tmp_path / "best", model, meta["schema"])
    shutil.copy(run / "seed-1111" / "config.json", tmp_path / "config.json")
    data = open_run(tmp_path).read(cache, split="test")
    assert (data.align, data.clock_rate) == ("clock", 4.0)
    assert data[0]["features"]["audio"].shape[0] == 17  # 4.02 s in 0.25 s cells (the cache's 10 Hz grid: 41 rows)
    metrics = evaluate_run(tmp_path, cache, "test")
    assert math.isfinite(metrics["MAE"])


def test_a_long_recording_is_scored_per_segment_with_a_recording_summary(run, tmp_path):
    from cmamba.datasets.media import mux_clip
    from cmamba.pipeline.config import SegmentConfig

    media = Path(__file__).parents[1] / "fixtures" / "media"
    folder = tmp_path / "recordings"
    folder.mkdir()
    mux_clip(media / "carphone_pristine.mp4", media / "arctic_a0007.wav", folder / "interview.mp4", loops=9)
    out = tmp_path / "scores"
    scores = score(folder, run, out, workers=0, progress=False, segment=SegmentConfig())  # auto: 36 s > 30 s
    clips = scores["clips"]
    assert len(clips) >= 5 and all(c["video_id"] == "interview" and "$_$" in c["clip_id"] for c in clips)
    starts, ends = np.array([c["start"] for c in clips]), np.array([c["end"] for c in clips])
    assert np.all(np.diff(starts) > 0) and np.all(ends[:-1] <= starts[1:]) and ends[-1] <= 36.5
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:5] == ["video_id", "clip_id", "start", "end", "text"] and len(rows) == len(clips)
    with open(out / "recordings.csv", newline="") as f:
        (recording,) = list(csv.DictReader(f))
    weights = ends - starts
    expected = float((weights * np.array([c["score"] for c in clips])).sum() / weights.sum())
    assert recording["video_id"] == "interview" and int(recording["segments_scored"]) == len(clips)
    assert float(recording["mean_score"]) == pytest.approx(expected)
    shares = [float(recording[f"share_{p}"]) for p in ("negative", "neutral", "positive")]
    assert sum(shares) == pytest.approx(1.0)
    page = (out / "report.html").read_text()
    assert '<img src="timelines.png"' in page and (out / "timelines.png").read_bytes().startswith(PNG)
    assert "Recordings: segment scores over time" in page and "interview" in page
