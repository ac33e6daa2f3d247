"""Plots for BENCHMARKS.md from the figures in benchmarks/results/ (written by the benchmark scripts'
--json option): query latency against collection size, and extraction throughput per stage.

    .venv/bin/python benchmarks/plot_report.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
RESULTS, FIGURES = HERE / "results", HERE / "figures"


def latency_plot() -> Path:
    """p50 latency and recall@10 against collection size, per index kind, text-like queries only."""
    rows = []
    for path in sorted(RESULTS.glob("index_*.json")):
        rows += [
            r for r in json.loads(path.read_text())["index"] if r.get("queries") == "text" and r["nprobe"] in (None, 32)
        ]
    figure, (latency, recall) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in sorted({r["kind"] for r in rows}):
        points = sorted({r["videos"]: r for r in rows if r["kind"] == kind}.items())
        sizes = [p[0] for p in points]
        latency.plot(sizes, [p[1]["p50_ms"] for p in points], marker="o", label=kind)
        recall.plot(sizes, [p[1]["recall@10_vs_exact"] for p in points], marker="o", label=kind)
    latency.axhline(2, color="grey", linestyle="--", linewidth=1, label="2 ms target (1M)")
    latency.set(xscale="log", yscale="log", xlabel="videos in the index", ylabel="p50 latency (ms, 1 query, warm)")
    recall.axhline(0.95, color="grey", linestyle="--", linewidth=1, label="0.95 target")
    recall.set(xscale="log", xlabel="videos in the index", ylabel="recall@10 against exact", ylim=(0.3, 1.02))
    latency.legend(fontsize=8)
    recall.legend(fontsize=8)
    figure.suptitle("Index search, 512-d, text-like queries, 2 shared CPU cores")
    return _save(figure, "latency.png")


def extraction_plot() -> Path:
    runs = {
        "tiny": json.loads((RESULTS / "extract_tiny.json").read_text()),
        "ViT-B-32": json.loads((RESULTS / "extract_vitb32.json").read_text()),
    }
    figure, axis = plt.subplots(figsize=(6, 3.6))
    labels = ["decode only", "encode only", "pipeline"]
    width = 0.35
    for i, (name, run) in enumerate(runs.items()):
        values = [run["decode_videos_per_s"], run["encode_videos_per_s"], run["pipeline_videos_per_s"]]
        bars = axis.bar([x + i * width for x in range(3)], values, width, label=name)
        axis.bar_label(bars, fmt="%.1f", fontsize=7)
    axis.set_xticks([x + width / 2 for x in range(3)], labels)
    axis.set(
        yscale="log",
        ylabel="videos/s (log)",
        title="Extraction throughput, 2 CPU cores (320x240 h264, 8 s / 6 s)",
    )
    axis.legend(fontsize=8)
    return _save(figure, "extraction.png")


def _save(figure, name: str) -> Path:
    figure.tight_layout()
    out = FIGURES / name
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


if __name__ == "__main__":
    FIGURES.mkdir(exist_ok=True)
    print(latency_plot(), extraction_plot())
