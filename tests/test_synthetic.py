"""make-synthetic: deterministic, and made so that some captions can only be told apart by sound."""

import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import extract, features

from gais_pipe import synthetic
from gais_pipe.synthetic import (
    NAMED_PARAMS,
    OTHER_WORDS,
    TONES,
    WORDS,
    captions_for,
    facts_for,
    make_synthetic,
    plan,
)

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


# --- make-synthetic --unnamed same-kinds: unnamed sounds of the named kinds, told apart only by the caption ---

# sha256 of captions.jsonl + videos.json + gate_probe.jsonl of the default collection (60 videos), made by the
# generator before `--unnamed` existed: the option must leave the default bit for bit as it was.
DEFAULT_DIGESTS = {
    (True, 0): "64fe08d39f84fdab122feb0c8de0c0ff8bb7c0cd7d12863aee277f4bdd72c732",
    (True, 7): "d890548cf06b9f392438823717306a288169587695df17d1947f3a683e7a04f4",
    (False, 0): "0a327e03d62ce8fc3523b976bdde700b85893f0982bbc3ec22f3aebedf7ffa21",
    (False, 7): "b7c27d9a3e44d04856daafff6e022f7af8c470fd28ac336d28e9d3fc7c04b668",
}
TEXT_FILES = ("captions.jsonl", "videos.json", "gate_probe.jsonl")


def espeak(monkeypatch, present: bool) -> None:
    """Plan as if espeak-ng were (or were not) installed: the plan only asks whether it is."""
    which = shutil.which
    fake = "/usr/bin/espeak-ng" if present else None
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: fake if name == "espeak-ng" else which(name))


def texts_only(monkeypatch, out, *args, **kwargs) -> str:
    """make_synthetic without the video files: the digest of the text files it writes."""
    monkeypatch.setattr(synthetic, "_make_video", lambda *a: None)
    synthetic.make_synthetic(out, *args, **kwargs)
    return hashlib.sha256(b"".join((out / name).read_bytes() for name in TEXT_FILES)).hexdigest()


@pytest.mark.parametrize("has_espeak,seed", sorted(DEFAULT_DIGESTS))
def test_the_default_collection_is_unchanged_by_the_unnamed_option(tmp_path, monkeypatch, has_espeak, seed):
    espeak(monkeypatch, has_espeak)
    assert texts_only(monkeypatch, tmp_path / "a", 60, seed) == DEFAULT_DIGESTS[(has_espeak, seed)]
    assert texts_only(monkeypatch, tmp_path / "b", 60, seed, unnamed="noise") == DEFAULT_DIGESTS[(has_espeak, seed)]
    texts_only(monkeypatch, tmp_path / "c", 60, seed, unnamed="same-kinds")  # the same captions, other sounds
    assert (tmp_path / "c/captions.jsonl").read_text() == (tmp_path / "a/captions.jsonl").read_text()


def same_kinds_plan(monkeypatch, count=300, seed=0, has_espeak=True):
    espeak(monkeypatch, has_espeak)
    return plan(count, seed), plan(count, seed, "same-kinds")


def unnamed_of_kind(specs):
    return [s for s in specs if s.description() is None and s.family in ("tone", "word")]


@pytest.mark.parametrize("has_espeak", [True, False])
def test_same_kinds_replaces_the_noise_by_unnamed_sounds_of_the_named_kinds(monkeypatch, has_espeak):
    default, same = same_kinds_plan(monkeypatch, has_espeak=has_espeak)
    assert [(s.name, s.look, s.container) for s in default] == [(s.name, s.look, s.container) for s in same]
    for old, new in zip(default, same):  # the same plan but for what the noise clips hear
        assert new == old if old.family != "noise" else (new.variant is not None and new.noise is None)
    assert not any(s.family == "noise" for s in same)
    unnamed = unnamed_of_kind(same)
    named_kinds = {s.kind for s in same if s.description() is not None}
    assert {s.kind for s in unnamed} == named_kinds == ({*TONES, "word"} if has_espeak else set(TONES))
    assert all(sum(s.kind == kind for s in unnamed) >= 8 for kind in named_kinds), "every kind, several times"
    tones = [s for s in unnamed if s.family == "tone"]
    assert len({s.variant for s in tones}) == len(tones), "a tone's parameters are drawn per clip"
    words = {s.variant.params[0][1] for s in unnamed if s.family == "word"}  # from the fixed list OTHER_WORDS
    assert len(words) >= (6 if has_espeak else 0)


