"""benchmarks/extract_bench.py in its small mode: every figure of every clip set comes out, as a positive number."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETS = ("msrvtt", "720p", "long")
FIGURES = {
    "ffmpeg": ("videos_per_s", "videos_per_s_per_core", "seconds_per_clip", "cpu_seconds_per_clip"),
    "decode_only": (
        "seconds",
        "videos_per_s",
        "steady_videos_per_s",
        "videos_per_s_per_worker",
        "videos_per_s_per_core",
    ),
    "null_pipeline": ("videos_per_s", "steady_videos_per_s"),
    "pipeline": ("videos_per_s", "steady_videos_per_s", "startup_s", "videos_per_s_with_startup"),
}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow
def test_small_mode_reports_every_figure_for_every_clip_set(tmp_path):
    out = tmp_path / "ceilings.json"
    command = [sys.executable, str(ROOT / "benchmarks/extract_bench.py"), "--small", "--media", str(tmp_path / "media")]
    done = subprocess.run([*command, "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    results = json.loads(out.read_text())
    assert results["machine"]["cores"] > 0 and len(results["machine"]["load_average_end"]) == 3
    assert results["versions"]["av"] and results["versions"]["torch"]
    assert set(results["sets"]) == set(SETS)
    for name in SETS:
        figures = results["sets"][name]
        if shutil.which("ffmpeg") is None:
            assert "not on PATH" in figures["ffmpeg"]["skipped"]
        for measure, keys in FIGURES.items():
            if measure == "ffmpeg" and "skipped" in figures[measure]:
                continue
            for key in keys:
                assert positive(figures[measure][key]), (name, measure, key, figures[measure].get(key))
        decode = figures["decode_only"]
        assert decode["decoded"] == decode["clips"] and not decode["problems"]
        assert sum(decode["steps_s"].values()) > 0 and all(v >= 0 for v in decode["steps_s"].values())
        for measure in ("null_pipeline", "pipeline"):
            assert figures[measure]["extracted"] == figures[measure]["clips"], (name, measure)
        parts = figures["pipeline"]["account"]
        for key in ("decode_s", "transfer_s", "wait_for_decoders_s", "encode_s", "write_s", "startup_parts_s"):
            assert key in parts, key
    names = {item["name"].split(":")[0] for item in results["ratios"]}
    assert {"msrvtt", "720p", "long / short"} <= names
    for item in results["ratios"]:
        assert positive(item["value"]), item
