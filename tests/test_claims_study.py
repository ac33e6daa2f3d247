"""benchmarks/claims_study.py: one run file per (variant, train collection, seed), resumed, and a report whose
intervals and paired tests are computed from those files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import extract

from gais_pipe.synthetic import make_synthetic

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import claims_study  # noqa: E402


def test_interval_is_students_t_half_width_and_paired_tests_pair_seeds():
    mean, half = claims_study.interval(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    runs = {
        ("a", "t", "s"): {
            0: {"R@1": 50.0, "gate_auc": 0.9, "one_clip_named": 0.4},
            1: {"R@1": 60.0, "gate_auc": 0.8, "one_clip_named": 0.5},
            2: {"R@1": 55.0, "gate_auc": 0.7, "one_clip_named": 0.3},
        },
        ("b", "t", "s"): {
            0: {"R@1": 40.0, "gate_auc": 0.5, "one_clip_named": 0.0},
            1: {"R@1": 49.0, "gate_auc": 0.6, "one_clip_named": 0.1},
            2: {"R@1": 46.0, "gate_auc": 0.4, "one_clip_named": 0.0},
            3: {"R@1": 0.0, "gate_auc": 0.0, "one_clip_named": 0.0},
        },
    }
    tests = {t["metric"]: t for t in claims_study.paired_tests(runs, "b")}
    assert tests["R@1"]["seeds"] == [0, 1, 2] and tests["R@1"]["difference"] == pytest.approx(10.0)
    assert tests["R@1"]["p"] < 0.01  # 10, 11, 9: a steady difference


@pytest.mark.slow
def test_a_study_trains_once_per_seed_resumes_and_reports(tmp_path):
    made = make_synthetic(tmp_path / "data", 48, seed=5, unnamed="same-kinds", caption_style="aspects")
    extract(Path(made["folder"]), tmp_path / "work")
    collection = f"c={tmp_path / 'data'}:{tmp_path / 'work'}"
    command = [sys.executable, str(ROOT / "benchmarks/claims_study.py")]
    run = [*command, "run", "--out", str(tmp_path / "study"), "--train", collection, "--seeds", "0", "1"]
    variants = [
        "--variant",
        "a=train.min_steps=40",
        "--variant",
        "b=train.min_steps=40;model.perturbation='none';loss.support_weight=0",
    ]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([*run, *variants], check=True, env=env, capture_output=True, timeout=900)
    files = sorted((tmp_path / "study/runs").glob("*/c/seed*.json"))
    assert [f"{f.parent.parent.name}/{f.name}" for f in files] == [
        "a/seed0.json",
        "a/seed1.json",
        "b/seed0.json",
        "b/seed1.json",
    ]
    record = json.loads(files[0].read_text())
    scored = record["scored"]["c"]
    assert record["overrides"] == ["train.min_steps=40", "train.seed=0"]
    assert 0 <= scored["R@1"] <= 100 and 0 <= scored["gate_auc"] <= 1 and scored["radius_min"] <= scored["radius_max"]
    assert len(scored["video_radius"]) == len(scored["video_caption_variance"]) > 0
    none = json.loads(files[2].read_text())["scored"]["c"]
    assert none["radius_std"] == 0.0  # no perturbation and no support term: the radius is never trained
    stamps = [f.stat().st_mtime_ns for f in files]
    again = subprocess.run([*run, *variants], check=True, env=env, capture_output=True, text=True, timeout=900)
    assert [f.stat().st_mtime_ns for f in files] == stamps and again.stdout == ""  # nothing retrained
    subprocess.run(
        [*command, "report", "--out", str(tmp_path / "study"), "--against", "b"],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    report = json.loads((tmp_path / "study/report.json").read_text())
    assert set(report["table"]) == {"a | c -> c", "b | c -> c"}
    assert {t["metric"] for t in report["paired"]} <= {"R@1", "gate_auc", "one_clip_named"} and report["paired"]
    assert (tmp_path / "study/radius_vs_variance.png").stat().st_size > 1000