def test_unnamed_sounds_have_other_parameters_at_the_named_loudness_and_length(monkeypatch):
    _, same = same_kinds_plan(monkeypatch)
    named = NAMED_PARAMS
    for spec in unnamed_of_kind(same):
        p = dict(spec.variant.params)
        if spec.kind == "word":
            assert p["word"] in OTHER_WORDS and p["word"] not in WORDS and spec.sound == f"word:{p['word']}"
            continue
        assert spec.sound == f"{spec.kind}:other"
        assert abs(p["level"] - named[spec.kind]["level"]) <= 0.05 + 1e-9
        if spec.kind == "beep":  # another pitch and another rate
            assert not 1050 < p["pitch_hz"] < 2100 and not 3.0 < p["rate_hz"] < 5.5, p
        elif spec.kind == "hum":
            assert not 85 < p["pitch_hz"] < 170, p
        else:  # a whistle sweeping up or down at least twice as fast as the named one, across its band
            speed = abs(p["end_hz"] - p["start_hz"]) / synthetic.SECONDS
            assert speed >= 2 * 600 - 1 and min(p["start_hz"], p["end_hz"]) < 500 and max(p.values()) > 2600, p
    whistles = [s.variant.value("end_hz") > s.variant.value("start_hz") for s in same if s.sound == "whistle:other"]
    assert any(whistles) and not all(whistles), "rising and falling"
    # the sounds themselves: whole clips at about the named loudness, the tone at the drawn frequency
    rng = np.random.default_rng(0)
    named_rms = {k: np.sqrt(np.mean(synthetic.tone(k, v) ** 2)) for k, v in named.items()}
    for spec in [s for s in unnamed_of_kind(same) if s.family == "tone"][:12]:
        audio = synthetic._audio(spec, rng)
        assert len(audio) == int(synthetic.SECONDS * synthetic.RATE)
        assert 0.7 < np.sqrt(np.mean(audio**2)) / named_rms[spec.kind] < 1.4, spec
        if spec.kind in ("beep", "hum"):
            spectrum = np.abs(np.fft.rfft(audio))
            peak = np.fft.rfftfreq(len(audio), 1 / synthetic.RATE)[spectrum.argmax()]
            assert abs(peak - spec.variant.value("pitch_hz")) < 5, (spec, peak)  # beeps: sidebands at the rate


def test_the_named_tones_are_their_named_parameters():
    rng = np.random.default_rng(0)
    for kind, params in NAMED_PARAMS.items():
        spec = synthetic.Spec("v.mp4", "circle", "red", "still", "black", kind, "mp4")
        assert np.array_equal(synthetic.tone(kind, params), synthetic._audio(spec, rng))


@pytest.mark.parametrize("seed", [0, 1])
def test_no_caption_names_an_unnamed_sound_and_captions_stay_unique(monkeypatch, seed):
    _, same = same_kinds_plan(monkeypatch, 300, seed)
    owners = defaultdict(set)
    for spec in same:
        for caption in captions_for(spec):
            owners[caption].add(spec.name)
            assert not any(word in caption for word in OTHER_WORDS), caption
            if spec.description() is None:  # what is seen only
                assert not any(w in caption for w in ("beeps", "hum", "whistle", "voice", "plays", "hear")), caption
    assert len(owners) == 3 * len(same) and all(len(v) == 1 for v in owners.values())


