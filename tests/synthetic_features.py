"""A workdir of synthetic cached features with a captions file, written directly (no decoding).

Each video has a visual class and a sound class; its frame features are the visual prototype plus
noise, its audio features the sound prototype plus noise. Captions name both classes, so a model
has to learn which words go with which prototypes. The CLIP checkpoint is the tiny random one,
saved in the workdir like a real extraction would, so text features come from the real code path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gais_pipe.config import load_config
from gais_pipe.extract.clip_model import load_clip
from gais_pipe.extract.mapper import FeatureRow
from gais_pipe.extract.shards import write_shard
from gais_pipe.extract_stage import feature_record
from gais_pipe.workdir import Workdir

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SOUNDS = ["a dog barking", "a siren", "rain", "a piano", "speech", "a drum"]
PHRASES = [
    "a video of {c} shapes with {s}",
    "{c} things moving while {s} plays",
    "footage in {c}, you can hear {s}",
]


class _Logmel:
    identity = {"encoder": "logmel", "sha256": None}
    dim = 64


def make_feature_workdir(
    root: Path,
    videos: int = 120,
    seed: int = 0,
    frames: int = 12,
    noise: float = 0.5,
    splits=(0.7, 0.15, 0.15),
) -> tuple[Path, Path]:
    """(workdir, captions.jsonl)."""
    rng = np.random.default_rng(seed)
    work = Workdir(root / "work")
    work.create()
    config = load_config("tiny")
    clip = load_clip(config["features"]["clip"], work.models_dir)
    record = feature_record(config, clip, _Logmel())
    work.identity_path.write_text(json.dumps(record))
    dim = clip.embed_dim
    visual = rng.standard_normal((len(COLOURS), dim)).astype(np.float32)
    audio = rng.standard_normal((len(SOUNDS), 64)).astype(np.float32) * 3
    rows, captions = [], []
    for i in range(videos):
        colour, sound = i % len(COLOURS), (i // len(COLOURS)) % len(SOUNDS)
        heard = i % 5 != 4  # every fifth video has no sound
        frame_features = visual[colour] + noise * rng.standard_normal((frames, dim))
        audio_features = (audio[sound] + noise * rng.standard_normal((frames, 64))) if heard else np.zeros((frames, 64))
        video_id = f"v{i:04d}.mp4"
        rows.append(
            FeatureRow(
                video_id,
                frame_features.astype(np.float16),
                audio_features.astype(np.float16),
                np.full(frames, heard),
                np.linspace(0, 1, frames, dtype=np.float32),
                1.0,
                25.0,
                1000 + i,
                0.0,
                heard,
                0,
                "synthetic",
            )
        )
        position = i / videos
        split = "train" if position < splits[0] else "val" if position < splits[0] + splits[1] else "test"
        for phrase in PHRASES:
            captions.append(
                {
                    "video": video_id,
                    "caption": phrase.format(c=COLOURS[colour], s=SOUNDS[sound] if heard else "silence"),
                    "split": split,
                }
            )
    order = rng.permutation(len(rows))  # splits spread over the classes
    for j, caption in enumerate(captions):
        caption["split"] = captions[3 * order[j // 3] + j % 3]["split"]
    shard = work.features_dir / "shard-synthetic-w000.h5"
    write_shard(shard, rows, {"feature_hash": record["feature_hash"], "worker": 0, "created": 0.0})
    work.add_shard(shard, len(rows))
    captions_path = root / "captions.jsonl"
    captions_path.write_text("".join(json.dumps(c) + "\n" for c in captions))
    return work.root, captions_path
