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

Per kind, for a collection made with `make-synthetic --unnamed same-kinds` (automatic there; `--per-kind` forces
it): its unnamed sounds are tones and words of the named kinds (beep, hum, whistle, word) at other parameters,
so only the caption tells relevance. For each kind, the AUC of captions naming their clip's sound against
captions of clips whose unnamed sound is of that kind; overall, named against every unnamed sound (noise too,
where there is any). Its gate probe pairs also hold each unnamed test clip under the caption naming the named
sound of its kind and without it: that difference should stay below the named clips'.
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
from gais_pipe.synthetic import TONES
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


def sound_kind(fact: dict) -> str:
    """The acoustic kind of a clip's sound, named or not: "beep", "hum", "whistle" (a tone's name), "word", "noise"
    or "none". make-synthetic writes it in same-kinds collections; elsewhere it follows from `sound`."""
    if "sound_kind" in fact:
        return fact["sound_kind"]
    family = sound_labels(fact)[0]
    return fact["sound"] if family == "tone" else family


def same_kinds(facts: dict) -> bool:
    """Whether some clip's sound is unnamed but of a kind that captions name (a same-kinds collection)."""
    return any(not sound_labels(f)[1] and sound_labels(f)[0] in ("tone", "word") for f in facts.values())


def auc(positives: list[float], negatives: list[float]) -> float:
    """Mann-Whitney AUC, ties counted half."""
    if not positives or not negatives:
        return float("nan")
    pos, neg = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def sound_words(fact: dict) -> str | None:
    """The words a caption names the clip's sound with (make-synthetic's TONES or "a voice saying w"), or None
    where no caption names it."""
    family, named = sound_labels(fact)
    if not named:
        return None
    sound = fact["sound"]
    return f"a voice saying {sound[5:]}" if family == "word" else TONES.get(sound)


def caption_names_sound(fact: dict, caption: str) -> bool:
    """Whether this caption names its clip's sound. With paraphrased captions every caption of a clip whose
    sound is named names it; with `--caption-style aspects` some leave it out, and those are the clip's
    captions whose gate should stay shut."""
    words = sound_words(fact)
    return words is not None and words in caption


@torch.no_grad()
def caption_gates(model, split, facts: dict) -> list[tuple[str, bool, str, float]]:
    """(family, named, kind, mean gate) of each caption on its own clip's heard frames, for every caption whose
    clip has sound; `named`: whether this caption names that sound (`caption_names_sound`)."""
    model.eval()
    rows = []
    for j in range(len(split)):
        video = int(split.caption_video[j])
        fact = facts[split.video_ids[video]]
        family = sound_labels(fact)[0]
        named = caption_names_sound(fact, split.texts[j])
        batch = split.videos.take([video])
        mask = batch.mask[0].bool()
        if not mask.any() or family == "none":
            continue
        gates = model.pool(model.encode_text(split.text_features[j : j + 1].float()), batch.to("cpu")).gates[0, 0]
        rows.append((family, named, sound_kind(fact), float(gates[mask].mean())))
    return rows


def own_clip_gates(model, split, facts: dict, rows: list | None = None) -> dict[str, list[float]]:
    """Mean gate of each caption on its own clip's heard frames, grouped as named / noise."""
    rows = caption_gates(model, split, facts) if rows is None else rows
    return {
        "named": [gate for _, named, _, gate in rows if named],
        "noise": [gate for family, named, _, gate in rows if not named and family == "noise"],
    }


def separation(named: list[float], unnamed: list[float]) -> dict:
    """AUC and means of two groups of gates."""
    return {
        "auc": auc(named, unnamed),
        "named_mean": float(np.mean(named)) if named else float("nan"),
        "unnamed_mean": float(np.mean(unnamed)) if unnamed else float("nan"),
        "named_n": len(named),
        "unnamed_n": len(unnamed),
    }


def kind_report(rows: list[tuple[str, bool, str, float]]) -> dict:
    """Named against unnamed within each kind that has both, and overall (named against every unnamed sound)."""
    kinds = sorted({kind for _, named, kind, _ in rows if named})
    by_kind = {
        kind: separation(
            [g for _, n, k, g in rows if n and k == kind], [g for _, n, k, g in rows if not n and k == kind]
        )
        for kind in kinds
    }
    overall = separation([g for _, n, _, g in rows if n], [g for _, n, _, g in rows if not n])
    return {"overall": overall, "kinds": by_kind}