def test_same_kinds_facts_and_gate_probe_record_naming_kind_and_parameters(tmp_path, monkeypatch):
    espeak(monkeypatch, True)
    monkeypatch.setattr(synthetic, "_make_video", lambda *a: None)
    made = make_synthetic(tmp_path, 200, seed=0, unnamed="same-kinds")
    facts = {f["video"]: f for f in json.loads((tmp_path / "videos.json").read_text())}
    specs = {s.name: s for s in plan(200, 0, "same-kinds")}
    for video, fact in facts.items():
        spec = specs[video]
        assert fact["sound_kind"] == spec.kind and fact["sound_named"] == (spec.description() is not None)
        assert fact["sound_family"] == spec.family and fact["noise"] is None
        if fact["sound_family"] == "none":
            assert fact["sound_params"] is None and fact["sound_kind"] == "none"
        elif not fact["sound_named"]:
            assert fact["sound_params"] == dict(spec.variant.params)
        elif spec.family == "tone":
            assert fact["sound_params"] == NAMED_PARAMS[fact["sound"]]
        else:
            assert fact["sound_params"]["word"] == fact["sound"][5:] in WORDS
    probes = defaultdict(list)
    for line in Path(made["gate_probe_file"]).read_text().splitlines():
        item = json.loads(line)
        probes[item["video"]].append(item)
    heard = {v for v, f in facts.items() if f["split"] == "test" and f["sound_family"] in ("tone", "word")}
    assert set(probes) == heard and any(not facts[v]["sound_named"] for v in heard)
    for video, (sounded, plain) in probes.items():
        fact = facts[video]
        assert plain["caption_sound"] is None and not plain["names_sound"]
        assert sounded["caption"].startswith(plain["caption"] + ",")
        assert sounded["sound_kind"] == fact["sound_kind"] and sounded["sound_named"] == fact["sound_named"]
        assert sounded["names_sound"] == fact["sound_named"]  # an unnamed clip: the caption names another sound
        asked = sounded["caption_sound"]
        assert asked == fact["sound"] if fact["sound_named"] else asked != fact["sound"]
        assert (asked if asked in TONES else "word") == fact["sound_kind"]  # the named sound of the clip's kind


def test_same_kinds_videos_carry_their_drawn_sound(tmp_path, monkeypatch):
    """The files themselves: a hum of another frequency decodes at that frequency."""
    espeak(monkeypatch, False)  # tones only: quick
    make_synthetic(tmp_path, 30, seed=0, unnamed="same-kinds")
    hums = [f for f in json.loads((tmp_path / "videos.json").read_text()) if f["sound"] == "hum:other"]
    assert hums
    with av.open(str(tmp_path / "videos" / hums[0]["video"])) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=synthetic.RATE)
        chunks = [r.to_ndarray()[0] for frame in container.decode(audio=0) for r in resampler.resample(frame)]
    audio = np.concatenate(chunks)
    peak = np.fft.rfftfreq(len(audio), 1 / synthetic.RATE)[np.abs(np.fft.rfft(audio)).argmax()]
    assert abs(peak - hums[0]["sound_params"]["pitch_hz"]) < 3, (peak, hums[0])


