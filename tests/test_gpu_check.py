"""benchmarks/gpu_check.sh in its small CPU mode: every step runs and the JSON report holds its figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
    assert report["small"] is True and "faiss" in report
    for name in ("extract", "precision", "train", "index"):
        assert report[name]["status"] == "ok", (name, (tmp_path / f"{name}.log").read_text()[-2000:])
    assert report["extract"]["figures"]["pipeline_videos_per_s"] > 0
    assert report["train"]["figures"]["train"]["steps_per_s"] > 0
    bf16 = report["precision"]["figures"]["precisions"]["bf16"]
    assert bf16["failed"] == 0 and bf16["columns"]["frame_features"]["nonfinite"] == 0
    assert bf16["columns"]["frame_features"]["cosine_min"] > 0.99
    rows = report["index"]["figures"]["index"]
    assert {r["kind"] for r in rows} == {"flat", "ivf-sq8"} and all(r["recall@10_vs_exact"] > 0.9 for r in rows)