@torch.no_grad()
def probe_pairs(model, split, encode_texts, lines: list[dict]) -> dict:
    """Mean gate of one clip under the caption naming its sound minus under the visual-only one, per clip."""
    model.eval()
    rows = {Path(video).name: i for i, video in enumerate(split.video_ids)}
    texts = torch.from_numpy(encode_texts([line["caption"] for line in lines])).float()
    differences: dict[bool, list[tuple[str, float]]] = {True: [], False: []}  # by whether the clip's sound is named
    for k in range(0, len(lines) - 1, 2):
        pair = lines[k : k + 2]
        if pair[0]["video"] != pair[1]["video"] or Path(pair[0]["video"]).name not in rows:
            continue
        batch = split.videos.take([rows[Path(pair[0]["video"]).name]])
        heard = batch.mask[0].bool()
        gates = model.pool(model.encode_text(texts[k : k + 2]), batch.to("cpu")).gates[:, 0][:, heard].mean(-1)
        sounded, plain = (gates[0], gates[1]) if _names_a_sound(pair[0]) else (gates[1], gates[0])
        kind = pair[0].get("sound_kind", pair[0].get("sound", ""))
        differences[bool(pair[0].get("sound_named", True))].append((kind, float(sounded - plain)))
    report = _differences([d for _, d in differences[True]])
    if differences[False]:  # a same-kinds collection: unnamed clips under a caption naming their kind's named sound
        report["unnamed"] = _differences([d for _, d in differences[False]])
        report["kinds"] = {
            kind: {
                "named": _differences([d for k, d in differences[True] if k == kind]),
                "unnamed": _differences([d for k, d in differences[False] if k == kind]),
            }
            for kind in sorted({k for named in differences.values() for k, _ in named})
        }
    return report


def _names_a_sound(line: dict) -> bool:
    """Whether a probe line's caption names a sound: the clip's own (`names_sound`) or, in a same-kinds
    collection, the named sound of the clip's kind (`caption_sound`)."""
    return line["caption_sound"] is not None if "caption_sound" in line else bool(line["names_sound"])


def _differences(differences: list[float]) -> dict:
    values = np.asarray(differences)
    return {
        "pairs": len(values),
        "mean_difference": float(values.mean()) if len(values) else float("nan"),
        "share_positive": float((values > 0).mean()) if len(values) else float("nan"),
    }


def gate_report(model, split, facts: dict, per_kind: bool | None = None) -> dict:
    """Named sound against unnamed noise; with `per_kind` (None: where the collection has unnamed sounds of
    named kinds) also "overall" and "kinds" (`kind_report`)."""
    rows = caption_gates(model, split, facts)
    groups = own_clip_gates(model, split, facts, rows)
    report = {
        "auc": auc(groups["named"], groups["noise"]),
        "named_mean": float(np.mean(groups["named"])) if groups["named"] else float("nan"),
        "noise_mean": float(np.mean(groups["noise"])) if groups["noise"] else float("nan"),
        "named_n": len(groups["named"]),
        "noise_n": len(groups["noise"]),
        "gates": groups,
    }
    if same_kinds(facts) if per_kind is None else per_kind:
        report.update(kind_report(rows))
    return report


def collection_captions(videos_json: Path, captions: Path | None) -> Path:
    """The captions to read the run with: the ones given, else make-synthetic's captions.jsonl beside videos.json.
    Never the run's own training captions by default: scoring a run on another collection (held out) with them
    would match its captions to that collection's videos by file stem, silently pairing unrelated clips."""
    chosen = captions or videos_json.parent / "captions.jsonl"
    if not chosen.is_file():
        raise SystemExit(f"{chosen}: no captions file (give --captions, the collection's captions.jsonl)")
    return chosen


def load_for_analysis(
    workdir: Path, videos_json: Path, checkpoint: Path | None, split_name: str, captions: Path | None = None
):
    """The heads of a run (trained on this collection or another), the split of the collection's captions on
    `workdir`'s features, the text encoder and make-synthetic's facts of that split's videos, keyed by the
    split's video ids. Each split video must be a video of videos.json by its exact file name."""
    model, meta, path = load_head(Workdir(workdir), checkpoint, torch.device("cpu"))
    model.eval()
    split, encoder, facts = collection_split(workdir, videos_json, meta["config"]["train"], split_name, captions)
    return model, path, split, encoder, facts


