"""Caption loaders on small fixtures written in each dataset's official format."""

import json

import pytest

from gais_pipe.retrieval.captions import (
    CaptionError,
    carve_validation,
    detect_dataset,
    load_captions,
    match_videos,
)


def write_msrvtt(folder):
    folder.mkdir(parents=True, exist_ok=True)
    sentences = [
        {"video_id": f"video{v}", "caption": f"caption {k} of video {v}", "sen_id": 10 * v + k}
        for v in range(5)
        for k in range(2)
    ]
    data = {
        "videos": [{"video_id": f"video{v}", "split": "train" if v < 4 else "test"} for v in range(5)],
        "sentences": sentences,
    }
    (folder / "MSRVTT_data.json").write_text(json.dumps(data))
    (folder / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\nvideo2\nvideo3\n")
    (folder / "MSRVTT_train.7k.csv").write_text("video_id\nvideo0\nvideo1\n")
    (folder / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr4,video4,a man is talking\n"
    )


def test_msrvtt_9k_7k_and_1k_a(tmp_path):
    write_msrvtt(tmp_path)
    captions = load_captions(tmp_path)
    assert detect_dataset(tmp_path) == "msrvtt"
    train = [c for c in captions if c.split == "train"]
    assert len(train) == 8 and {c.video for c in train} == {"video0", "video1", "video2", "video3"}
    assert [(c.video, c.text) for c in captions if c.split == "test"] == [("video4", "a man is talking")]
    seven = load_captions(tmp_path, "msrvtt-7k")
    assert {c.video for c in seven if c.split == "train"} == {"video0", "video1"}


def test_didemo_joins_descriptions_into_a_paragraph_in_time_order(tmp_path):
    items = [
        {"video": "a.mp4", "times": [[2, 3]], "description": "then it jumps"},
        {"video": "a.mp4", "times": [[0, 1], [0, 0]], "description": "a cat sits"},
        {"video": "b.mp4", "times": [[1, 1]], "description": "a dog runs"},
    ]
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}_data.json").write_text(json.dumps(items if split == "train" else items[2:]))
    captions = load_captions(tmp_path)
    train = {c.video: c.text for c in captions if c.split == "train"}
    assert train == {"a.mp4": "a cat sits then it jumps", "b.mp4": "a dog runs"}
    assert {c.split for c in captions} == {"train", "val", "test"}


def test_lsmdc_tab_separated(tmp_path):
    line = (
        "1001_Movie_00.00.01.000-00.00.03.000\t00.00.01.000\t00.00.02.000\t00.00.02.500\t00.00.03.000\t"
        "SOMEONE opens the door.\n"
    )
    for name in ("training", "val", "test"):
        (tmp_path / f"LSMDC16_annos_{name}.csv").write_text(line)
    captions = load_captions(tmp_path)
    assert captions[0].video == "1001_Movie_00.00.01.000-00.00.03.000" and captions[0].text == "SOMEONE opens the door."
    (tmp_path / "LSMDC16_annos_val.csv").write_text("only\ttwo fields\n")
    with pytest.raises(CaptionError, match="LSMDC16_annos_val.csv line 1: expected 6 tab-separated fields"):
        load_captions(tmp_path)


def test_vatex_ten_english_captions(tmp_path):
    item = {"videoID": "abc_000010_000020", "enCap": [f"caption {i}" for i in range(10)], "chCap": ["..."]}
    (tmp_path / "vatex_training_v1.0.json").write_text(json.dumps([item]))
    (tmp_path / "vatex_validation_v1.0.json").write_text(json.dumps([{**item, "videoID": "xyz_000000_000010"}]))
    captions = load_captions(tmp_path)
    assert sum(c.split == "train" for c in captions) == 10 and sum(c.split == "test" for c in captions) == 10


def test_generic_jsonl_and_csv(tmp_path):
    (tmp_path / "c.jsonl").write_text(
        '{"video": "x.mp4", "caption": "a", "split": "test"}\n{"video": "y.mp4", "caption": "b"}\n'
    )
    assert [(c.video, c.split) for c in load_captions(tmp_path / "c.jsonl")] == [
        ("x.mp4", "test"),
        ("y.mp4", "train"),
    ]
    (tmp_path / "c.csv").write_text("video,caption,split\nx.mp4,hello,val\n")
    assert load_captions(tmp_path / "c.csv")[0].split == "val"
    (tmp_path / "bad.csv").write_text("video,caption,split\nx.mp4,hello,dev\n")
    with pytest.raises(CaptionError, match="unknown split 'dev'"):
        load_captions(tmp_path / "bad.csv")
    with pytest.raises(
        CaptionError, match="no known annotation layout; none of .*a single annotation file is given as the file itself"
    ):
        load_captions(tmp_path)


def test_matching_by_path_then_stem_and_reporting_missing(tmp_path):
    write_msrvtt(tmp_path)
    captions = load_captions(tmp_path)
    mapping, missing = match_videos(captions, ["clips/video0.mp4", "video1.avi", "video2", "video4.webm"])
    assert mapping == {
        "video0": "clips/video0.mp4",
        "video1": "video1.avi",
        "video2": "video2",
        "video4": "video4.webm",
    }
    assert missing == ["video3"]
    with pytest.raises(CaptionError, match="several"):
        match_videos(captions, ["a/video0.mp4", "b/video0.mp4"])


def test_validation_is_carved_from_train_by_whole_videos(tmp_path):
    write_msrvtt(tmp_path)
    carved = carve_validation(load_captions(tmp_path), ratio=0.5, seed=0)
    val_videos = {c.video for c in carved if c.split == "val"}
    assert len(val_videos) == 2
    assert not val_videos & {c.video for c in carved if c.split == "train"}
    assert carve_validation(load_captions(tmp_path), 0.5, 0) == carved  # same seed, same split
