"""benchmarks/gpu_check.sh in its small CPU mode: every step runs and the JSON report holds its figures, the
extraction figures first; and the GPU busy % over the steady state, which only a GPU run exercises end to end."""

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_extract_probe as probe  # noqa: E402


def test_gpu_busy_counts_only_samples_after_the_first_batch(tmp_path):
    base = datetime(2026, 11, 27, 12, 0, 0).timestamp()
    stamp = lambda t: datetime.fromtimestamp(base + t).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]  # noqa: E731
    lines = [f"{stamp(0.2 * i)}, {0 if i < 10 else 80}, {1000 + i}" for i in range(20)]
    (tmp_path / "gpu.csv").write_text("\n".join(lines) + "\n[Unknown Error]\n")
    rows = probe.read_samples(tmp_path / "gpu.csv", base, base + 4)
    assert len(rows) == 20 and abs(rows[3][0] - (base + 0.6)) < 1e-3
    figures = probe.gpu_busy(rows, base + 2.0, base + 3.9, base, 200)
    assert figures["busy_pct_steady"] == 80 and figures["steady_samples"] == 10
    assert figures["busy_pct_whole_command"] == 40 and figures["memory_mib_max"] == 1019


def test_samples_without_readable_stamps_are_spread_over_the_command(tmp_path):
    (tmp_path / "gpu.csv").write_text("x, 10, 5\ny, 30, 6\n")
    rows = probe.read_samples(tmp_path / "gpu.csv", 100.0, 104.0)
    assert [r[0] for r in rows] == [101.0, 103.0]


@pytest.mark.slow
def test_gpu_check_small_mode_writes_every_figure(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--small", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert next(iter(report)) == "extraction"  # what a reader sees first
    assert report["small"] is True and "faiss" in report
    steps = ("prepare", "decode", "encode", "extract-msrvtt", "extract-720p", "search", "precision", "train", "index")
    for name in steps:
        assert report[name]["status"] == "ok", (name, (tmp_path / f"{name}.log").read_text()[-2000:])

    top = report["extraction"]
    for name, target in (("extract-msrvtt", 50), ("extract-720p", 15)):
        figures = top[name]
        assert figures["videos_per_s"] > 0 and figures["overall_videos_per_s"] > 0
        assert figures["target_videos_per_s"] == target and figures["meets_target"] in (True, False)
        assert figures["startup_s"] > 0 and "gpu_busy_pct_steady" in figures
        assert figures["per_stage"]["decode_s"]["frames"] > 0 and figures["per_stage"]["encode_s"]["image"] > 0
        account = report[name]["figures"]["account"]
        assert len(account["batches"]) >= 2 and all(len(b) == 2 for b in account["batches"])
        assert report[name]["figures"]["command"].split()[1:3] == ["-m", "gais_pipe"]
    assert top["decode_only"]["first_pool_first_item_s"] > 0 and top["decode_only"]["second_pool_first_item_s"] > 0
    assert top["decode_only"]["msrvtt_videos_per_s"] > 0 and top["decode_only"]["hd_videos_per_s"] > 0
    for key in ("image_tower_images_per_s", "image_mapper_images_per_s", "whisper_encoder_windows_per_s"):
        assert top["encode_only"][key] > 0, key
    assert isinstance(report["hwaccel"]["hwdevices_available"], list)
    search = report["search"]["figures"]
    assert search["rows"] == 10000 and search["batch_p50_ms"] > 0 and search["one_p50_ms"] > 0
    assert search["recall@10_vs_fp32_exact"] > 0.9

    assert report["train"]["figures"]["train"]["steps_per_s"] > 0
    bf16 = report["precision"]["figures"]["precisions"]["bf16"]
    assert bf16["failed"] == 0 and bf16["columns"]["frame_features"]["nonfinite"] == 0
    assert bf16["columns"]["frame_features"]["cosine_min"] > 0.99
    rows = report["index"]["figures"]["index"]
    assert {r["kind"] for r in rows} == {"flat", "ivf-sq8"} and all(r["recall@10_vs_exact"] > 0.9 for r in rows)
