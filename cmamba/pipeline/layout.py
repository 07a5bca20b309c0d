"""Dataset layouts → the list of clips to extract, validated before any work starts.

- ``folder_clips``: a folder of media files (recursive), with an optional ``labels.csv`` (columns ``clip_id``
  (the file's path relative to the folder, without its suffix) and any of ``label``, ``split``, ``text``).
- ``benchmark_clips``: the layout of MMSA-FET and THUIAR's releases for CMU-MOSI, CMU-MOSEI, CH-SIMS and CH-SIMS
  v2 — ``label.csv`` (video_id, clip_id, text, label, label_T, label_A, label_V, annotation, mode) beside
  ``Raw/<video_id>/<clip_id>.<any extension>``. Ids stay strings, so leading zeros survive.

A ``LayoutError`` names the file, the row and the problem (missing columns, duplicate ids, unknown split names,
ids that are not plain names) before anything is extracted. A clip whose media file is missing is not a layout
error: it becomes that clip's error record and the run goes on.
"""

from __future__ import annotations

import csv
import glob
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from cmamba.constants import CLIP_ID_SEPARATOR, SPLITS
from cmamba.errors import LayoutError

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("label", "label_T", "label_A", "label_V")
BENCHMARK_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
MEDIA_SUFFIXES = frozenset(
    ".mp4 .avi .mkv .mov .webm .flv .m4v .mpg .mpeg .wmv .3gp .ts .wav .flac .mp3 .m4a .ogg .opus .aac .wma "
    ".png .jpg .jpeg .bmp .webp .tif .tiff".split()
)


@dataclass(frozen=True)
class ClipSpec:
    """One clip to extract: where its media is and what is known about it."""

    clip_id: str
    video_id: str
    path: Path | None  # None: no media file found (recorded as the clip's error)
    split: str | None = None
    labels: dict[str, float | None] = field(default_factory=dict)  # label, label_T, label_A, label_V
    text: str | None = None  # the transcript, when the layout gives one
    annotation: str | None = None
    start: float | None = None  # a segment of a recording: [start, end) seconds of the file; None: the whole file
    end: float | None = None


def _check_id(value: str, column: str, where: str) -> str:
    value = value.strip()
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\x00" in value:
        raise LayoutError(f"{where}: {column} {value!r} is not a plain name (empty, '..' or a path separator)")
    return value


def _number(value: str | None, column: str, where: str) -> float | None:
    if value is None or value.strip() in ("", "nan", "NaN"):
        return None
    try:
        number = float(value)
    except ValueError:
        raise LayoutError(f"{where}: {column} = {value!r} is not a number") from None
    if not math.isfinite(number):
        raise LayoutError(f"{where}: {column} = {value!r} is not finite")
    return number


def _split(value: str | None, where: str) -> str | None:
    if value is None or not value.strip():
        return None
    if value.strip() not in SPLITS:
        raise LayoutError(f"{where}: split {value!r} is not one of {SPLITS}")
    return value.strip()


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise LayoutError(f"{path}: missing columns {missing}; it has {columns}")
            rows = []
            for row in reader:  # DictReader fills a short row with None and keeps a long row's extras under None
                if None in row or None in row.values():
                    cells = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
                    raise LayoutError(f"{path}:{reader.line_num}: {cells} cells where the header has "
                                      f"{len(columns)} ({', '.join(columns)}); fix or remove the row")  # fmt: skip
                rows.append(row)
            return rows
    except UnicodeDecodeError as exc:
        raise LayoutError(f"{path}: not UTF-8 text ({exc}); re-save it as UTF-8") from None


def _find_media(folder: Path, stem: str) -> Path | None:
    if not folder.is_dir():
        return None
    matches = sorted(
        p for p in folder.glob(f"{glob.escape(stem)}.*") if p.suffix.lower() in MEDIA_SUFFIXES and p.stem == stem
    )
    return matches[0] if matches else None


