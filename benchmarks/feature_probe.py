"""Linear probe of the frozen features: what a learned head could at best read off them linearly.

    .venv/bin/python benchmarks/feature_probe.py --config tiny --videos 240
    .venv/bin/python benchmarks/feature_probe.py --config tiny --data OUT --workdir WORK   # reuse both

Before trusting a learned retrieval result, hold it against this: if a linear classifier cannot tell
colour, shape or motion from the mean frame vector, or the sound from the audio features, the heads
cannot either, and a poor R@1 says nothing about them.

Makes a `make-synthetic` collection (or takes OUT with videos.json), extracts it (or takes an
extracted WORK), z-scores the features with statistics of the training folds, and fits a multinomial
logistic regression (torch, L-BFGS, light L2: --l2). Held-out accuracy over 5 folds:
- visual factors (colour, shape, motion, background) from the mean frame vector, folds grouped
  by look, so that sound twins (the same pixels) never sit on both sides; `motion` also from the mean
  and the standard deviation of the frame vectors over time;
- sound class (each named sound; all noise as one class) from the audio features, per video (the
  mean over its segments with sound) and per segment (each segment with sound alone), folds grouped
  by video.
Also reported: the mean cosine between the mean frame vectors of two videos (near 1: the frames all
look alike to the encoder), and the mean norms of frame and audio vectors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from gais_pipe.config import load_config
from gais_pipe.extract_stage import run_extract
from gais_pipe.synthetic import make_synthetic
from gais_pipe.workdir import Workdir, read_features

VISUAL = ("colour", "shape", "motion", "background")


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, l2: float) -> np.ndarray:
    """Multinomial logistic regression on z-scored inputs (statistics of the training rows only)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.from_numpy((train_x - mean) / std).double()
    classes, y = np.unique(train_y, return_inverse=True)
    target = torch.from_numpy(y)
    weight = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, target) + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        scores = torch.from_numpy((test_x - mean) / std).double() @ weight + bias
    return classes[scores.argmax(1).numpy()]


def grouped_accuracy(x: np.ndarray, y: np.ndarray, groups: np.ndarray, l2: float = 1e-4, folds: int = 5) -> float:
    """Held-out accuracy over `folds` folds; rows of one group are always on the same side."""
    unique = np.random.default_rng(0).permutation(np.unique(groups))
    fold_of = {g: i % folds for i, g in enumerate(unique)}
    fold = np.array([fold_of[g] for g in groups])
    right = 0
    for k in range(folds):
        held = fold == k
        if held.any() and (~held).any():
            right += int((fit_predict(x[~held], y[~held], x[held], l2) == y[held]).sum())
    return right / len(y)


def sound_class(fact: dict) -> str:
    return "noise" if fact["sound_family"] == "noise" else fact["sound"]


def probe(stored: dict, facts: dict[str, dict], l2: float = 1e-4) -> dict:
    """Every accuracy and summary figure for one extracted collection."""
    ids = [str(v) for v in stored["video_id"]]
    rows = [facts[v] for v in ids]
    frames = stored["frame_features"].astype(np.float64)
    audio, mask = stored["audio_features"].astype(np.float64), stored["audio_mask"].astype(bool)
    looks = np.array(["|".join(r[k] for k in VISUAL) for r in rows])
    mean_frames = frames.mean(1)
    results = {f"visual/{k}": grouped_accuracy(mean_frames, np.array([r[k] for r in rows]), looks, l2) for k in VISUAL}
    motion = np.array([r["motion"] for r in rows])
    results["visual/motion (mean+std over time)"] = grouped_accuracy(
        np.concatenate([mean_frames, frames.std(1)], 1), motion, looks, l2
    )
    heard = np.array([r["sound_family"] != "none" and m.any() for r, m in zip(rows, mask)])
    labels = np.array([sound_class(r) for r in rows])
    per_video = np.stack([a[m].mean(0) for a, m in zip(audio[heard], mask[heard])])
    results["audio/sound per video"] = grouped_accuracy(per_video, labels[heard], np.array(ids)[heard], l2)
    seg_rows = np.flatnonzero(heard)
    seg_x = np.concatenate([audio[i][mask[i]] for i in seg_rows])
    seg_y = np.concatenate([np.repeat(labels[i], mask[i].sum()) for i in seg_rows])
    seg_g = np.concatenate([np.repeat(ids[i], mask[i].sum()) for i in seg_rows])
    results["audio/sound per segment"] = grouped_accuracy(seg_x, seg_y, seg_g, l2)
    unit = mean_frames / np.linalg.norm(mean_frames, axis=1, keepdims=True)
    cosine = unit @ unit.T
    results["frames/mean cosine between videos"] = float(cosine[~np.eye(len(unit), dtype=bool)].mean())
    results["frames/mean norm"] = float(np.linalg.norm(frames, axis=2).mean())
    results["audio/mean norm (segments with sound)"] = float(np.linalg.norm(audio[mask], axis=1).mean())
    results["dims"] = {"frame": int(frames.shape[2]), "audio": int(audio.shape[2]), "videos": len(ids)}
    results["chance"] = {
        **{k: 1 / len({r[k] for r in rows}) for k in VISUAL},
        "sound": 1 / len(set(labels[heard])),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="bundled config name or TOML path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--videos", type=int, default=240, help="videos to make when --data is not given")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="a make-synthetic folder (videos/, videos.json) to reuse")
    parser.add_argument("--workdir", type=Path, help="workdir to extract into (reused when it holds the features)")
    parser.add_argument("--l2", type=float, default=1e-4, help="L2 penalty of the probe (on z-scored inputs)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch) / "data"
        if not (data / "videos.json").exists():
            make_synthetic(data, args.videos, args.seed)
        work = args.workdir or Path(scratch) / "work"
        config = load_config(args.config, ["runtime.decode_workers=0", *args.set])
        run_extract(data / "videos", work, config, console=Console(quiet=True), show_progress=False)
        facts = {f["video"]: f for f in json.loads((data / "videos.json").read_text())}
        results = probe(read_features(Workdir(work)), facts, args.l2)
    results["config"] = {"name": args.config, "set": args.set, "l2": args.l2}
    for key, value in results.items():
        print(f"{key:45s} {value:.3f}" if isinstance(value, float) else f"{key:45s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
