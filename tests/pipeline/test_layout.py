"""Dataset layouts: label.csv + Raw/ benchmark corpora and plain folders, validated before any work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cmamba.errors import LayoutError
from cmamba.pipeline.layout import benchmark_clips, folder_clips

MEDIA = Path(__file__).parents[1] / "fixtures" / "media"
HEADER = "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode\n"


def corpus(tmp_path: Path, rows: str, header: str = HEADER) -> Path:
    (tmp_path / "label.csv").write_text(header + rows, encoding="utf-8")
    raw = tmp_path / "Raw" / "03bSnISJMiM"
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copy(MEDIA / "arctic_a0007.wav", raw / "0001.wav")
    return tmp_path


def test_benchmark_layout_keeps_string_ids_and_finds_any_extension(tmp_path):
    rows = "03bSnISJMiM,0001,hello there,1.4,1.0,,0.5,Positive,train\n03bSnISJMiM,0002,bye,-0.6,,,,Negative,test\n"
    clips = benchmark_clips(corpus(tmp_path, rows))
    assert [c.clip_id for c in clips] == ["03bSnISJMiM$_$0001", "03bSnISJMiM$_$0002"]  # leading zeros survive
    assert clips[0].path.name == "0001.wav" and clips[1].path is None  # a missing file is the clip's problem
    assert clips[0].labels == {"label": 1.4, "label_T": 1.0, "label_A": None, "label_V": 0.5}
    assert clips[0].split == "train" and clips[0].text == "hello there" and clips[0].annotation == "Positive"


@pytest.mark.parametrize(
    ("rows", "header", "needle"),
    [
        ("v,1,hi,0.5,train\n", "video_id,clip_id,text,label\n", "missing columns ['mode']"),
        ("v,1,hi,0.5,,,,,train\nv,1,hi,0.5,,,,,test\n", HEADER, "duplicate id v$_$1"),
        ("v,1,hi,0.5,,,,,dev\n", HEADER, "split 'dev' is not one of"),
        ("..,1,hi,0.5,,,,,train\n", HEADER, "not a plain name"),
        ("v,a/b,hi,0.5,,,,,train\n", HEADER, "not a plain name"),
        ("v,1,hi,high,,,,,train\n", HEADER, "not a number"),
        ("v,1,hi,,,,,,train\n", HEADER, "empty label"),
    ],
    ids=["missing-column", "duplicate", "unknown-split", "dotdot", "separator", "bad-label", "no-label"],
)
def test_bad_label_csv_is_refused_before_any_work(tmp_path, rows, header, needle):
    with pytest.raises(LayoutError) as info:
        benchmark_clips(corpus(tmp_path, rows, header))
    assert needle in str(info.value) and "label.csv:" in str(info.value)


def test_folder_layout_is_recursive_with_optional_labels(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(MEDIA / "carphone_pristine.mp4", tmp_path / "a" / "b" / "talk.mp4")
    shutil.copy(MEDIA / "arctic_a0007.wav", tmp_path / "speech.wav")
    (tmp_path / "notes.md").write_text("not media")
    (tmp_path / "labels.csv").write_text("clip_id,label,split,text\nspeech,-1.5,valid,and you always\n")
    clips = {c.clip_id: c for c in folder_clips(tmp_path)}
    assert set(clips) == {"a/b/talk", "speech"}
    assert clips["speech"].labels == {"label": -1.5} and clips["speech"].split == "valid"
    assert clips["a/b/talk"].labels == {} and clips["a/b/talk"].video_id == "a/b"


def test_folder_labels_must_match_media(tmp_path):
    shutil.copy(MEDIA / "arctic_a0007.wav", tmp_path / "speech.wav")
    (tmp_path / "labels.csv").write_text("clip_id,label\nelsewhere,1.0\n")
    with pytest.raises(LayoutError, match="matches no media file"):
        folder_clips(tmp_path)
    (tmp_path / "labels.csv").write_text("clip_id,label\n../speech,1.0\n")
    with pytest.raises(LayoutError, match=r"without '\.\.'"):
        folder_clips(tmp_path)
