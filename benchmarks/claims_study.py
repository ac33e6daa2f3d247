"""The paper's two claims, measured per variant, seed and collection (issue 21).

    # train every variant x seed on one collection, score it on that collection and on others held out
    .venv/bin/python benchmarks/claims_study.py run --out study \
        --train s1=DATA_S1:WORKDIR_S1 --score s1=DATA_S1:WORKDIR_S1 --score s2=DATA_S2:WORKDIR_S2 \
        --variant default= --variant relevance="model.gate='relevance'" --seeds 0 1 2 3 4
    # the table, 95% intervals, paired tests and the plots, from every run file under study/
    .venv/bin/python benchmarks/claims_study.py report --out study --against default

A collection is NAME=DATA:WORKDIR: make-synthetic's folder (captions.jsonl, videos.json, gate_probe.jsonl) and
the workdir its videos were extracted into. A variant is NAME=OVERRIDES, `;`-separated `--set` overrides of the
tiny config (empty: the defaults). Each (variant, train collection, seed) trains once with the plain trainer
and writes OUT/runs/<variant>/<train>/seed<S>.json atomically, so a killed study resumes, and two processes
(one thread each) may share the work.

Per scored collection (its test split, its own captions), every row reports:
- R@1 / R@5 (full GAIS score, text to video);
- claim 1: the gate AUC of captions naming their clip's sound against every other caption of a clip with sound
  (unnamed noise, unnamed sounds of named kinds, and with aspect captions the captions that leave a named
  sound out), the mean gates of both, and the one-clip test of
  gate_probe.jsonl (naming the clip's sound minus not; unnamed clips under their kind's named sound minus not);
- claim 2: the SVSP radius over every test (text, video) pair (min, max, std) and, per test video, the mean
  radius of its own captions against the variance of those captions' embeddings (Spearman's rho).
The report gives mean +- 95% interval (Student's t over seeds) and paired t-tests of each variant against
`--against` on the seeds both ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from scipy import stats

from gais_pipe.config import load_config
from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.evaluate import evaluate
from gais_pipe.train_stage import run_train
from gais_pipe.workdir import Workdir

sys.path.insert(0, str(Path(__file__).parent))
from gate_auc import collection_split, gate_report, probe_pairs  # noqa: E402

METRICS = (
    "R@1",
    "R@5",
    "gate_auc",
    "gate_named",
    "gate_unnamed",
    "one_clip_named",
    "one_clip_unnamed",
    "radius_min",
    "radius_max",
    "radius_std",
    "radius_variance_rho",
)


def parse_named(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if not name:
        raise SystemExit(f"{text!r}: give NAME=VALUE")
    return name, value


def collection(text: str) -> tuple[str, Path, Path]:
    name, value = parse_named(text)
    data, _, workdir = value.partition(":")
    if not (Path(data) / "videos.json").is_file() or not (Path(workdir) / "features").exists():
        raise SystemExit(f"{text}: want NAME=DATA:WORKDIR (make-synthetic's folder, the extracted workdir)")
    return name, Path(data), Path(workdir)


@torch.no_grad()
def radius_report(model, split) -> dict:
    """The perturbation radius of every (text, video) pair of the split, and per video the mean radius of its
    own captions against their variance (mean squared distance of the unit adapted texts from their mean)."""
    model.eval()
    videos = split.videos.take(np.arange(len(split.video_ids)))
    text = model.encode_text(split.text_features.float())
    radius = model.pair_radius(model.pool(text, videos).frame_text_cos)[..., 0]  # [N, M]
    own = radius[torch.arange(len(split)), torch.as_tensor(split.caption_video)]
    unit = torch.nn.functional.normalize(text, dim=-1)
    per_video_radius, variance = [], []
    for video in range(len(split.video_ids)):
        rows = np.flatnonzero(np.asarray(split.caption_video) == video)
        if len(rows) < 2:
            continue
        members = unit[rows]
        variance.append(float(((members - members.mean(0)) ** 2).sum(-1).mean()))
        per_video_radius.append(float(own[rows].mean()))
    rho = stats.spearmanr(per_video_radius, variance).statistic if len(variance) > 2 else float("nan")
    return {
        "radius_min": float(radius.min()),
        "radius_max": float(radius.max()),
        "radius_std": float(radius.std()),
        "radius_variance_rho": float(rho) if np.isfinite(rho) else float("nan"),
        "video_radius": per_video_radius,
        "video_caption_variance": variance,
    }


def score(model, train_cfg: dict, data: Path, workdir: Path) -> dict:
    """Everything the report reads, of one trained model on one collection's test split."""
    split, encoder, facts = collection_split(workdir, data / "videos.json", train_cfg, "test")
    recall = evaluate(model, split, torch.device("cpu"))["full"]["t2v"]
    gates = gate_report(model, split, facts, per_kind=True)
    separated = gates["overall"]  # captions naming their clip's sound against every other caption of a heard clip
    lines = [json.loads(x) for x in (data / "gate_probe.jsonl").read_text().splitlines() if x.strip()]
    pairs = probe_pairs(model, split, encoder, [x for x in lines if x["split"] == "test"])
    return {
        "R@1": recall["R@1"],
        "R@5": recall["R@5"],
        "R@10": recall["R@10"],
        "gate_auc": separated["auc"],
        "gate_named": gates["named_mean"],
        "gate_unnamed": separated["unnamed_mean"],
        "one_clip_named": pairs["mean_difference"],
        "one_clip_unnamed": pairs.get("unnamed", {}).get("mean_difference", float("nan")),
        "gate_kinds": gates.get("kinds"),
        "gates": gates,
        **radius_report(model, split),
    }


