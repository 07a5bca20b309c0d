"""The `cmamba` commands end to end, each through a subprocess as a user runs them, on the real-media fixtures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmamba.datasets.media import distinct_copy

MEDIA = Path(__file__).parent / "fixtures" / "media"
SENTENCE = "and you always want to see it in the superlative degree"
COMMANDS = ("extract", "prepare", "import-mmsa", "export", "train", "evaluate", "score", "demo", "models", "doctor",
            "config")  # fmt: skip
SMALL = """
[extract]
use_asr = false
workers = 0
[model]
d_model = 16
d_state = 4
n_layers = 1
[train]
dataset = "mosi"
epochs = 2
batch_size = 2
progress = false
seeds = [1111]
"""


def labelled_folder(folder: Path, clip: Path) -> Path:
    """6 distinct copies of ``clip`` in ``folder`` with a labels.csv: labels, splits (3 / 2 / 1), text."""
    folder.mkdir(parents=True)
    rows = []
    for i, split in enumerate(["train", "train", "train", "valid", "valid", "test"]):
        distinct_copy(clip, folder / f"clip{i}.mp4", i)
        rows.append(f"clip{i},{i - 2.5},{split},{SENTENCE}")
    (folder / "labels.csv").write_text("clip_id,label,split,text\n" + "\n".join(rows) + "\n")
    return folder


def cmamba(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmamba", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    done = cmamba(command, "--help")
    assert done.returncode == 0 and "Example" in done.stdout, done.stdout + done.stderr


@pytest.fixture(scope="module")
def workspace(talking_clip, tmp_path_factory) -> dict[str, Path]:
    """A labelled folder (6 distinct copies of the talking clip), its cache and a trained run."""
    root = tmp_path_factory.mktemp("cli")
    folder = labelled_folder(root / "videos", talking_clip)
    (root / "small.toml").write_text(SMALL)
    cache, run = root / "cache", root / "run"
    done = cmamba("extract", folder, "--out", cache, "--config", root / "small.toml", "--align", "clock")
    assert done.returncode == 0, done.stderr
    assert "log: " in done.stderr and "6/6 clips" in done.stdout
    done = cmamba("train", cache, "--out", run, "--config", root / "small.toml", "--view-dtype", "float16")
    assert done.returncode == 0, done.stderr
    return {"root": root, "folder": folder, "cache": cache, "run": run, "config": root / "small.toml"}


def test_extract_and_train_save_the_resolved_config(workspace):
    saved = json.loads((workspace["cache"] / "cmamba-config.json").read_text())
    assert saved["align"]["mode"] == "clock" and saved["extract"]["use_asr"] is False  # flag over file over default
    assert json.loads((workspace["cache"] / "manifest.json").read_text())["align"] == "clock"
    trained = json.loads((workspace["run"] / "cmamba-config.json").read_text())
    assert trained["train"]["epochs"] == 2 and trained["model"]["d_model"] == 16
    assert trained["train"]["view_dtype"] == "float16" and list(workspace["cache"].glob("views/*/text.f16"))
    assert (workspace["run"] / "seed-1111" / "best" / "model.safetensors").is_file()


def test_train_flags_reach_the_recipe(tmp_path):
    from cmamba.cli import TRAIN_FLAGS, _config, build_parser

    config = tmp_path / "c.toml"
    config.write_text('[train]\nview_dtype = "float16"\n')
    plain = build_parser().parse_args(["train", "cache", "--out", "run", "--config", str(config)])
    recipe = _config(plain, TRAIN_FLAGS).train_config()
    assert recipe.view is True and recipe.view_dtype == "float16"  # the file's key, not overridden by absent flags
    flagged = build_parser().parse_args(["train", "cache", "--out", "run", "--no-view", "--view-dtype", "float32"])
    recipe = _config(flagged, TRAIN_FLAGS).train_config()
    assert recipe.view is False and recipe.view_dtype == "float32"


def test_evaluate_prints_metrics(workspace):
    done = cmamba("evaluate", workspace["run"], workspace["cache"], "--split", "valid", "--missing-rate", "0.2")
    assert done.returncode == 0, done.stderr
    assert {"MAE", "Corr", "Has0_acc_2"} <= set(json.loads(done.stdout))


def test_score_scores_good_clips_and_lists_bad_ones(workspace, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(workspace["folder"] / "clip0.mp4", new / "fresh.mp4")
    (new / "fresh.txt").write_text(SENTENCE)
    (new / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "scores"
    done = cmamba("score", new, "--model", workspace["run"], "--out", out, "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert "scored 1 clips, 1 failed" in done.stdout and "broken" in done.stdout
    scores = json.loads((out / "scores.json").read_text())
    assert [c["clip_id"] for c in scores["clips"]] == ["fresh"] and scores["failed"][0]["stage"] == "open"
    report = (out / "report.html").read_text()
    assert "distribution.png" in report and (out / "distribution.png").read_bytes()[:4] == b"\x89PNG"


def test_score_refuses_a_checkpoint_whose_feature_schema_differs(workspace, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(workspace["run"], run)
    meta_path = run / "seed-1111" / "best" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["schema"]["extraction"]["extractors"]["audio"]["version"] = "0-old"
    meta_path.write_text(json.dumps(meta))
    done = cmamba("score", workspace["folder"] / "clip0.mp4", "--model", run, "--out", tmp_path / "s")
    assert done.returncode == 1 and "audio" in done.stderr and "0-old" in done.stderr


def test_export_import_round_trip_and_train_on_the_import(workspace, tmp_path):
    pkl = tmp_path / "feat.pkl"
    done = cmamba("export", workspace["cache"], "--format", "mmsa", "--out", pkl, "--max-len", "audio=300")
    assert done.returncode == 0, done.stderr
    assert cmamba("export", workspace["cache"], "--format", "mult", "--out", tmp_path / "mult.pkl").returncode == 0
    done = cmamba("import-mmsa", pkl, "--out", tmp_path / "imported")
    assert done.returncode == 0 and "imported 6 clips" in done.stdout, done.stderr
    done = cmamba("train", tmp_path / "imported", "--out", tmp_path / "run2", "--config", workspace["config"])
    assert done.returncode == 0, done.stderr


def test_prepare_reads_the_benchmark_layout(workspace, tmp_path):
    raw = tmp_path / "corpus" / "Raw" / "vid01"
    raw.mkdir(parents=True)
    shutil.copy(workspace["folder"] / "clip0.mp4", raw / "0001.mp4")
    header = "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"
    (tmp_path / "corpus" / "label.csv").write_text(header + f"vid01,0001,{SENTENCE},1.2,,,,Positive,train\n")
    done = cmamba("prepare", "mosi", tmp_path / "corpus", "--out", tmp_path / "c", "--workers", "0", "--no-asr")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["source"]["dataset"] == "mosi"


def test_bad_inputs_give_clear_messages_and_exit_codes(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cmamba("extract", empty, "--out", tmp_path / "c")
    assert done.returncode == 2 and "contains no media" in done.stderr
    (tmp_path / "bad.toml").write_text("[train]\nepoch = 3\n")
    done = cmamba("extract", MEDIA / "arctic_a0007.wav", "--out", tmp_path / "c", "--config", tmp_path / "bad.toml")
    assert done.returncode == 1 and "train.epoch" in done.stderr and "epochs" in done.stderr
    done = cmamba("train", tmp_path / "nowhere", "--out", tmp_path / "r")
    assert done.returncode == 1 and "not a feature cache" in done.stderr


def test_config_dump_default_and_doctor():
    done = cmamba("config", "dump-default")
    assert done.returncode == 0 and "[train]" in done.stdout and "[video]" in done.stdout
    done = cmamba("doctor")
    assert done.returncode == 0, done.stdout + done.stderr


def test_demo_runs_to_a_report(tmp_path):
    done = cmamba("demo", "--out", tmp_path / "demo")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "illustrat" in done.stdout and (tmp_path / "demo" / "report.html").is_file()
    scores = json.loads((tmp_path / "demo" / "scores.json").read_text())
    assert len(scores["clips"]) == 13 and not scores["failed"]


def test_a_missing_face_model_prints_the_fix(tmp_path):
    # offline: a first run would otherwise install the model (tests/test_bad_inputs.py checks that path)
    env = {**os.environ, "CMAMBA_MODELS_DIR": str(tmp_path / "no-models"), "CMAMBA_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "cmamba", "extract", MEDIA / "carphone_pristine.mp4", "--out",
                           tmp_path / "c"], capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 1 and "cmamba models install" in done.stderr
    done = subprocess.run([sys.executable, "-m", "cmamba", "doctor"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "cmamba models install" in done.stdout


@pytest.mark.parametrize("kind", ["malicious", "truncated"])
def test_a_bad_pickle_is_a_one_line_error(kind, tmp_path, capsys):
    """A pickle the restricted unpickler refuses, or a cut-off one, is named in one line (traceback in the log)."""
    import pickle

    from cmamba import cli

    path = tmp_path / "features.pkl"
    if kind == "malicious":
        path.write_bytes(pickle.dumps({"train": os.getcwd}))  # asks the unpickler for a function
    else:
        path.write_bytes(pickle.dumps({"train": {"id": ["a"] * 100}})[:40])
    assert cli.main(["import-mmsa", str(path), "--out", str(tmp_path / "cache")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("log: ")]
    assert len(err) == 1 and err[0].startswith("cmamba import-mmsa: error:") and "Traceback" not in err[0]
    assert ("refusing to load" in err[0]) == (kind == "malicious")
