"""Where retrieval fails on a make-synthetic collection, and what unnamed sound costs.

    .venv/bin/python benchmarks/failure_families.py --workdir W --videos-json DATA/videos.json [--checkpoint C]

For each caption of the split (test by default), whether its own clip ranks first (full GAIS score), counted by
the sound family of the clip (tone, word, noise, none), and for each miss what the top-1 clip differs in (shape,
colour, motion, background, sound). Then the same R@1 with the audio of some families muted at test time (their
mask set to no sound): if muting the unnamed noise lifts R@1, the heads let noise in that costs them, which is
what the gate is meant to shut out (METHOD.md, claim 1). `--split train` shows whether the same holds on the
clips the heads were trained on.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from gais_pipe.retrieval.heads import VideoBatch
from gais_pipe.retrieval.scoring import full_scores

sys.path.insert(0, str(Path(__file__).parent))
from gate_auc import analysis_arguments, load_for_analysis, sound_labels  # noqa: E402

LOOKS = ("shape", "colour", "motion", "background")
FAMILIES = ("tone", "word", "noise", "none")
MUTED = (("noise",), ("tone", "word"))


def differences(own: dict, top: dict) -> str:
    """What the top-1 clip differs in from the caption's own clip, e.g. "shape,sound[noise->none]"."""
    parts = [key for key in LOOKS if own.get(key) != top.get(key)]
    if own["sound"] != top["sound"]:
        parts.append(f"sound[{sound_labels(own)[0]}->{sound_labels(top)[0]}]")
    return ",".join(parts) or "the same look and sound"


@torch.no_grad()
def first_ranked(model, split, videos: VideoBatch) -> np.ndarray:
    """[C] the index of each caption's top-1 video."""
    scores = full_scores(model, split.text_features.float(), videos, 64)
    return np.asarray(scores).argmax(1)


def by_family(correct: np.ndarray, families: np.ndarray) -> str:
    return ", ".join(f"{f} {100 * correct[families == f].mean():.1f}" for f in FAMILIES if (families == f).any())


def main() -> int:
    args = analysis_arguments(__doc__)
    model, path, split, _, facts = load_for_analysis(
        args.workdir, args.videos_json, args.checkpoint, args.split, args.captions
    )
    clips = [facts[video] for video in split.video_ids]
    clip_family = np.array([sound_labels(fact)[0] for fact in clips])
    caption_family = clip_family[split.caption_video]
    videos = split.videos.take(np.arange(len(clips)))
    top = first_ranked(model, split, videos)
    correct = top == split.caption_video
    print(f"{path}, {args.split}: R@1 {100 * correct.mean():.1f} over {len(correct)} captions")
    misses = Counter(caption_family[~correct])
    totals = Counter(caption_family)
    print("  misses by the clip's sound: " + ", ".join(f"{f} {misses[f]}/{totals[f]}" for f in FAMILIES if totals[f]))
    kinds = Counter(differences(clips[split.caption_video[j]], clips[top[j]]) for j in np.flatnonzero(~correct))
    for kind, count in kinds.most_common():
        print(f"    {count:3d}  top-1 differs in {kind}")
    print(f"  R@1 by the clip's sound: {by_family(correct, caption_family)}")
    for families in MUTED:
        mask = videos.mask.clone()
        mask[torch.from_numpy(np.isin(clip_family, families))] = False
        muted = first_ranked(model, split, VideoBatch(videos.frames, videos.audio, mask)) == split.caption_video
        print(f"  {' and '.join(families)} muted: R@1 {100 * muted.mean():.1f} ({by_family(muted, caption_family)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
