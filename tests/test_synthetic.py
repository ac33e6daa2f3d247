"""make-synthetic: deterministic, and made so that some captions can only be told apart by sound."""

import hashlib
import json
import shutil
from collections import defaultdict

import numpy as np
import pytest
from conftest import extract, features

from gais_pipe.synthetic import TONES, captions_for, facts_for, make_synthetic, plan

FAMILIES = {"tone", "word", "noise", "none"}


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_collection(tmp_path):
    a = make_synthetic(tmp_path / "a", 12, seed=3)
    make_synthetic(tmp_path / "b", 12, seed=3)
    assert digest(tmp_path / "a/videos") == digest(tmp_path / "b/videos")
    for name in ("captions.jsonl", "videos.json", "gate_probe.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    make_synthetic(tmp_path / "c", 12, seed=4)
    assert (tmp_path / "a/captions.jsonl").read_text() != (tmp_path / "c/captions.jsonl").read_text()
    assert a["videos"] == 12 and a["captions"] == 36


def test_the_plan_has_sound_twins_noise_and_videos_without_audio():
    specs = plan(200, seed=0)
    looks = defaultdict(list)
    for spec in specs:
        looks[spec.look].append(spec.sound)
    twins = [
        sounds for sounds in looks.values() if len({s for s in sounds if s in TONES or s.startswith("word:")}) >= 2
    ]
    assert len(twins) > 20, "many videos must look alike and differ only in sound"
    assert sum(s.family == "noise" for s in specs) > 20
    assert sum(s.family == "none" for s in specs) > 10
    assert {s.container for s in specs} == {"mp4", "mkv", "webm"}


@pytest.mark.parametrize("seed", [0, 1])
def test_captions_are_unique_wherever_videos_differ(seed):
    """The default collection: no caption text belongs to two videos, so training sees no false negatives."""
    specs = plan(240, seed)
    owners = defaultdict(set)
    for spec in specs:
        for caption in captions_for(spec):
            owners[caption].add(spec.name)
    shared = {caption: videos for caption, videos in owners.items() if len(videos) > 1}
    assert not shared, list(shared.items())[:3]
    assert len(owners) == 3 * len(specs)


def test_noise_is_random_per_clip_and_never_named():
    noisy = [spec for spec in plan(240, 0) if spec.family == "noise"]
    params = {spec.noise for spec in noisy}
    assert len(params) == len(noisy), "every noise clip draws its own noise"
    assert {n.colour for n in params} == {"white", "pink", "brown"}
    assert any(n.bursts for n in params) and any(not n.bursts for n in params)
    assert len({n.level for n in params}) > 10 and len({n.high_hz for n in params}) > 10
    assert all(spec.description() is None for spec in noisy)


def test_captions_name_sound_only_when_there_is_meaningful_sound(tmp_path):
    make_synthetic(tmp_path, 40, seed=0)
    facts = {f["video"]: f for f in json.loads((tmp_path / "videos.json").read_text())}
    captions = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert {c["split"] for c in captions} == {"train", "val", "test"}
    for caption in captions:
        fact = facts[caption["video"]]
        heard = any(word in caption["caption"] for word in ("beeps", "hum", "whistle", "voice"))
        assert heard == fact["sound_named"] == (fact["sound_family"] in ("tone", "word")), caption
        assert "noise" not in caption["caption"] and caption["split"] == fact["split"]
    assert len({c["caption"] for c in captions if c["video"] == captions[0]["video"]}) == 3  # paraphrases


def test_videos_json_tells_family_naming_and_split_of_every_video():
    for spec in plan(60, seed=2):
        fact = facts_for(spec, "test")
        assert fact["video"] == spec.name and fact["split"] == "test" and fact["sound"] == spec.sound
        assert fact["sound_family"] in FAMILIES and isinstance(fact["sound_named"], bool)
        assert fact["has_audio"] == (fact["sound_family"] != "none")
        assert (fact["noise"] is not None) == (fact["sound_family"] == "noise")
        assert fact["sound"].startswith({"tone": "", "word": "word:", "noise": "noise:", "none": "none"}[spec.family])


def test_gate_probe_pairs_each_named_test_clip_with_a_caption_that_does_not_name_its_sound(tmp_path):
    made = make_synthetic(tmp_path, 60, seed=0)
    facts = {f["video"]: f for f in json.loads((tmp_path / "videos.json").read_text())}
    own = defaultdict(set)
    for line in (tmp_path / "captions.jsonl").read_text().splitlines():
        own[json.loads(line)["video"]].add(json.loads(line)["caption"])
    probes = defaultdict(dict)
    for line in open(made["gate_probe_file"]).read().splitlines():
        item = json.loads(line)
        assert item["split"] == "test" and item["sound"] == facts[item["video"]]["sound"]
        probes[item["video"]][item["names_sound"]] = item["caption"]
    expected = {v for v, f in facts.items() if f["split"] == "test" and f["sound_named"]}
    assert set(probes) == expected and expected
    for video, pair in probes.items():
        assert pair[True] in own[video]  # the naming caption is one of the clip's own
        assert pair[True].startswith(pair[False] + ",") and pair[False] not in own[video]


def test_synthetic_videos_extract_with_the_right_audio_masks(tmp_path):
    make_synthetic(tmp_path, 16, seed=1)
    summary = extract(tmp_path / "videos", tmp_path / "work")
    assert summary.failed == 0 and summary.extracted == 16
    facts = {f["video"]: f for f in json.loads((tmp_path / "videos.json").read_text())}
    stored = features(tmp_path / "work")
    for video, mask in zip(stored["video_id"], stored["audio_mask"]):
        assert mask.all() == facts[video]["has_audio"], video


def test_tiny_features_tell_videos_and_sounds_apart(tmp_path):
    """The frames of different looks do not collapse onto one direction, and beeps differ from a hum in
    the segment std that the tiny config stores beside the mean."""
    make_synthetic(tmp_path, 24, seed=0)
    extract(tmp_path / "videos", tmp_path / "work")
    facts = {f["video"]: f for f in json.loads((tmp_path / "videos.json").read_text())}
    stored = features(tmp_path / "work")
    mean = stored["frame_features"].astype(np.float32).mean(1)
    unit = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    assert (unit @ unit.T)[~np.eye(len(unit), dtype=bool)].mean() < 0.95
    audio = stored["audio_features"].astype(np.float32)
    heard = zip(stored["video_id"], audio, stored["audio_mask"])
    spread = {facts[v]["sound"]: float(a[m, 64:].mean()) for v, a, m in heard if m.any()}  # the std half
    assert spread["beep"] > 2 * spread["hum"], spread


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_spoken_words_are_used_where_espeak_is_installed():
    assert any(spec.sound.startswith("word:") for spec in plan(100, seed=0))
