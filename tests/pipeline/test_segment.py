"""Utterance segmentation of long recordings, and segments as clips of the extraction graph (issue #11)."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from cmamba.app.interop import export_cache
from cmamba.app.runs import train_cache
from cmamba.datasets.media import mux_clip
from cmamba.extractors.decode import read_audio
from cmamba.fusion.config import TrainConfig
from cmamba.pipeline.cache.store import read_errors, read_manifest, shard_paths
from cmamba.pipeline.config import ExtractionConfig, SegmentConfig
from cmamba.pipeline.layout import folder_clips
from cmamba.pipeline.run import run_extraction
from cmamba.pipeline.segment import group, segment_recording

MEDIA = Path(__file__).parents[1] / "fixtures" / "media"
RATE = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """arctic_a0007 without its leading and trailing silence: 3 s of continuous speech."""
    return read_audio(MEDIA / "arctic_a0007.wav", RATE)[int(0.45 * RATE) : int(3.45 * RATE)]


@pytest.fixture(scope="module")
def three_minutes(speech, tmp_path_factory) -> tuple[Path, list[tuple[float, float]]]:
    """3 minutes of back-to-back speech with three inserted 1 s pauses; returns (wav, the pauses in seconds)."""
    parts, pauses, t = [], [], 0.0
    for i in range(60):
        if i in (15, 30, 45):
            parts.append(np.zeros(RATE, np.float32))
            pauses.append((t, t + 1.0))
            t += 1.0
        parts.append(speech)
        t += len(speech) / RATE
    path = tmp_path_factory.mktemp("long") / "recording.wav"
    sf.write(path, np.concatenate(parts), RATE)
    return path, pauses


def test_a_recording_is_cut_at_its_pauses(three_minutes):
    path, pauses = three_minutes
    cut = segment_recording(path, SegmentConfig(mode="vad"))
    assert cut.source == "vad" and cut.dropped == 0
    starts, ends = np.array(cut.intervals).T
    assert np.all(ends[:-1] <= starts[1:]) and np.all(ends - starts <= 20.0 + 1e-9) and np.all(ends - starts >= 1.0)
    for begin, finish in pauses:  # a segment ends where the pause begins and the next starts where it ends
        assert np.min(np.abs(ends - begin)) <= 0.3 and np.min(np.abs(starts - finish)) <= 0.3
        assert not np.any((starts < begin + 0.5) & (ends > finish - 0.5)), "a segment spans an inserted pause"
    assert segment_recording(path, SegmentConfig(mode="vad")) == cut  # the same input gives the same segments


def test_grouping_rules_keep_segments_utterance_sized():
    config = SegmentConfig(min_seconds=1.0, max_seconds=5.0, min_pause=0.3, fixed_seconds=5.0)
    words = np.array([[0.0, 0.4], [0.5, 0.9], [1.0, 1.6], [3.0, 3.2], [6.0, 6.5], [6.6, 9.0], [9.05, 12.5]])
    segments, dropped = group(words, config)
    # [0, 1.6] stands; [3.0, 3.2] is too short and joins it (within max); [6.0, 12.5] is too long: it splits at its
    # longest internal pause (6.5 -> 6.6 leaves 0.5 s on the left, too short; 9.0 -> 9.05 is chosen)
    assert segments == ((0.0, 3.2), (6.0, 9.0), (9.05, 12.5)) and dropped == 0
    lonely = np.array([[0.0, 4.8], [10.0, 10.4], [20.0, 25.0]])
    assert group(lonely, config) == (((0.0, 4.8), (20.0, 25.0)), 1)  # 0.4 s alone: dropped and counted
    no_pause = np.array([[0.0, 12.0]])
    assert group(no_pause, config)[0] == ((0.0, 4.0), (4.0, 8.0), (8.0, 12.0))  # no pause: even split


def test_fallbacks_name_their_reason(tmp_path, speech):
    silent = segment_recording(MEDIA / "carphone_pristine.mp4", SegmentConfig(mode="vad"))
    assert silent.source == "fixed" and "no audio stream" in silent.reason and len(silent.intervals) == 1
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros(45 * RATE, np.float32), RATE)
    cut = segment_recording(quiet, SegmentConfig(mode="vad"))
    assert cut.source == "fixed" and "no speech found" in cut.reason
    assert cut.intervals[0][0] == 0.0 and cut.intervals[-1][1] == pytest.approx(45.0) and len(cut.intervals) == 4


def test_a_timed_transcript_decides_the_segments(tmp_path, speech):
    path = tmp_path / "talk.wav"
    sf.write(path, np.concatenate([speech, np.zeros(RATE, np.float32), speech]), RATE)
    (tmp_path / "talk.srt").write_text(
        "1\n00:00:00,000 --> 00:00:03,000\nand you always want to see it\n\n"
        "2\n00:00:04,000 --> 00:00:07,000\nin the superlative degree\n\n"
        "3\n00:01:00,000 --> 00:01:02,000\nof another recording\n"  # past the media's end (9 s)
    )
    cut = segment_recording(path, SegmentConfig(mode="auto"))
    assert cut.source == "transcript" and cut.intervals == ((0.0, 3.0), (4.0, 7.0))
    assert cut.info["words_past_media"] == 3  # counted, and recorded with the cache's segmentation


@pytest.fixture(scope="module")
def recordings(talking_clip, tmp_path_factory) -> Path:
    """Two 36 s talking-face recordings (one for train, one for valid) in a labelled folder."""
    root = tmp_path_factory.mktemp("recordings")
    sentence = "and you always want to see it in the superlative degree".split()
    words = [{"word": w, "start": 4.0 * i + 0.5 + 0.25 * k, "end": 4.0 * i + 0.7 + 0.25 * k}
             for i in range(9) for k, w in enumerate(sentence)]  # fmt: skip
    for name in ("monday", "tuesday"):
        mux_clip(MEDIA / "carphone_pristine.mp4", MEDIA / "arctic_a0007.wav", root / f"{name}.mp4", loops=9)
        (root / f"{name}.json").write_text(json.dumps(words))  # the recording's timed transcript
    (root / "labels.csv").write_text("clip_id,label,split\nmonday,1.0,train\ntuesday,-1.0,valid\n")
    return root


@pytest.mark.filterwarnings("ignore::RuntimeWarning:numpy")  # copies of one clip: correlation is undefined
def test_segments_are_clips_a_segmented_cache_trains_and_exports(recordings, tmp_path):
    cache = tmp_path / "cache"
    config = ExtractionConfig(use_asr=False, modalities=("audio", "video", "text"))
    segment = SegmentConfig(mode="vad")
    summary = run_extraction(folder_clips(recordings), cache, config, workers=0, progress=False, segment=segment)
    rows = [r for p in shard_paths(cache) for r in pq.read_table(p).to_pylist()]
    manifest = read_manifest(cache)
    for name in ("monday", "tuesday"):
        mine = sorted((r for r in rows if r["video_id"] == name), key=lambda r: r["clip_id"])
        assert [r["clip_id"] for r in mine] == [f"{name}$_${i:04d}" for i in range(len(mine))] and len(mine) >= 5
        starts, ends = np.array([r["start"] for r in mine]), np.array([r["end"] for r in mine])
        assert np.all(ends[:-1] <= starts[1:]) and np.all(ends - starts <= 20.0)
        assert all(math.isclose(r["duration"], r["end"] - r["start"]) for r in mine)
        assert all(r["video_present"] and r["audio_present"] for r in mine)
        assert all(abs(len(r["video_timestamps"]) - 10 * r["duration"]) <= 1 for r in mine)  # 10 Hz, its range
        assert manifest["segment"]["recordings"][name]["source"] == "vad"
        for r in mine:  # each segment has the words of the recording's transcript that start inside it
            assert r["text_present"] and all(0 <= s < r["duration"] for s in r["word_start"])
    again = run_extraction(folder_clips(recordings), cache, config, workers=0, progress=False, segment=segment)
    assert again.extracted == 0 and again.cached == summary.extracted + summary.cached  # exactly once, cached
    run = tmp_path / "run"
    recipe = TrainConfig(dataset="mosi", epochs=1, batch_size=4, progress=False)
    result = train_cache(cache, run, model={"d_model": 16, "d_state": 4, "n_layers": 1}, train=recipe, seeds=(1,))
    assert math.isfinite(result["valid"]["MAE"]["mean"])
    out = tmp_path / "mmsa.pkl"
    export_cache(cache, out)
    with open(out, "rb") as handle:
        exported = pickle.load(handle)  # our own file, just written
    assert {k: len(v["id"]) for k, v in exported.items() if k in ("train", "valid")} == {
        "train": sum(r["split"] == "train" for r in rows),
        "valid": sum(r["split"] == "valid" for r in rows),
    }


def damage_audio(source: Path, target: Path, start: float, end: float) -> None:
    """A copy of ``source`` whose audio packets in [start, end) seconds are overwritten with random bytes (as a bad
    sector or an interrupted copy leaves them); everything else is byte-identical."""
    import av

    data, rng = bytearray(source.read_bytes()), np.random.default_rng(0)
    with av.open(str(source)) as container:
        for packet in container.demux(container.streams.audio[0]):
            if packet.pts is not None and start <= float(packet.pts * packet.time_base) < end:
                data[packet.pos : packet.pos + packet.size] = rng.integers(0, 256, packet.size, np.uint8).tobytes()
    target.write_bytes(bytes(data))


def test_a_damaged_stretch_fails_only_the_segments_it_touches(recordings, tmp_path):
    folder = tmp_path / "damaged"
    folder.mkdir()
    damage_audio(recordings / "monday.mp4", folder / "monday.mp4", 12.0, 14.0)
    config = ExtractionConfig(use_asr=False, modalities=("audio", "video", "text"))
    cache = tmp_path / "cache"
    summary = run_extraction(folder_clips(folder), cache, config, workers=0, progress=False,
                             segment=SegmentConfig(mode="vad"))  # fmt: skip
    cut = read_manifest(cache)["segment"]["recordings"]["monday"]
    damaged = cut["info"]["damaged"]
    assert damaged and all(a <= 14.0 and b >= 12.0 for a, b in damaged) and "damaged" in cut["reason"]
    failed = {e["clip_id"]: e["reason"] for e in read_errors(cache)}
    rows = {r["clip_id"]: r for p in shard_paths(cache) for r in pq.read_table(p).to_pylist()}
    assert failed and summary.clips == len(failed) + len(rows) and len(rows) >= 5
    assert all("audio stream is damaged at 1" in reason for reason in failed.values())
    for r in rows.values():  # every segment clear of the damage has its features (the AAC pre-roll aside)
        assert r["audio_present"] and r["video_present"] and (r["end"] <= 12.0 or r["start"] >= 14.0)


KILL_SCRIPT = """
import sys
from cmamba.pipeline.config import ExtractionConfig, SegmentConfig
from cmamba.pipeline.layout import folder_clips
from cmamba.pipeline.run import run_extraction
run_extraction(folder_clips(sys.argv[1]), sys.argv[2], ExtractionConfig(use_asr=False), workers=2, progress=False,
               segment=SegmentConfig(mode="vad"))
"""


def test_a_killed_run_over_a_long_recording_resumes_with_every_segment_exactly_once(recordings, tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(recordings / "monday.mp4", folder / "monday.mp4")
    shutil.copy(recordings / "monday.json", folder / "monday.json")
    out = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(folder), str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("parts/*/*/*.npz"))) < 6:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-run
    proc.wait()
    done_before = len(list(out.glob("parts/*/*/*.npz")))
    assert done_before >= 6 and not (out / "manifest.json").exists()
    assert len(list(out.glob("parts/segments/*/*.json"))) == 1  # the segmentation was cached before the kill
    config = ExtractionConfig(use_asr=False)
    summary = run_extraction(
        folder_clips(folder), out, config, workers=0, progress=False, segment=SegmentConfig(mode="vad")
    )
    assert summary.cached >= done_before - 2 and summary.extracted + summary.cached == 3 * summary.clips
    assert done_before < 3 * summary.clips, "the kill should land mid-run"
    ids = [r["clip_id"] for p in shard_paths(out) for r in pq.read_table(p, columns=["clip_id"]).to_pylist()]
    assert sorted(ids) == [f"monday$_${i:04d}" for i in range(summary.clips)]  # every segment, exactly once