def test_log_mel_features_tell_the_unnamed_sound_from_the_named_and_read_its_kind(monkeypatch):
    """A linear probe on the tiny config's audio features (log-mel mean and std per segment, from the generated
    waveforms): within each kind, named from unnamed; and a kind probe fit on unnamed sounds reads the named ones
    as their kinds. Otherwise no model could do what the collection asks, or the sounds would not be one kind."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from feature_probe import fit_predict, grouped_accuracy

    from gais_pipe.config import load_config
    from gais_pipe.extract.audio_encoders import LogMelEncoder

    frontend = LogMelEncoder(load_config("tiny", [])["features"]["audio"]).frontend
    espeak(monkeypatch, False)  # tones: the words need espeak-ng and take longer (measured in the README)
    specs = [s for s in plan(120, 0, "same-kinds") if s.family == "tone"]
    rows, kinds, named, clip = [], [], [], []
    for i, spec in enumerate(specs):
        frames = frontend(synthetic._audio(spec, np.random.default_rng(i)))
        for segment in np.array_split(frames, 12):
            rows.append(np.concatenate([segment.mean(0), segment.std(0)]))
            kinds.append(spec.kind), named.append(spec.description() is not None), clip.append(i)
    x, kind, named, clip = np.stack(rows), np.array(kinds), np.array(named), np.array(clip)
    for k in TONES:
        own = kind == k
        accuracy = grouped_accuracy(x[own], named[own].astype(str), clip[own])
        assert accuracy >= 0.95, (k, accuracy)
    read = fit_predict(x[~named], kind[~named], x[named], 1e-4)
    assert (read == kind[named]).mean() >= 0.9, {k: (read[kind[named] == k] == k).mean() for k in TONES}


def test_a_bad_unnamed_value_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from gais_pipe.cli import app

    with pytest.raises(ValueError, match="same-kinds"):
        plan(10, 0, "nope")
    for args, message in (
        (["--unnamed", "tones"], "--unnamed: unknown kind of unnamed sound 'tones' (choose from: noise, same-kinds)"),
        (["--videos", "0"], "--videos 0: give at least 1"),
    ):
        result = CliRunner().invoke(app, ["make-synthetic", str(tmp_path / "out"), *args])
        assert result.exit_code == 2 and result.output.strip() == f"error: {message}", result.output
        assert not (tmp_path / "out").exists()


def test_gate_auc_reports_named_against_unnamed_within_each_kind(tmp_path, monkeypatch):
    """benchmarks/gate_auc.py on a same-kinds collection: per kind and overall; on a default one as before."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from gate_auc import kind_report, same_kinds, sound_kind

    default, same = same_kinds_plan(monkeypatch, 60, 0)
    old = {s.name: facts_for(s, "test") for s in default}
    new = {s.name: facts_for(s, "test", kinds=True) for s in same}
    assert not same_kinds(old) and same_kinds(new)
    assert all(
        sound_kind(old[name]) == new_fact["sound_kind"]
        for name, new_fact in new.items()
        if name in old and old[name]["sound_family"] != "noise"
    )
    rows = [
        ("tone", True, "beep", 0.9),
        ("tone", False, "beep", 0.2),
        ("tone", False, "beep", 0.95),
        ("word", True, "word", 0.6),
        ("word", False, "word", 0.7),
        ("noise", False, "noise", 0.1),
    ]
    report = kind_report(rows)
    assert report["kinds"]["beep"]["auc"] == 0.5 and report["kinds"]["word"]["auc"] == 0.0
    assert report["kinds"]["beep"]["unnamed_n"] == 2 and set(report["kinds"]) == {"beep", "word"}
    assert report["overall"]["auc"] == pytest.approx(5 / 8) and report["overall"]["unnamed_n"] == 4


def test_gate_auc_probe_pairs_keep_unnamed_clips_apart(tmp_path, monkeypatch):
    """The one-clip test on a same-kinds collection: named clips as before, unnamed ones reported beside them."""
    import sys
    from types import SimpleNamespace

    import torch

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from gate_auc import probe_pairs

    espeak(monkeypatch, True)
    monkeypatch.setattr(synthetic, "_make_video", lambda *a: None)

    class Batch:
        mask = torch.ones(1, 12)

        def to(self, device):
            return self

    model = SimpleNamespace(
        eval=lambda: None,
        encode_text=lambda texts: texts,
        pool=lambda texts, batch: SimpleNamespace(gates=texts[:, :1, None].expand(-1, 1, 12)),
    )

    def gates(captions):  # a gate of 0.8 under a caption that names a sound, 0.3 without
        return np.array([[0.8 if ", while" in c else 0.3] for c in captions], np.float32)

    for unnamed in ("noise", "same-kinds"):
        made = make_synthetic(tmp_path / unnamed, 200, seed=0, unnamed=unnamed)
        lines = [json.loads(line) for line in Path(made["gate_probe_file"]).read_text().splitlines()]
        videos = sorted({line["video"] for line in lines})
        split = SimpleNamespace(video_ids=videos, videos=SimpleNamespace(take=lambda rows: Batch()))
        report = probe_pairs(model, split, gates, lines)
        named = {line["video"] for line in lines if line.get("sound_named", True)}
        assert report["pairs"] == len(named) and report["mean_difference"] == pytest.approx(0.5)
        if unnamed == "noise":
            assert set(report) == {"pairs", "mean_difference", "share_positive"}
        else:
            assert report["unnamed"]["pairs"] == len(videos) - len(named) > 0
            assert report["unnamed"]["mean_difference"] == pytest.approx(0.5)
            assert set(report["kinds"]) == {*TONES, "word"}