def benchmark_clips(corpus_dir: str | Path) -> list[ClipSpec]:
    """Clips of a benchmark corpus in the ``label.csv`` + ``Raw/`` layout, in label.csv order."""
    root = Path(corpus_dir)
    label_csv = root / "label.csv"
    if not label_csv.is_file():
        raise LayoutError(f"{root}: no label.csv; expected label.csv and Raw/<video_id>/<clip_id>.<ext>")
    clips, seen = [], {}
    for line, row in enumerate(_read_csv(label_csv, BENCHMARK_COLUMNS), start=2):
        where = f"{label_csv}:{line}"
        video_id = _check_id(row["video_id"], "video_id", where)
        clip_id = _check_id(row["clip_id"], "clip_id", where)
        key = f"{video_id}{CLIP_ID_SEPARATOR}{clip_id}"  # MMSA's id
        if key in seen:
            raise LayoutError(f"{where}: duplicate id {key} (first at line {seen[key]})")
        seen[key] = line
        split = _split(row["mode"], where)
        if split is None:
            raise LayoutError(f"{where}: empty mode; each row needs one of {SPLITS}")
        labels = {c: _number(row.get(c), c, where) for c in LABEL_COLUMNS if c in row}
        if labels["label"] is None:
            raise LayoutError(f"{where}: empty label")
        media = _find_media(root / "Raw" / video_id, clip_id)
        clips.append(ClipSpec(key, video_id, media, split, labels, row["text"], row.get("annotation") or None))
    if not clips:
        raise LayoutError(f"{label_csv}: no rows")
    return clips


def media_files(root: Path) -> list[Path]:
    """Every file under ``root`` with a media suffix, sorted. Symlinked folders are followed (a folder reached
    twice, as through a symlink loop, is walked once); a symlink to nothing is listed too, so that extraction
    records it as a clip that cannot be read instead of skipping it silently."""
    found, seen = [], set()
    for folder, dirs, names in os.walk(root, followlinks=True, onerror=lambda exc: log.warning("skipped: %s", exc)):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            log.warning("%s: already walked (a symlink loop?); skipped", folder)
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        found += [Path(folder, n) for n in names if Path(n).suffix.lower() in MEDIA_SUFFIXES]
    return sorted(found)


def folder_clips(folder: str | Path) -> list[ClipSpec]:
    """Every media file under ``folder`` (recursive, sorted), labelled from ``folder/labels.csv`` when present."""
    root = Path(folder)
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder")
    files = media_files(root)
    ids = {}
    for path in files:
        clip_id = path.relative_to(root).with_suffix("").as_posix()
        if clip_id in ids:
            raise LayoutError(f"{path} and {ids[clip_id]} give the same clip id {clip_id!r}; rename one")
        ids[clip_id] = path
    rows = _folder_labels(root / "labels.csv", ids) if (root / "labels.csv").is_file() else {}
    return [
        ClipSpec(
            clip_id,
            Path(clip_id).parent.as_posix() if "/" in clip_id else clip_id,
            path,
            rows.get(clip_id, {}).get("split"),
            {"label": rows[clip_id]["label"]} if rows.get(clip_id, {}).get("label") is not None else {},
            rows.get(clip_id, {}).get("text"),
        )
        for clip_id, path in ids.items()
    ]


def _folder_labels(path: Path, ids: dict[str, Path]) -> dict[str, dict]:
    rows = {}
    for line, row in enumerate(_read_csv(path, ("clip_id",)), start=2):
        where = f"{path}:{line}"
        clip_id = row["clip_id"].strip()
        if not clip_id or ".." in clip_id.split("/") or clip_id.startswith("/") or "\\" in clip_id:
            raise LayoutError(f"{where}: clip_id {clip_id!r} must be a relative path without '..'")
        if clip_id in rows:
            raise LayoutError(f"{where}: duplicate clip_id {clip_id!r}")
        if clip_id not in ids:
            raise LayoutError(f"{where}: clip_id {clip_id!r} matches no media file under {path.parent}")
        rows[clip_id] = {
            "label": _number(row.get("label"), "label", where),
            "split": _split(row.get("split"), where),
            "text": row.get("text") or None,
        }
    return rows
