"""make-synthetic: deterministic, and made so that some captions can only be told apart by sound."""

import hashlib
import json
import shutil

import pytest
from conftest import extract, features

from gais_pipe.synthetic import TONES, make_synthetic, plan


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_collection(tmp_path):
    a = make_synthetic(tmp_path / "a", 12, seed=3)
    make_synthetic(tmp_path / "b", 12, seed=3)
    assert digest(tmp_path / "a/videos") == digest(tmp_path / "b/videos")
    assert (tmp_path / "a/captions.jsonl").read_text() == (tmp_path / "b/captions.jsonl").read_text()
    make_synthetic(tmp_path / "c", 12, seed=4)
    assert (tmp_path / "a/captions.jsonl").read_text() != (tmp_path / "c/captions.jsonl").read_text()
    assert a["videos"] == 12 and a["captions"] == 36


def test_the_plan_has_sound_twins_noise_distractors_and_silent_videos():
    specs = plan(200, seed=0)
    looks = {}
    for spec in specs:
        looks.setdefault((spec.shape, spec.colour, spec.motion), []).append(spec.sound)
    twins = [
        sounds for sounds in looks.values() if len({s for s in sounds if s in TONES or s.startswith("word:")}) >= 2
    ]
    assert twins, "some videos must look alike and differ only in sound"
    assert sum(s.sound.startswith("noise:") for s in specs) > 20
    assert sum(s.sound == "none" for s in specs) > 10
    assert {s.container for s in specs} == {"mp4", "mkv", "webm"}


def test_captions_name_sound_only_when_there_is_meaningful_sound(tmp_path):
    make_synthetic(tmp_path, 40, seed=0)
    facts = {f["video"]: f for f in json.loads((tmp_path / "videos.json").read_text())}
    captions = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert {c["split"] for c in captions} == {"train", "val", "test"}
    for caption in captions:
        sound = facts[caption["video"]]["sound"]
        heard = any(word in caption["caption"] for word in ("beeps", "hum", "whistle", "voice"))
        assert heard == (sound in TONES or sound.startswith("word:")), caption
        assert "noise" not in caption["caption"]
    assert len({c["caption"] for c in captions if c["video"] == captions[0]["video"]}) == 3  # paraphrases


def test_synthetic_videos_extract_with_the_right_audio_masks(tmp_path):
    make_synthetic(tmp_path, 16, seed=1)
    summary = extract(tmp_path / "videos", tmp_path / "work")
    assert summary.failed == 0 and summary.extracted == 16
    facts = {f["video"]: f for f in json.loads((tmp_path / "videos.json").read_text())}
    stored = features(tmp_path / "work")
    for video, mask in zip(stored["video_id"], stored["audio_mask"]):
        assert mask.all() == (facts[video]["sound"] != "none"), video


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_spoken_words_are_used_where_espeak_is_installed():
    assert any(spec.sound.startswith("word:") for spec in plan(100, seed=0))
