"""Captions joined to extracted features: per split, the videos, their features and their captions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gais_pipe.workdir import RowRef, Workdir, read_features
from gais_pipe.workdir.shards import read_rows

from .captions import Caption, CaptionError, match_videos
from .heads import VideoBatch


class ShardVideos:
    """Video features read from the shards on demand, for collections that do not fit in memory."""

    COLUMNS = ("frame_features", "audio_features", "audio_mask")

    def __init__(self, refs: list[RowRef]):
        self.refs = refs

    def __len__(self) -> int:
        return len(self.refs)

    def take(self, rows) -> VideoBatch:
        rows = np.asarray(rows).reshape(-1)
        by_shard: dict = {}
        for position, row in enumerate(rows):
            ref = self.refs[int(row)]
            by_shard.setdefault(ref.shard, []).append((ref.row, position))
        out: dict[str, np.ndarray] = {}
        for shard, pairs in by_shard.items():
            unique = sorted({row for row, _ in pairs})  # h5py reads increasing, unique rows
            values = read_rows(shard, np.array(unique), list(self.COLUMNS))
            where = {row: i for i, row in enumerate(unique)}
            for name, array in values.items():
                if name not in out:
                    out[name] = np.empty((len(rows), *array.shape[1:]), array.dtype)
                for row, position in pairs:
                    out[name][position] = array[where[row]]
        return VideoBatch(*(torch.from_numpy(out[name]) for name in self.COLUMNS))


@dataclass
class Split:
    name: str
    video_ids: list[str]  # extracted ids
    videos: VideoBatch | ShardVideos  # features of those videos, in that order (take(rows) -> VideoBatch)
    texts: list[str]
    text_features: torch.Tensor  # [C, D]
    caption_video: np.ndarray  # [C] index into video_ids

    def __len__(self) -> int:
        return len(self.texts)

    def captions_by_video(self) -> list[np.ndarray]:
        """For each video (by row), its captions' indices; computed once (sampling asks every step)."""
        if getattr(self, "_by_video", None) is None:
            order = np.argsort(self.caption_video, kind="stable")
            bounds = np.searchsorted(self.caption_video[order], np.arange(len(self.video_ids) + 1))
            self._by_video = [order[bounds[i] : bounds[i + 1]] for i in range(len(self.video_ids))]
        return self._by_video


@dataclass
class JoinReport:
    videos: int
    captions: int
    missing: list[str]  # annotation ids with no extracted video


def caption_splits(
    work: Workdir,
    captions_path,
    dataset: str | None,
    train_cfg: dict,
    encode_texts,
    allow_missing: bool,
    lazy: bool = False,
) -> tuple[dict[str, Split], JoinReport]:
    """Load the annotations, carve val from train as the training config says, and join to features.
    Train and eval both come here, so eval sees exactly the splits training saw."""
    from .captions import carve_validation, load_captions

    captions = carve_validation(
        load_captions(captions_path, dataset),
        float(train_cfg["val_ratio"]),
        int(train_cfg["seed"]),
        int(train_cfg.get("val_min_videos", 1)),  # .get: checkpoints from before the key existed
    )
    return join(work, captions, encode_texts, allow_missing, lazy)


def join(
    work: Workdir, captions: list[Caption], encode_texts, allow_missing: bool, lazy: bool = False
) -> tuple[dict[str, Split], JoinReport]:
    """Match captions to extracted videos and embed them; missing videos stop the run unless allowed.

    Video features are held in memory, or with `lazy` read from the shards batch by batch."""
    located = work.rows()
    mapping, missing = match_videos(captions, sorted(located))
    if missing and not allow_missing:
        raise CaptionError(
            f"{len(missing)} annotated videos are not extracted in {work.root} (first: {', '.join(missing[:5])}); "
            f"extract them, or pass --allow-missing to skip their captions"
        )
    kept = [c for c in captions if c.video in mapping]
    if not kept:
        raise CaptionError(f"no caption matches an extracted video in {work.root}")
    wanted = sorted({mapping[c.video] for c in kept})
    columns = None if lazy else read_features(work, list(ShardVideos.COLUMNS), wanted, located)
    row_of = {video_id: i for i, video_id in enumerate(wanted)}
    embeddings = encode_texts([c.text for c in kept])
    splits = {}
    for name in ("train", "val", "test"):
        chosen = [i for i, c in enumerate(kept) if c.split == name]
        if not chosen:
            continue
        split_videos = sorted({mapping[kept[i].video] for i in chosen})
        local = {video_id: i for i, video_id in enumerate(split_videos)}
        rows = np.array([row_of[v] for v in split_videos])
        splits[name] = Split(
            name=name,
            video_ids=split_videos,
            videos=ShardVideos([located[v] for v in split_videos])
            if columns is None  # lazy
            else VideoBatch(
                torch.from_numpy(columns["frame_features"][rows]),
                torch.from_numpy(columns["audio_features"][rows]),
                torch.from_numpy(columns["audio_mask"][rows]),
            ),
            texts=[kept[i].text for i in chosen],
            text_features=torch.from_numpy(embeddings[chosen]),
            caption_video=np.array([local[mapping[kept[i].video]] for i in chosen]),
        )
    return splits, JoinReport(len(wanted), len(kept), missing)


# --- sampling for training ---------------------------------------------------------------------
def epoch_batches(split: Split, batch_size: int, seed: int, epoch: int, world: int) -> list[np.ndarray]:
    """One random caption per video (X-Pool's sampling), videos shuffled; the same on every process."""
    generator = np.random.default_rng([seed, epoch])
    by_video = split.captions_by_video()
    videos = generator.permutation([v for v in range(len(by_video)) if len(by_video[v])])
    captions = np.array([generator.choice(by_video[v]) for v in videos])
    batches = [captions[i : i + batch_size] for i in range(0, len(captions), batch_size)]
    if world > 1:  # every process needs an equal share of rows
        batches = [b[: len(b) - len(b) % world] for b in batches]
    return [b for b in batches if len(b) >= max(2, world)]


def variance_texts(
    split: Split, captions: np.ndarray, per_video: int, generator: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random sample of up to `per_video` captions of each batch video, and which video each
    belongs to: the semantic variance of a video's captions, not of always the same first few."""
    chosen, groups = [], []
    for group, caption in enumerate(captions):
        siblings = split.captions_by_video()[split.caption_video[caption]]
        if len(siblings) > per_video:
            siblings = np.sort(generator.choice(siblings, per_video, replace=False))
        chosen.extend(siblings.tolist())
        groups.extend([group] * len(siblings))
    return split.text_features[chosen], torch.tensor(groups)
