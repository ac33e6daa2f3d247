"""Extraction in half precision against fp32 on the same videos: how far the stored features move.

    .venv/bin/python benchmarks/precision_check.py --config paper --set features.clip.pretrained=random \
        --videos 24 --precisions fp32 fp16 bf16 --json out.json

Each precision extracts the same videos into its own workdir, seeded with the first run's checkpoints (same
files, same sha256), so only the autocast dtype differs. Per precision it reports, for each `*_features`
column against fp32: the relative error of each row (||x - x32|| / ||x32||, mean and max), the lowest
cosine, and how many values are NaN or Inf. On a CPU fp16 autocast is not available: the pipeline runs such
a run in fp32 and records that in the workdir identity, which this reports as the effective precision.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console

from gais_pipe import extract_stage
from gais_pipe.config import load_config
from gais_pipe.workdir.features import read_features
from gais_pipe.workdir.ledger import Workdir

sys.path.insert(0, str(Path(__file__).parent))
from extract_bench import make_video  # noqa: E402  (the benchmarks share their test videos)
from gpu_extract_probe import seed_models  # noqa: E402  (and their random checkpoint)


def compare(reference: np.ndarray, values: np.ndarray) -> dict:
    """Row-wise relative error and cosine of `values` against `reference` (both [N, ...])."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    got = values.reshape(len(values), -1).astype(np.float64)
    bad = int((~np.isfinite(got)).sum())
    got = np.nan_to_num(got)
    ref_norm = np.linalg.norm(ref, axis=1)
    relative = np.linalg.norm(got - ref, axis=1) / np.maximum(ref_norm, 1e-12)
    cosine = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * ref_norm, 1e-12)
    return {
        "rel_err_mean": float(relative.mean()),
        "rel_err_max": float(relative.max()),
        "cosine_min": float(cosine.min()),
        "nonfinite": bad,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--media", type=Path, help="use the videos in this folder instead of generating")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.precisions[0] != "fp32":
        parser.error("the first precision is the reference and must be fp32")

    console = Console(stderr=True)
    tmp = Path(tempfile.mkdtemp(prefix="gais-precision-"))
    media = args.media
    if media is None:
        media = tmp / "videos"
        media.mkdir()
        width, height = (int(x) for x in args.size.split("x"))
        jobs = [
            (media / f"v{i:04d}.mp4", args.seconds, i, width, height, 25, 44100, "ultrafast")
            for i in range(args.videos)
        ]
        with ProcessPoolExecutor() as pool:
            list(pool.map(make_video, *zip(*jobs)))

    results: dict = {"config": args.config, "overrides": args.overrides, "videos": args.videos, "precisions": {}}
    reference: dict[str, np.ndarray] = {}
    for precision in args.precisions:
        config = load_config(args.config, [*args.overrides, f"runtime.precision={precision}"])
        work_dir = tmp / f"work-{precision}"
        if reference:
            seed_models(tmp / "work-fp32", work_dir)
        summary = extract_stage.run_extract(media, work_dir, config, console=console, show_progress=False)
        work = Workdir(work_dir)
        columns = read_features(work)
        floats = {name: values for name, values in columns.items() if name.endswith("_features")}
        entry = {
            "effective": work.identity()["identity"].get("precision", precision),
            "extracted": summary.extracted,
            "failed": summary.failed,
            "seconds": summary.seconds,
        }
        if not reference:
            reference = floats
        else:
            entry["columns"] = {name: compare(reference[name], floats[name]) for name in reference}
        results["precisions"][precision] = entry
        console.print(precision, json.dumps(entry))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
