"""`gais-pipe explain`: one query and one video as a picture (the paper's Figure 3): the sampled frames
along time, and under them how much each frame's fused feature leaned on sound (the audio gate) and
how much attention the query paid to it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gais_pipe.extract.probe import probe
from gais_pipe.extract.video_frames import sample_frames
from gais_pipe.index.search import Searcher


def find_row(searcher: Searcher, video: str) -> int:
    row = searcher.store.find(video)
    if row is None:
        raise KeyError(f"{video}: not in the index (give its id as `gais-pipe info` lists it, or its path)")
    return row


@dataclass
class Explanation:
    """What the explain figure shows, per sampled frame: its time, thumbnail, audio gate and attention."""

    text: str
    video: str
    score: float
    times: np.ndarray  # [T] seconds
    thumbnails: np.ndarray | None  # [T, H, W, 3] uint8, None when the video file is gone
    gates: np.ndarray | None  # [T] audio gate (None zero-shot)
    mask: np.ndarray  # [T] bool: the segment has sound
    attention: np.ndarray  # [T] the query's attention (trained) or cos(query, frame) (zero-shot)
    attention_label: str


def explain(searcher: Searcher, text: str, video: str) -> Explanation:
    """The figure's data, scored exactly as the search scores it (`gais_pipe.index.rerank`)."""
    if not text.strip():
        raise ValueError("empty query")
    row = find_row(searcher, video)
    entry = searcher.videos[row]
    scores = searcher.score_video(text, row)
    thumbnails = None
    if entry["path"] and Path(entry["path"]).exists():
        path = Path(entry["path"])
        thumbnails = sample_frames(path, probe(path), scores.attention.shape[1], 96).pixels
    return Explanation(
        text,
        entry["id"],
        float(scores.score[0]),
        scores.times[0],
        thumbnails,
        None if scores.gates is None else scores.gates[0],
        scores.mask[0],
        scores.attention[0],
        scores.attention_label,
    )


def run_explain(searcher: Searcher, text: str, video: str, out: Path) -> Path:
    return draw(explain(searcher, text, video), out)


def draw(e: Explanation, out: Path) -> Path:
    """The figure: thumbnails along time, the audio gate (grey where there is no sound), the attention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, thumbnails, gates, mask, attention = e.times, e.thumbnails, e.gates, e.mask, e.attention
    count = len(times)
    figure = plt.figure(figsize=(max(8, count * 1.1), 5.2))
    grid = figure.add_gridspec(3, count, height_ratios=[1.2, 1, 1], hspace=0.45)
    for f in range(count):
        axis = figure.add_subplot(grid[0, f])
        if thumbnails is not None:
            axis.imshow(thumbnails[f])
        else:
            axis.text(0.5, 0.5, "video\nnot found", ha="center", va="center", fontsize=7)
        axis.set_title(f"{times[f]:.1f}s", fontsize=8)
        axis.axis("off")
    positions = np.arange(count)
    gate_axis = figure.add_subplot(grid[1, :])
    if gates is not None:
        colours = ["tab:orange" if heard else "lightgrey" for heard in mask]
        gate_axis.bar(positions, np.where(mask, gates, 0.0), color=colours)
        gate_axis.set_ylim(0, 1)
        gate_axis.set_ylabel("audio gate")
        for silent in np.flatnonzero(~mask).tolist():
            gate_axis.text(silent, 0.05, "no\nsound", ha="center", fontsize=7, color="grey")
    else:
        gate_axis.text(
            0.5,
            0.5,
            "zero-shot index: no trained audio gate",
            ha="center",
            va="center",
            transform=gate_axis.transAxes,
        )
    gate_axis.set_xticks(positions, [f"{t:.1f}s" for t in times], fontsize=7)
    attention_axis = figure.add_subplot(grid[2, :])
    attention_axis.plot(positions, attention, marker="o", color="tab:blue")
    attention_axis.set_ylabel(e.attention_label)
    attention_axis.set_xticks(positions, [f"{t:.1f}s" for t in times], fontsize=7)
    figure.suptitle(f'"{e.text}"  vs  {e.video}   (score {e.score:.3f})', fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    figure.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(figure)
    os.replace(tmp, out)
    return out