def write_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    temporary.replace(path)


def run(args: argparse.Namespace) -> None:
    train_name, train_data, train_work = collection(args.train)
    scored = [collection(x) for x in args.score] or [(train_name, train_data, train_work)]
    quiet = Console(quiet=True)
    for variant in args.variant:
        name, overrides = parse_named(variant)
        for seed in args.seeds:
            out = args.out / "runs" / name / train_name / f"seed{seed}.json"
            if out.exists():
                continue
            sets = [x for x in overrides.split(";") if x.strip()] + [f"train.seed={seed}"]
            config = load_config("tiny", sets)
            trained = run_train(
                train_work,
                train_data / "captions.jsonl",
                config,
                run_name=f"study-{train_name}-{name}-seed{seed}",
                console=quiet,
                show_progress=False,
            )
            model, _, _ = load_head(Workdir(train_work), trained.run_dir / "best.safetensors", torch.device("cpu"))
            results = {c: score(model, config["train"], data, work) for c, data, work in scored}
            write_atomic(
                out,
                {
                    "variant": name,
                    "overrides": sets,
                    "train": train_name,
                    "seed": seed,
                    "steps_epochs": len(trained.history),
                    "scored": results,
                },
            )
            brief = {c: {m: round(r[m], 3) for m in ("R@1", "gate_auc", "one_clip_named")} for c, r in results.items()}
            print(f"{name} seed {seed}: {brief}", flush=True)


def interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% interval (Student's t)."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return (float(values.mean()) if len(values) else float("nan"), float("nan"))
    return float(values.mean()), float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def load_runs(out: Path) -> dict:
    """{(variant, train, scored): {seed: scored results}} from every run file under OUT/runs."""
    runs: dict = {}
    for path in sorted((out / "runs").glob("*/*/seed*.json")):
        record = json.loads(path.read_text())
        for scored, result in record["scored"].items():
            runs.setdefault((record["variant"], record["train"], scored), {})[record["seed"]] = result
    return runs


def report(args: argparse.Namespace) -> None:
    runs = load_runs(args.out)
    table: dict = {}
    print("| variant | trained on -> scored on | seeds | " + " | ".join(METRICS) + " |")
    print("| --- " * (len(METRICS) + 3) + "|")
    for (variant, train, scored), seeds in sorted(runs.items()):
        row = {m: interval(np.array([r[m] for r in seeds.values()], dtype=float)) for m in METRICS}
        table[f"{variant} | {train} -> {scored}"] = {"seeds": sorted(seeds), **row}
        cells = [f"{mean:.3f} ± {half:.3f}" if np.isfinite(half) else f"{mean:.3f}" for mean, half in row.values()]
        print(f"| {variant} | {train} -> {scored} | {len(seeds)} | " + " | ".join(cells) + " |")
    tests = paired_tests(runs, args.against)
    for line in tests:
        print(line["text"])
    write_atomic(args.out / "report.json", {"table": table, "paired": tests})
    plot(runs, args.out)


def paired_tests(runs: dict, against: str) -> list[dict]:
    """Each variant against `against` on the same train and scored collections and the seeds both ran: the
    mean difference of R@1 (and of the gate AUC) with a paired t-test."""
    lines = []
    for (variant, train, scored), seeds in sorted(runs.items()):
        base = runs.get((against, train, scored))
        if variant == against or not base:
            continue
        common = sorted(set(seeds) & set(base))
        for metric in ("R@1", "gate_auc", "one_clip_named"):
            a = np.array([seeds[s][metric] for s in common], dtype=float)
            b = np.array([base[s][metric] for s in common], dtype=float)
            if len(common) < 2 or not np.isfinite(a - b).all():
                continue
            test = stats.ttest_rel(a, b)
            mean, half = interval(a - b)
            text = (
                f"{variant} - {against} ({train} -> {scored}, seeds {common}): {metric} {mean:+.3f} ± {half:.3f}, "
                f"paired t p = {test.pvalue:.3g}"
            )
            lines.append(
                {
                    "variant": variant,
                    "train": train,
                    "scored": scored,
                    "metric": metric,
                    "seeds": common,
                    "difference": mean,
                    "interval": half,
                    "p": float(test.pvalue),
                    "text": text,
                }
            )
    return lines


def plot(runs: dict, out: Path) -> None:
    """The radius of each test video's own captions against their variance, one panel per (variant, scored)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(runs)
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for axis, key in zip(axes[0], keys):
        for seed, result in sorted(runs[key].items()):
            axis.scatter(result["video_caption_variance"], result["video_radius"], s=8, label=f"seed {seed}")
        rho = np.nanmean([r["radius_variance_rho"] for r in runs[key].values()])
        axis.set(title=f"{key[0]}: {key[1]} -> {key[2]}\nmean Spearman rho {rho:.2f}", xlabel="caption variance")
        axis.title.set_fontsize(8)
    axes[0][0].set_ylabel("radius of the video's own captions")
    figure.tight_layout()
    figure.savefig(out / "radius_vs_variance.png", dpi=100)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run")
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--train", required=True, help="NAME=DATA:WORKDIR, the collection to train on")
    running.add_argument("--score", action="append", default=[], help="NAME=DATA:WORKDIR (default: the train one)")
    running.add_argument("--variant", action="append", required=True, help="NAME=OVERRIDES (';'-separated)")
    running.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    reporting = commands.add_parser("report")
    reporting.add_argument("--out", type=Path, required=True)
    reporting.add_argument("--against", default="default", help="the variant the others are tested against")
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
