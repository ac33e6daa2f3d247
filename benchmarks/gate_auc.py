"""Claim 1 as a number: does the FGF gate open for sound the query asks for, and shut out sound no query names?

    .venv/bin/python benchmarks/gate_auc.py --workdir W --videos-json DATA/videos.json [--checkpoint C]

For every test caption, the mean gate over its own clip's frames that have sound. Positives: captions
that name their clip's sound (tone or word families). Negatives: captions of clips whose sound is
noise that no caption names. The AUC is the probability that a random positive's gate is above a
random negative's (0.5: the gate does not tell them apart). Reads make-synthetic's videos.json.

The sharper test, where make-synthetic wrote `gate_probe.jsonl` beside videos.json: each named-sound test clip
under two captions, one that names its sound and the same sentence without it. Claim 1 says the gate opens
more under the first; reported as the mean difference of the clip's mean gate and the share of clips where it
is positive.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.data import caption_splits
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.workdir import Workdir


def sound_labels(fact: dict) -> tuple[str, bool]:
    """(sound family, whether captions name it). make-synthetic writes both fields; collections made
    before it did carry only `sound`, from which they follow."""
    if "sound_family" in fact:
        return fact["sound_family"], bool(fact["sound_named"])
    sound = fact["sound"]
    if sound.startswith("word:"):
        return "word", True
    if sound.startswith("noise:"):
        return "noise", False
    return ("none", False) if sound == "none" else ("tone", True)


def auc(positives: list[float], negatives: list[float]) -> float:
    """Mann-Whitney AUC, ties counted half."""
    if not positives or not negatives:
        return float("nan")
    pos, neg = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


@torch.no_grad()
def own_clip_gates(model, split, facts: dict) -> dict[str, list[float]]:
    """Mean gate of each caption on its own clip's heard frames, grouped as named / noise."""
    model.eval()
    groups: dict[str, list[float]] = {"named": [], "noise": []}
    for j in range(len(split)):
        video = int(split.caption_video[j])
        family, named = sound_labels(facts[split.video_ids[video]])
        batch = split.videos.take([video])
        mask = batch.mask[0].bool()
        if not mask.any() or not (named or family == "noise"):
            continue
        gates = model.pool(model.encode_text(split.text_features[j : j + 1].float()), batch.to("cpu")).gates[0, 0]
        groups["named" if named else "noise"].append(float(gates[mask].mean()))
    return groups


@torch.no_grad()
def probe_pairs(model, split, encode_texts, lines: list[dict]) -> dict:
    """Mean gate of one clip under the caption naming its sound minus under the visual-only one, per clip."""
    model.eval()
    rows = {Path(video).name: i for i, video in enumerate(split.video_ids)}
    texts = torch.from_numpy(encode_texts([line["caption"] for line in lines])).float()
    differences = []
    for k in range(0, len(lines) - 1, 2):
        pair = lines[k : k + 2]
        if pair[0]["video"] != pair[1]["video"] or Path(pair[0]["video"]).name not in rows:
            continue
        batch = split.videos.take([rows[Path(pair[0]["video"]).name]])
        heard = batch.mask[0].bool()
        gates = model.pool(model.encode_text(texts[k : k + 2]), batch.to("cpu")).gates[:, 0][:, heard].mean(-1)
        named, plain = (gates[0], gates[1]) if pair[0]["names_sound"] else (gates[1], gates[0])
        differences.append(float(named - plain))
    values = np.asarray(differences)
    return {
        "pairs": len(values),
        "mean_difference": float(values.mean()) if len(values) else float("nan"),
        "share_positive": float((values > 0).mean()) if len(values) else float("nan"),
    }


def gate_report(model, split, facts: dict) -> dict:
    groups = own_clip_gates(model, split, facts)
    return {
        "auc": auc(groups["named"], groups["noise"]),
        "named_mean": float(np.mean(groups["named"])) if groups["named"] else float("nan"),
        "noise_mean": float(np.mean(groups["noise"])) if groups["noise"] else float("nan"),
        "named_n": len(groups["named"]),
        "noise_n": len(groups["noise"]),
        "gates": groups,
    }


def load_for_analysis(workdir: Path, videos_json: Path, checkpoint: Path | None, split_name: str):
    """The heads of a run, its split as in training (features, captions), the text encoder and make-synthetic's
    facts of that split's videos, keyed by the split's video ids."""
    work = Workdir(workdir)
    model, meta, path = load_head(work, checkpoint, torch.device("cpu"))
    model.eval()
    encoder = TextEncoder(work, torch.device("cpu"))
    splits, _ = caption_splits(
        work, Path(meta["captions"]), meta.get("dataset"), meta["config"]["train"], encoder, False
    )
    facts = {Path(f["video"]).name: f for f in json.loads(videos_json.read_text())}
    facts = {video: facts[Path(video).name] for video in splits[split_name].video_ids}
    return model, path, splits[split_name], encoder, facts


def analysis_arguments(description: str) -> argparse.Namespace:
    """The command line of a script that looks into one trained run on a make-synthetic collection."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--videos-json", type=Path, required=True, help="make-synthetic's videos.json")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the newest run's best")
    parser.add_argument("--split", default="test")
    return parser.parse_args()


def main() -> int:
    args = analysis_arguments(__doc__)
    model, path, split, encoder, facts = load_for_analysis(args.workdir, args.videos_json, args.checkpoint, args.split)
    report = gate_report(model, split, facts)
    print(
        f"{path}: gate AUC {report['auc']:.3f} (named mean {report['named_mean']:.3f}, n={report['named_n']}; "
        f"noise mean {report['noise_mean']:.3f}, n={report['noise_n']})"
    )
    probe_file = args.videos_json.with_name("gate_probe.jsonl")
    if probe_file.is_file():
        lines = [json.loads(line) for line in probe_file.read_text().splitlines() if line.strip()]
        pairs = probe_pairs(model, split, encoder, [x for x in lines if x["split"] == args.split])
        print(
            f"one clip, two captions ({pairs['pairs']} clips): gate naming its sound - gate without it "
            f"{pairs['mean_difference']:+.3f} on average, positive for {100 * pairs['share_positive']:.0f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