def collection_split(workdir: Path, videos_json: Path, train_cfg: dict, split_name: str, captions: Path | None = None):
    """One split of a make-synthetic collection's captions (its own, unless given) joined to `workdir`'s features
    as training splits them, the text encoder, and the split videos' facts from videos.json."""
    work = Workdir(workdir)
    encoder = TextEncoder(work, torch.device("cpu"))
    captions_file = collection_captions(videos_json, captions)
    splits, _ = caption_splits(work, captions_file, None, train_cfg, encoder, False)
    facts = split_facts(videos_json, splits[split_name].video_ids, f"{captions_file} on {workdir}")
    return splits[split_name], encoder, facts


def split_facts(videos_json: Path, video_ids: list[str], source: str) -> dict[str, dict]:
    """make-synthetic's facts of each split video, by its exact file name; a video that videos.json does not
    hold means captions, workdir and videos.json are of different collections: an error, not a guess."""
    facts = {Path(f["video"]).name: f for f in json.loads(videos_json.read_text())}
    strangers = [video for video in video_ids if Path(video).name not in facts]
    if strangers:
        raise SystemExit(
            f"{videos_json}: {len(strangers)} of the split's {len(video_ids)} videos are not in it (e.g. "
            f"{strangers[0]}, from {source}): the captions, the workdir and videos.json must be of one collection"
        )
    return {video: facts[Path(video).name] for video in video_ids}


def analysis_parser(description: str) -> argparse.ArgumentParser:
    """The command line of a script that looks into one trained run on a make-synthetic collection (its own, or
    another one held out: --workdir and --videos-json of that collection, --checkpoint of the run)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="the workdir of the collection's features")
    parser.add_argument("--videos-json", type=Path, required=True, help="make-synthetic's videos.json")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the newest run's best")
    parser.add_argument("--captions", type=Path, default=None, help="default: captions.jsonl beside videos.json")
    parser.add_argument("--split", default="test")
    return parser


def analysis_arguments(description: str) -> argparse.Namespace:
    return analysis_parser(description).parse_args()


def _separation_line(name: str, part: dict) -> str:
    return (
        f"{name}: gate AUC {part['auc']:.3f} (named mean {part['named_mean']:.3f}, n={part['named_n']}; "
        f"unnamed mean {part['unnamed_mean']:.3f}, n={part['unnamed_n']})"
    )


def _pairs_line(pairs: dict) -> str:
    return (
        f"{pairs['mean_difference']:+.3f} on average, positive for {100 * pairs['share_positive']:.0f}% "
        f"({pairs['pairs']} clips)"
    )


def main() -> int:
    parser = analysis_parser(__doc__)
    parser.add_argument(
        "--per-kind",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="report the AUC per kind of sound and overall (default: where the collection has unnamed sounds "
        "of named kinds, as make-synthetic --unnamed same-kinds makes)",
    )
    args = parser.parse_args()
    model, path, split, encoder, facts = load_for_analysis(
        args.workdir, args.videos_json, args.checkpoint, args.split, args.captions
    )
    report = gate_report(model, split, facts, args.per_kind)
    if report["noise_n"] or "kinds" not in report:
        print(
            f"{path}: gate AUC {report['auc']:.3f} (named mean {report['named_mean']:.3f}, n={report['named_n']}; "
            f"noise mean {report['noise_mean']:.3f}, n={report['noise_n']})"
        )
    if "kinds" in report:
        print(_separation_line(f"{path}: named against every unnamed sound", report["overall"]))
        for kind, part in report["kinds"].items():
            print(_separation_line(f"  {kind}, named against unnamed of that kind", part))
    probe_file = args.videos_json.with_name("gate_probe.jsonl")
    if probe_file.is_file():
        lines = [json.loads(line) for line in probe_file.read_text().splitlines() if line.strip()]
        pairs = probe_pairs(model, split, encoder, [x for x in lines if x["split"] == args.split])
        print(
            f"one clip, two captions ({pairs['pairs']} clips): gate naming its sound - gate without it "
            f"{pairs['mean_difference']:+.3f} on average, positive for {100 * pairs['share_positive']:.0f}%"
        )
        if "unnamed" in pairs:
            print(
                "unnamed sound of a named kind, one clip under the caption naming its kind's named sound - "
                f"without it: {_pairs_line(pairs['unnamed'])}"
            )
            for kind, part in pairs["kinds"].items():
                print(f"  {kind}: named {_pairs_line(part['named'])}; unnamed {_pairs_line(part['unnamed'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
