"""The Dask extraction pipeline end to end: shards + manifest + errors, resume, exactly-once after kill -9, a
changed config re-extracting only its modality, the lock, and the training reader over the result."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from cmamba.app.runs import open_run, train_cache
from cmamba.datasets.media import distinct_copy
from cmamba.datasets.shards import ShardDataset
from cmamba.errors import CacheError, OutputExistsError
from cmamba.extractors.audio import AudioConfig
from cmamba.extractors.opensmile import EGEMAPS_LLD_NAMES, OpenSmileConfig, OpenSmileEgemaps
from cmamba.extractors.text import MINILM_SHA256
from cmamba.fusion.batch import collate
from cmamba.fusion.config import TrainConfig
from cmamba.pipeline.cache.store import cache_lock, read_errors, read_manifest, shard_paths
from cmamba.pipeline.config import ExtractionConfig
from cmamba.pipeline.layout import folder_clips
from cmamba.pipeline.run import run_extraction

MEDIA = Path(__file__).parents[1] / "fixtures" / "media"
CONFIG = ExtractionConfig(use_asr=False)


@pytest.fixture(scope="module")
def folder(talking_clip, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    (root / "session1").mkdir()
    shutil.copy(talking_clip, root / "session1" / "talk.mp4")
    shutil.copy(MEDIA / "carphone_pristine.mp4", root / "session1" / "silent.mp4")
    shutil.copy(MEDIA / "arctic_a0007.wav", root / "speech.wav")
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    text = "and you always want to see it in the superlative degree"
    rows = [f"session1/talk,1.5,train,{text}", f"session1/silent,-0.5,valid,{text}", f"speech,0.25,test,{text}"]
    (root / "labels.csv").write_text("clip_id,label,split,text\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def cache(folder, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("cache")
    return out, run_extraction(folder_clips(folder), out, CONFIG, workers=0, clips_per_shard=2, progress=False)


def rows_by_id(out: Path) -> dict[str, dict]:
    rows = [r for path in shard_paths(out) for r in pq.read_table(path).to_pylist()]
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a clip appears twice"
    return {r["clip_id"]: r for r in rows}


def test_shards_manifest_and_errors(cache):
    out, summary = cache
    assert summary.clips == 4 and summary.failed == {"open": 1} and summary.cached == 0
    manifest = read_manifest(out)
    assert manifest["dims"] == {"text": 384, "audio": 47, "video": 58}
    assert manifest["counts"] == {"clips": 3, "failed": 1, "by_split": {"test": 1, "train": 1, "valid": 1}}
    assert (
        manifest["extractors"]["video"]["version"] == "1" and len(manifest["extractors"]["face_model"]["sha256"]) == 64
    )
    assert manifest["extractors"]["text_model"]["sha256"] == MINILM_SHA256
    assert manifest["config"]["use_asr"] is False and manifest["versions"]["dask"]
    assert len(manifest["feature_names"]["video"]) == 58 and manifest["shards"] == [
        "shards/shard-00000.parquet",
        "shards/shard-00001.parquet",
    ]
    errors = read_errors(out)
    assert [(e["clip_id"], e["stage"]) for e in errors] == [("broken", "open")]
    rows = rows_by_id(out)
    assert set(rows) == {"session1/talk", "session1/silent", "speech"}
    talk = rows["session1/talk"]
    assert talk["label"] == 1.5 and talk["split"] == "train" and talk["video_length"] == len(talk["video_values"])
    assert len(talk["words"]) == 11 and talk["word_timing"] == "estimated" and len(talk["token_ids"]) > 11
    assert rows["speech"]["video_present"] is False and rows["speech"]["video_absent"] == "no video stream"
    assert rows["session1/silent"]["audio_absent"] == "no audio stream"
    frame = pd.read_parquet(out / "shards")  # plain Parquet: pandas reads the folder
    talk_row = frame.set_index("clip_id").loc["session1/talk"]
    assert len(frame) == 3 and np.asarray(talk_row["audio_values"][0]).shape == (47,)


def test_rerun_reuses_everything_and_writes_the_same_shards(cache, folder):
    out, _ = cache
    before = rows_by_id(out)
    summary = run_extraction(folder_clips(folder), out, CONFIG, workers=0, clips_per_shard=2, progress=False)
    assert summary.cached == 9 and summary.extracted == 3  # only the broken file's 3 modalities are retried
    after = rows_by_id(out)
    assert before.keys() == after.keys()
    for clip_id, row in before.items():
        assert np.array_equal(np.asarray(row["audio_values"]), np.asarray(after[clip_id]["audio_values"]))


def test_changing_one_config_re_extracts_only_that_modality(cache, folder, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(cache[0], out)
    config = replace(CONFIG, audio=AudioConfig(preset="sims33"))
    with pytest.raises(OutputExistsError, match="extracted with another config"):  # never replaced silently
        run_extraction(folder_clips(folder), out, config, workers=0, clips_per_shard=2, progress=False)
    summary = run_extraction(folder_clips(folder), out, config, workers=0, clips_per_shard=2, progress=False,
                             overwrite=True)  # fmt: skip
    assert summary.extracted == 3 + 3 and summary.cached == 9 - 3  # the audio of the 3 readable clips + broken
    assert read_manifest(out)["dims"]["audio"] == 33


def test_a_second_run_on_a_locked_cache_is_refused(cache, folder):
    with cache_lock(cache[0]), pytest.raises(CacheError, match="another run is using"):
        run_extraction(folder_clips(folder), cache[0], CONFIG, workers=0, progress=False)


def test_reader_alignment_modes_and_training_batches(cache):
    out, _ = cache
    native = ShardDataset(out, split="train")
    assert len(native) == 1 and native.dims() == {"text": 384, "audio": 47, "video": 58}
    item = native[0]
    assert item["label"] == 1.5 and item["features"]["audio"].shape[1] == 47 and all(item["present"].values())
    word = ShardDataset(out, split="train", align="word")[0]["features"]
    assert {x.shape[0] for x in word.values()} == {11}
    clock = ShardDataset(out, align="clock", max_len=20)
    batch = collate([clock[i] for i in range(len(clock))])
    assert batch["audio"].shape == (3, 20, 47) and batch["present"]["video"].tolist().count(False) == 1
    assert torch.isfinite(batch["text"]).all()


KILL_SCRIPT = """
import sys
from cmamba.pipeline.config import ExtractionConfig
from cmamba.pipeline.layout import folder_clips
from cmamba.pipeline.run import run_extraction
run_extraction(folder_clips(sys.argv[1]), sys.argv[2], ExtractionConfig(use_asr=False), workers=2, clips_per_shard=2,
               progress=False)