def test_gate_auc_reads_the_collections_own_captions_and_refuses_another_collections_videos(tmp_path):
    """Scoring a run on a held-out collection must use that collection's captions; videos of another collection
    (matched to its captions by file stem, v00000.mp4 -> v00000.mkv) must stop the script, not be scored."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from gate_auc import collection_captions, split_facts

    videos_json = tmp_path / "videos.json"
    videos_json.write_text(json.dumps([{"video": "v00000.mkv", "sound": "beep"}, {"video": "v00001.mp4"}]))
    with pytest.raises(SystemExit, match="no captions file"):
        collection_captions(videos_json, None)
    (tmp_path / "captions.jsonl").write_text("")
    assert collection_captions(videos_json, None) == tmp_path / "captions.jsonl"
    assert collection_captions(videos_json, videos_json) == videos_json  # --captions wins
    assert split_facts(videos_json, ["a/v00000.mkv"], "run")["a/v00000.mkv"]["sound"] == "beep"
    with pytest.raises(SystemExit, match="1 of the split's 2 videos are not in it"):
        split_facts(videos_json, ["v00000.mkv", "v00000.mp4"], "other captions")


@pytest.mark.parametrize("seed", [0, 1])
def test_aspect_captions_tell_parts_of_a_video_and_name_a_heard_sound_in_some_of_them(seed):
    """--caption-style aspects: five captions a video, all different, each leaving some factor out but the
    first; a named sound in exactly three of a heard clip's five, never in another clip's; the videos and their
    facts are those of the paraphrased collection (only the captions change)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from gate_auc import caption_names_sound

    specs = plan(240, seed)
    for spec in specs:
        captions = captions_for(spec, "aspects")
        fact = facts_for(spec, "test")
        assert len(set(captions)) == 5
        naming = [caption_names_sound(fact, c) for c in captions]
        if spec.description() is not None:
            assert naming == [True, False, True, True, False] and all(
                caption_names_sound(fact, c) for c in captions_for(spec)
            )
        else:
            assert not any(naming)
        missing = [sum(word not in c for word in (spec.colour, spec.shape, spec.background)) for c in captions]
        assert missing[0] == 0 and any(m > 0 for m in missing)
        # a caption of this clip never names another sound than its own
        assert all(t not in c for c in captions for t in TONES.values() if t != TONES.get(spec.sound))


def test_the_caption_style_changes_only_the_captions(tmp_path):
    make_synthetic(tmp_path / "p", 12, seed=3)
    made = make_synthetic(tmp_path / "a", 12, seed=3, caption_style="aspects")
    assert digest(tmp_path / "p/videos") == digest(tmp_path / "a/videos")
    for name in ("videos.json", "gate_probe.jsonl"):
        assert (tmp_path / "p" / name).read_text() == (tmp_path / "a" / name).read_text()
    assert made["captions"] == 60
    with pytest.raises(ValueError, match="aspects"):
        make_synthetic(tmp_path / "x", 2, caption_style="facets")


def test_a_bad_caption_style_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from gais_pipe.cli import app

    result = CliRunner().invoke(app, ["make-synthetic", str(tmp_path / "out"), "--caption-style", "facets"])
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip()
        == "error: --caption-style: unknown caption style 'facets' (choose from: paraphrase, aspects)"
    )
    assert not (tmp_path / "out").exists()
