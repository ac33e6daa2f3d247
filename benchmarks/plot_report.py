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
    """The ceilings of extract_bench.py, per clip set: each layer's videos/s per core (ffmpeg, decode-only) or
    per process (null pipeline, real pipeline's steady rate), one worker and two."""
    runs = {
        "1 worker x 2 threads": json.loads((RESULTS / "extract_ceilings.json").read_text()),
        "2 workers x 1 thread": json.loads((RESULTS / "extract_ceilings_w2.json").read_text()),
    }
    layers = [
        ("ffmpeg -threads 1\n(per core)", lambda s: s["ffmpeg"]["videos_per_s_per_core"]),
        ("decode-only\n(per core)", lambda s: s["decode_only"]["videos_per_s_per_core"]),
        ("decode-only", lambda s: s["decode_only"]["steady_videos_per_s"]),
        ("null pipeline", lambda s: s["null_pipeline"]["steady_videos_per_s"]),
        ("pipeline (tiny)", lambda s: s["pipeline"]["steady_videos_per_s"]),
    ]
    sets = list(next(iter(runs.values()))["sets"])
    figure, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.8), sharey=True)
    width = 0.38
    for axis, name in zip(axes, sets):
        for i, (label, run) in enumerate(runs.items()):
            values = [read(run["sets"][name]) for _, read in layers]
            bars = axis.bar([x + i * width for x in range(len(layers))], values, width, label=label)
            axis.bar_label(bars, fmt="%.1f", fontsize=6)
        axis.set_xticks([x + width / 2 for x in range(len(layers))], [n for n, _ in layers], fontsize=6)
        axis.set(yscale="log", title=f"{name} clips")
    axes[0].set_ylabel("videos/s (steady, log)")
    axes[0].legend(fontsize=7)
    figure.suptitle("Extraction ceilings, 2 CPU cores: FFmpeg's limit, decoding, the pipeline without and with models")
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