"""


def start_run_in_background(folder: Path, tmp_path: Path, parts: int) -> tuple[subprocess.Popen, Path, Path]:
    """A 2-worker extraction of 6 distinct clips in its own process group, returned once ``parts`` parts exist."""
    many = tmp_path / "many"
    many.mkdir()
    for i in range(6):
        distinct_copy(folder / "session1" / "talk.mp4", many / f"clip{i}.mp4", i)
    out = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(many), str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("parts/*/*/*.npz"))) < parts:
        time.sleep(0.2)
    return proc, many, out


def test_killed_run_completes_on_rerun_with_every_clip_exactly_once(folder, tmp_path):
    proc, many, out = start_run_in_background(folder, tmp_path, parts=4)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, like a crash
    proc.wait()
    done_before = len(list(out.glob("parts/*/*/*.npz")))
    assert 4 <= done_before < 18, "the kill should land mid-run"
    assert not (out / "manifest.json").exists()
    summary = run_extraction(folder_clips(many), out, CONFIG, workers=0, clips_per_shard=2, progress=False)
    assert summary.cached >= done_before - 1 and summary.extracted + summary.cached == 18
    assert set(rows_by_id(out)) == {f"clip{i}" for i in range(6)}
    assert json.loads((out / "manifest.json").read_text())["counts"]["clips"] == 6


def test_unwritable_output_is_a_clean_error(folder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    with pytest.raises(CacheError, match="cannot write the cache folder"):
        run_extraction(folder_clips(folder), blocker / "cache", CONFIG, workers=0, progress=False)


def test_a_full_disk_fails_items_not_the_run_and_the_next_run_completes(folder, tmp_path, monkeypatch):
    import errno

    import cmamba.pipeline.run as run_module

    def disk_full(path, result):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    out = tmp_path / "cache"
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "save_part", disk_full)  # workers=0: the tasks run in this process
        summary = run_extraction(folder_clips(folder), out, CONFIG, workers=0, progress=False)
    assert summary.failed == {"cache": 3, "open": 1}
    assert all("No space left" in e["reason"] for e in read_errors(out) if e["stage"] == "cache")
    summary = run_extraction(folder_clips(folder), out, CONFIG, workers=0, progress=False)
    assert summary.failed == {"open": 1} and set(rows_by_id(out)) == {"session1/talk", "session1/silent", "speech"}


def _worker_processes(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes() if int(fields[1]) == pid else b""
        except OSError:  # the process ended meanwhile
            continue
        if b"spawn_main" in command and b"resource_tracker" not in command:  # a Dask worker process
            found.append(int(stat.parent.name))
    return found


def test_a_killed_worker_is_replaced_and_the_run_completes(folder, tmp_path):
    proc, _, out = start_run_in_background(folder, tmp_path, parts=2)
    workers = _worker_processes(proc.pid)
    assert len(workers) == 2, "the local cluster's 2 worker processes are children of the driver"
    os.kill(workers[0], signal.SIGKILL)  # Dask's nanny restarts it and the scheduler reruns its tasks
    assert proc.wait(timeout=300) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["clips"] == 6 and manifest["counts"]["failed"] == 0
    assert set(rows_by_id(out)) == {f"clip{i}" for i in range(6)}


@pytest.mark.filterwarnings("ignore::RuntimeWarning:numpy")  # one clip per split: Pearson correlation is undefined
def test_a_cache_of_the_opensmile_extractor_extracts_and_trains(folder, tmp_path):
    """The second audio extractor runs through the unchanged pipeline (its own module and registration only)."""
    config = ExtractionConfig(audio=OpenSmileConfig(), use_asr=False)
    out = tmp_path / "cache"
    summary = run_extraction(folder_clips(folder), out, config, workers=0, progress=False)
    manifest = read_manifest(out)
    assert summary.failed == {"open": 1}  # broken.mp4 only
    assert manifest["dims"]["audio"] == 25 and manifest["feature_names"]["audio"] == list(EGEMAPS_LLD_NAMES)
    assert manifest["extractors"]["audio"]["name"] == "opensmile-egemaps"
    assert manifest["config"]["audio"] == {"extractor": "opensmile-egemaps", "sample_rate": 16000}
    assert all(len(manifest["extractors"][role]["sha256"]) == 64 for role in OpenSmileEgemaps().model_files())
    assert ExtractionConfig.from_dict(manifest["config"]) == config
    rows = rows_by_id(out)
    speech = np.stack(rows["speech"]["audio_values"])
    assert speech.shape == (401, 25) and np.isfinite(speech).all() and (speech.std(0) > 0).all()
    assert rows["session1/silent"]["audio_absent"] == "no audio stream"
    run = tmp_path / "run"
    recipe = TrainConfig(dataset="mosi", epochs=2, batch_size=2, progress=False)
    result = train_cache(out, run, model={"d_model": 16, "d_state": 4, "n_layers": 1}, train=recipe, seeds=(1111,))
    assert math.isfinite(result["test"]["MAE"]["mean"])
    assert (run / "seed-1111" / "best" / "model.safetensors").is_file()
    trained = open_run(run)
    assert trained.model.config.modalities["audio"] == 25
    assert trained.extraction["extractors"]["audio"]["name"] == "opensmile-egemaps"
