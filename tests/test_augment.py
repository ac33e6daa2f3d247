"""The audio neighbour swap: who hears whose audio during training."""

import numpy as np
import torch

from gais_pipe.retrieval.augment import AudioNeighbours, mean_heard_audio, with_audio_of
from gais_pipe.retrieval.heads import VideoBatch
from gais_pipe.retrieval.standardise import Standardiser


def clustered_videos(per_class=6, classes=3, silent=2, frames=4, dim=8, seed=0):
    """Videos whose audio is one of `classes` directions plus small noise, then `silent` videos with no sound."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:classes] * 5
    audio, labels = [], []
    for label in range(classes):
        for _ in range(per_class):
            audio.append(centres[label] + 0.3 * torch.randn(frames, dim, generator=generator))
            labels.append(label)
    audio += [torch.randn(frames, dim, generator=generator) for _ in range(silent)]
    labels += [-1] * silent
    count = len(audio)
    mask = torch.ones(count, frames, dtype=torch.bool)
    mask[count - silent :] = False
    frames_ = torch.arange(count, dtype=torch.float32)[:, None, None].expand(count, frames, dim).clone()
    return VideoBatch(frames_, torch.stack(audio), mask), np.array(labels)


def test_neighbours_share_the_sound_and_are_never_the_clip_itself():
    videos, labels = clustered_videos()
    neighbours = AudioNeighbours(videos, Standardiser(8), k=3, pool=1000, seed=0).neighbours
    heard = labels >= 0
    rows = np.arange(len(labels))
    assert (labels[neighbours[heard]] == labels[heard, None]).all()
    assert (neighbours[heard] != rows[heard, None]).all()
    assert (neighbours[~heard] == rows[~heard, None]).all()  # silent videos only ever hear themselves


def test_silent_segments_do_not_count_in_the_mean():
    videos, _ = clustered_videos(silent=0)
    videos.mask[0, 1:] = False
    videos.audio[0, 1:] = 1e6  # what a silent segment holds must not matter
    means, heard = mean_heard_audio(videos, Standardiser(8))
    assert torch.allclose(means[0], videos.audio[0, 0])
    assert heard.all()


def test_swap_probability_zero_keeps_every_video_its_own_audio_and_one_swaps_every_heard_one():
    videos, labels = clustered_videos()
    neighbours = AudioNeighbours(videos, Standardiser(8), k=2, pool=1000, seed=0)
    rows = np.arange(len(labels))
    generator = np.random.default_rng(0)
    assert (neighbours.audio_rows(rows, 0.0, generator) == rows).all()
    swapped = neighbours.audio_rows(rows, 1.0, generator)
    heard = labels >= 0
    assert (swapped[heard] != rows[heard]).all()
    assert (labels[swapped[heard]] == labels[heard]).all()
    assert (swapped[~heard] == rows[~heard]).all()
    half = neighbours.audio_rows(np.repeat(rows[:1], 2000), 0.5, generator)
    assert 0.4 < (half != 0).mean() < 0.6


def test_the_pool_bounds_where_neighbours_come_from():
    videos, labels = clustered_videos(per_class=20)
    neighbours = AudioNeighbours(videos, Standardiser(8), k=1, pool=10, seed=3).neighbours
    heard = labels >= 0
    assert len(np.unique(neighbours[heard])) <= 10


def test_with_audio_of_takes_frames_from_the_video_and_audio_from_the_neighbour():
    videos, _ = clustered_videos()
    rows, heard = np.array([0, 1, 2]), np.array([0, 7, 2])
    batch = with_audio_of(videos, rows, heard)
    assert torch.equal(batch.frames, videos.frames[rows])
    assert torch.equal(batch.audio, videos.audio[heard])
    assert torch.equal(batch.mask, videos.mask[heard])


def test_describe_counts_the_videos_that_have_neighbours():
    videos, labels = clustered_videos(per_class=4, classes=2, silent=3)
    text = AudioNeighbours(videos, Standardiser(8), k=2, pool=1000, seed=0).describe(0.5)
    assert "2 nearest neighbours" in text and "probability 0.5" in text and "(8 of 11 videos" in text


def test_heads_on_raw_inputs_still_search_neighbours_on_standardised_audio():
    """Raw audio has one large offset and dimensions of very different spread: a loudness that varies from clip to
    clip and says nothing of the sound would pick the neighbours (40% the same sound here, 100% standardised)."""
    from gais_pipe.config import load_config
    from gais_pipe.retrieval.data import Split
    from gais_pipe.retrieval.heads import GAISHead
    from gais_pipe.train_stage import audio_neighbours

    videos, labels = clustered_videos(per_class=8, classes=3, silent=0, dim=8)
    videos.audio += 1000.0
    loudness = 100 * torch.randn(len(labels), 1, generator=torch.Generator().manual_seed(1))
    videos.audio[:, :, 7] += loudness
    assert (labels[AudioNeighbours(videos, Standardiser(8), 4, 1000, 0).neighbours] == labels[:, None]).mean() < 0.6
    frames = torch.randn(len(labels), 4, 8)
    split = Split(
        "train",
        [str(i) for i in range(len(labels))],
        VideoBatch(frames, videos.audio, videos.mask),
        [],
        torch.randn(5, 8),
        np.zeros(0, dtype=int),
    )
    config = load_config("tiny", ["model.standardise=false"])
    model = GAISHead(8, 8, 4, config["model"])
    neighbours = audio_neighbours(model, split, config).neighbours
    assert (labels[neighbours] == labels[:, None]).all()
    assert torch.equal(model.audio_stats.std, torch.ones(8))  # the heads' own inputs stay raw
    config = load_config("tiny", ["model.audio=false"])
    assert audio_neighbours(GAISHead(8, 8, 4, config["model"]), split, config) is None


def test_audio_drop_silences_about_its_share_of_clips_and_nothing_else():
    from gais_pipe.retrieval.augment import silence_some

    generator = torch.Generator().manual_seed(0)
    batch = VideoBatch(
        torch.randn(400, 3, 4, generator=generator),
        torch.randn(400, 3, 2, generator=generator),
        torch.ones(400, 3, dtype=torch.bool),
    )
    rng = np.random.default_rng(0)
    assert silence_some(batch, 0.0, rng) is batch and rng.random() == np.random.default_rng(0).random()  # no draw
    dropped = silence_some(batch, 0.15, np.random.default_rng(1))
    silent = ~dropped.mask.any(1)
    assert 0.10 < silent.float().mean() < 0.20 and (dropped.mask.all(1) | silent).all()  # whole clips, ~15%
    assert torch.equal(dropped.frames, batch.frames) and torch.equal(dropped.audio, batch.audio)
    assert batch.mask.all()  # the caller's batch is not changed
