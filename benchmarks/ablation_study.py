"""The ablation study on the synthetic audio-visual collection (issue: paper's two claims).

    .venv/bin/python benchmarks/ablation_study.py --seeds 0 1 2 --videos 300 --out study

Per seed: make-synthetic, extract (tiny config: random CLIP, log-mel audio), then train and
evaluate each variant on the test split (the checkpoint chosen on val). Variants:
  mean-pool   visual only, mean pooling (the CLIP4Clip baseline)
  xpool       visual only, text-conditioned cross-attention (X-Pool)
  fgf-free    FGF with a text-free gate
  fgf         FGF (text-guided gate)
  fgf-iso     FGF + isotropic perturbation
  fgf-svsp    FGF + SVSP
and, for fgf-svsp, two stages (stage-1 top K re-ranked) against exhaustive scoring. Also the FGF
gate on frames whose sound the caption names against frames of pure noise, with a plot.
Writes OUT/results.json, OUT/gates.png and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from gais_pipe.config import load_config
from gais_pipe.extract_stage import run_extract
from gais_pipe.retrieval.captions import load_captions
from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.data import join
from gais_pipe.retrieval.evaluate import evaluate
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.synthetic import TONES, make_synthetic
from gais_pipe.train_stage import run_train
from gais_pipe.workdir import Workdir

VARIANTS = {
    "mean-pool": ["model.audio=false", "model.pooling='mean'", "model.perturbation='none'"],
    "xpool": ["model.audio=false", "model.perturbation='none'"],
    "fgf-free": ["model.gate='text-free'", "model.perturbation='none'"],
    "fgf": ["model.perturbation='none'"],
    "fgf-iso": ["model.perturbation='isotropic'"],
    "fgf-svsp": ["model.perturbation='svsp'"],
}
TRAIN = ["train.epochs=15", "train.lr=1e-3", "train.batch_size=32"]


@torch.no_grad()
def gate_distributions(work: Path, checkpoint: Path, split, facts: dict) -> dict[str, list[float]]:
    """Mean gate per (caption, its own video) pair on the test split: sound named vs pure noise."""
    model, _, _ = load_head(Workdir(work), checkpoint, torch.device("cpu"))
    named, noise = [], []
    for j, text in enumerate(split.text_features):
        video_index = int(split.caption_video[j])
        sound = facts[split.video_ids[video_index]]["sound"]
        batch = split.videos.take([video_index]).to("cpu")
        gates = model.pool(model.encode_text(text[None].float()), batch).gates[0, 0]
        mask = batch.mask[0]
        if not mask.any():
            continue
        value = float(gates[mask].mean())
        if sound in TONES or sound.startswith("word:"):
            named.append(value)
        elif sound.startswith("noise:"):
            noise.append(value)
    return {"named": named, "noise": noise}


def run_seed(seed: int, videos: int, out: Path, k: int) -> dict:
    folder = out / f"seed{seed}"
    made = make_synthetic(folder / "data", videos, seed)
    captions = Path(made["captions_file"])
    facts = {f["video"]: f for f in json.loads((folder / "data/videos.json").read_text())}
    work = folder / "work"
    quiet = Console(quiet=True)
    run_extract(Path(made["folder"]), work, load_config("tiny"), console=quiet, show_progress=False)
    # the test split is the same for every variant: joined (features read, captions embedded) once
    split = join(Workdir(work), load_captions(captions), TextEncoder(Workdir(work), torch.device("cpu")), False)[0][
        "test"
    ]
    results = {}
    for name, overrides in VARIANTS.items():
        config = load_config("tiny", [*TRAIN, f"train.seed={seed}", *overrides])
        trained = run_train(work, captions, config, run_name=name, console=quiet, show_progress=False)
        model, _, _ = load_head(Workdir(work), trained.run_dir / "best.safetensors", torch.device("cpu"))
        scores = evaluate(model, split, torch.device("cpu"), rerank_k=k if name == "fgf-svsp" else 0)
        results[name] = {m: scores["full"]["t2v"][m] for m in ("R@1", "R@5", "R@10")}
        if name == "fgf-svsp":
            results["two-stage"] = {m: scores[f"two-stage@{k}"]["t2v"][m] for m in ("R@1", "R@5", "R@10")}
            results["stage1-only"] = {m: scores["stage1"]["t2v"][m] for m in ("R@1", "R@5", "R@10")}
        print(f"seed {seed} {name}: {results[name]}", flush=True)
    results["gates"] = gate_distributions(work, work / "runs/fgf/best.safetensors", split, facts)
    results["test_videos"] = len(split.video_ids)
    return results


def plot_gates(per_seed: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = [g for r in per_seed for g in r["gates"]["named"]]
    noise = [g for r in per_seed for g in r["gates"]["noise"]]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    axis.hist(named, bins=bins, alpha=0.6, label=f"sound named in the caption (n={len(named)})")
    axis.hist(noise, bins=bins, alpha=0.6, label=f"pure noise, not named (n={len(noise)})")
    axis.set(
        xlabel="mean FGF audio gate over the video's frames",
        ylabel="caption-video pairs",
        title="Does the gate open for sound the query needs?",
    )
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--k", type=int, default=10, help="two-stage re-rank depth")
    parser.add_argument("--out", type=Path, default=Path("study"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    per_seed = [run_seed(seed, args.videos, args.out, args.k) for seed in args.seeds]
    rows = [*VARIANTS, "stage1-only", "two-stage"]
    summary = {}
    print("\n| variant | R@1 | R@5 | R@10 |\n| --- | --- | --- | --- |")
    for name in rows:
        cells = []
        for metric in ("R@1", "R@5", "R@10"):
            values = np.array([r[name][metric] for r in per_seed])
            summary.setdefault(name, {})[metric] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            }
            cells.append(f"{values.mean():.1f} ± {summary[name][metric]['std']:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    named = [g for r in per_seed for g in r["gates"]["named"]]
    noise = [g for r in per_seed for g in r["gates"]["noise"]]
    summary["gates"] = {
        "named_mean": float(np.mean(named)),
        "noise_mean": float(np.mean(noise)),
        "named_n": len(named),
        "noise_n": len(noise),
    }
    print(
        f"\nmean FGF gate: sound named {summary['gates']['named_mean']:.3f} (n={len(named)}), pure noise "
        f"{summary['gates']['noise_mean']:.3f} (n={len(noise)})"
    )
    print(
        f"test videos per seed: {[r['test_videos'] for r in per_seed]}; chance R@1 = "
        f"{100 / np.mean([r['test_videos'] for r in per_seed]):.1f}"
    )
    plot_gates(per_seed, args.out / "gates.png")
    (args.out / "results.json").write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "per_seed": per_seed},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
