"""The report of ``cmamba score``: ``report.html`` and the PNG plots beside it (matplotlib, Agg backend).

``write_report(scores, out)`` takes the content of ``scores.json`` and writes out/distribution.png (histogram of
the scores), out/trajectories.png (each clip's score over time, small multiples), out/contributions.png
(per-modality contributions, grouped bars) and out/report.html. The page has no scripts and loads nothing from
the network; the PNGs beside it are its only other files.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

TIMELINE = "timelines.png"  # written when a scored input was cut into segments
MAX_PANELS = 24  # clips shown in the per-clip plots; the table lists them all
ILLUSTRATIVE = (
    "Illustrative only: the run is marked as a small demonstration model. These scores show what the pipeline "
    "produces; they are not a trustworthy estimate of the clips' sentiment."
)


def _plain(text: str) -> str:
    """``text`` as matplotlib shows it literally: a clip id such as ``talk$_$0003`` is not TeX math."""
    return text.replace("$", r"\$")


def _save(fig: Figure, path: Path) -> Path:
    # Figure + an explicit Agg canvas: no pyplot global state, and no display is ever needed.
    FigureCanvasAgg(fig).print_png(path)
    return path


def _nothing_scored(fig: Figure) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, "no clip was scored", ha="center", va="center")
    ax.set_axis_off()


def plot_distribution(scores: dict[str, Any], path: Path) -> Path:
    """Histogram of the clips' scores, with the neutral point 0 marked."""
    values = [clip["score"] for clip in scores["clips"]]
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    if not values:
        _nothing_scored(fig)
        return _save(fig, path)
    ax = fig.add_subplot()
    ax.hist(values, bins=min(30, max(5, len(values))), color="#4c72b0")
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("score")
    ax.set_ylabel("clips")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def plot_trajectories(scores: dict[str, Any], path: Path, limit: int = MAX_PANELS) -> Path:
    """One small panel per clip (the first ``limit``): the score after each step against time in seconds."""
    clips = scores["clips"][:limit]
    cols = min(6, max(1, len(clips)))
    rows = max(1, math.ceil(len(clips) / cols))
    fig = Figure(figsize=(2.4 * cols, 1.9 * rows + 0.3), layout="constrained")
    if not clips:
        _nothing_scored(fig)
        return _save(fig, path)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax, clip in zip(axes, clips, strict=False):
        times = [t for t, _ in clip["trajectory"]]
        ax.plot(times, [s for _, s in clip["trajectory"]], color="#4c72b0", linewidth=1.2)
        ax.axhline(0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(_plain(clip["clip_id"][-28:]), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(clips) :]:
        ax.set_axis_off()
    fig.supxlabel("seconds", fontsize=8)
    fig.supylabel("score", fontsize=8)
    return _save(fig, path)


def plot_contributions(scores: dict[str, Any], path: Path, limit: int = MAX_PANELS) -> Path:
    """Grouped bars per clip (the first ``limit``): score minus the score without each modality (none if absent)."""
    clips, names = scores["clips"][:limit], scores["model"]["modalities"]
    fig = Figure(figsize=(max(6.0, 0.45 * len(clips) * len(names)), 3.6), layout="constrained")
    if not clips:
        _nothing_scored(fig)
        return _save(fig, path)
    ax = fig.add_subplot()
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        heights = [clip["contributions"][name] or 0.0 for clip in clips]  # an absent modality draws no bar
        ax.bar([i + (k - (len(names) - 1) / 2) * width for i in range(len(clips))], heights, width, label=name)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(
        range(len(clips)), [_plain(clip["clip_id"][-20:]) for clip in clips], rotation=45, ha="right", fontsize=7
    )
    ax.set_ylabel("score − score without it")
    ax.legend(fontsize=8)
    return _save(fig, path)


def segmented_recordings(scores: dict[str, Any]) -> dict[str, list[dict]]:
    """The scored segments of each recording that was cut into several, in time order."""
    recordings: dict[str, list[dict]] = {}
    for clip in scores["clips"]:
        if clip.get("video_id") is not None and clip.get("start") is not None:
            recordings.setdefault(clip["video_id"], []).append(clip)
    return {k: sorted(v, key=lambda c: c["start"]) for k, v in recordings.items() if len(v) > 1}


def plot_timelines(scores: dict[str, Any], path: Path, limit: int = MAX_PANELS) -> Path:
    """Per recording: each segment's score as a bar over its time range, with its within-segment trajectory."""
    recordings = list(segmented_recordings(scores).items())[:limit]
    fig = Figure(figsize=(10, 2.2 * max(1, len(recordings))))
    FigureCanvasAgg(fig)
    for k, (video_id, clips) in enumerate(recordings):
        ax = fig.add_subplot(len(recordings), 1, k + 1)
        for clip in clips:
            colour = {"positive": "tab:green", "negative": "tab:red"}.get(clip["polarity"], "tab:grey")
            ax.bar(clip["start"], clip["score"], width=clip["end"] - clip["start"], align="edge", color=colour,
                   alpha=0.45)  # fmt: skip
            if clip["trajectory"]:
                times, values = zip(*clip["trajectory"], strict=True)
                ax.plot([clip["start"] + t for t in times], values, color=colour, linewidth=1)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(_plain(video_id), fontsize=9)
        ax.set_ylabel("score")
    if recordings:
        fig.axes[-1].set_xlabel("seconds in the recording")
        fig.tight_layout()  # keeps the axis label inside the image
    return _save(fig, path)


PLOTS = (  # (file name, heading, plot function); the page shows them in this order
    ("distribution.png", "Score distribution", plot_distribution),
    ("trajectories.png", "Score over time", plot_trajectories),
    ("contributions.png", "Modality contributions", plot_contributions),
)
IMAGES = (*(name for name, _, _ in PLOTS), TIMELINE)  # every image the report may write


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:  # e.g. the contribution of a modality the clip lacks
            return "—"
        return f"{value:+.3f}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 0.2em 0.5em; }
td { font-family: monospace; } img { max-width: 100%; } .note { background: #fff3cd; padding: 0.6em; }
"""


def render_html(scores: dict[str, Any]) -> str:
    """The report page for ``scores``; it shows the ``PLOTS`` PNGs from its own folder."""
    model, clips, failed = scores["model"], scores["clips"], scores["failed"]
    names = model["modalities"]
    parts = [f"<h1>Sentiment scores: {len(clips)} clips, {len({f['clip_id'] for f in failed})} failed</h1>"]
    if model.get("illustrative"):
        parts.append(f'<p class="note">{html.escape(ILLUSTRATIVE)}</p>')
    parts.append(
        f"<p>Model: {html.escape(model['checkpoint'])} (trained on {html.escape(str(model['dataset']))}, seed "
        f"{html.escape(str(model['seed']))}, modalities {html.escape(', '.join(names))}).<br>"
        f"Polarity: {html.escape(scores['polarity_rule'])}.<br>"
        f"Contribution of a modality: the score minus the score with that modality marked absent.</p>"
    )
    shown = f" (the first {MAX_PANELS} of {len(clips)} clips)" if len(clips) > MAX_PANELS else ""
    if segmented_recordings(scores):
        parts.append(f'<h2>Recordings: segment scores over time</h2><img src="{TIMELINE}" alt="timelines">')
        keys = ["video_id", "duration", "segments_scored", "segments_failed", "mean_score", "share_positive",
                "share_neutral", "share_negative"]  # fmt: skip
        header = ["recording", "duration s", "segments scored", "failed", "mean score", "positive", "neutral",
                  "negative"]  # fmt: skip
        rows = [[r[k] for k in keys] for r in scores.get("recordings", [])]
        parts.append(_table(header, rows))
    for filename, title, plot in PLOTS:
        note = shown if plot is not plot_distribution else ""
        parts.append(f'<h2>{title}{note}</h2><img src="{filename}" alt="{title}">')
    header = ["clip", "start s", "end s", "text", "score", "polarity", "present",
              *[f"contribution {n}" for n in names]]  # fmt: skip
    rows = [
        [c["clip_id"], c.get("start"), c.get("end"), c.get("text") or "", c["score"], c["polarity"],
         " + ".join(c["present"]), *[c["contributions"][n] for n in names]]
        for c in clips
    ]  # fmt: skip
    parts.append("<h2>Scores</h2>" + (_table(header, rows) if rows else "<p>No clip was scored.</p>"))
    failed_rows = [[f["clip_id"], f["stage"], f["reason"]] for f in failed]
    parts.append(
        "<h2>Failed clips</h2>" + (_table(["clip", "stage", "reason"], failed_rows) if failed else "<p>None.</p>")
    )
    versions = ", ".join(f"{k} {v}" for k, v in scores["versions"].items())
    parts.append(f"<p><small>{html.escape(scores['created'])}; {html.escape(versions)}</small></p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>cmamba scores</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(scores: dict[str, Any], out: str | Path) -> Path:
    """Write the three plots and ``report.html`` into ``out``; returns the path of the page."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for filename, _, plot in PLOTS:
        plot(scores, out / filename)
    if segmented_recordings(scores):
        plot_timelines(scores, out / TIMELINE)
    page = out / "report.html"
    page.write_text(render_html(scores), encoding="utf-8")
    return page
