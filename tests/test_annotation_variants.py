"""Annotation files as copies of them circulate: any delimiter, a BOM, CRLF, extra columns, quoted or
unquoted sentences with delimiters in them; and one-line errors naming the file, line and column.
All captions here are made up."""

import csv
import io
import json
import re

import pytest
from synthetic_features import make_feature_workdir
from typer.testing import CliRunner

from gais_pipe.cli import app
from gais_pipe.retrieval.captions import CaptionError, detect_dataset, load_captions

TRICKY = 'a man, smiling; waves "hello"'  # commas, semicolons and quotes in one sentence

# name: (delimiter, BOM, line end, extra columns, quoting); "raw" writes sentences unquoted
VARIANTS = {
    "comma": (",", False, "\n", False, "minimal"),
    "semicolon": (";", False, "\n", False, "minimal"),
    "tab": ("\t", False, "\n", False, "minimal"),
    "bom": (",", True, "\n", False, "minimal"),
    "crlf": (";", False, "\r\n", False, "minimal"),
    "bom-crlf-tab": ("\t", True, "\r\n", False, "minimal"),
    "extra-columns": (";", False, "\n", True, "minimal"),
    "all-quoted": (",", False, "\n", False, "all"),
    "unquoted-commas": (",", False, "\n", False, "raw"),
    "unquoted-semicolons": (";", False, "\n", False, "raw"),
}


def table(rows: list[list[str]], variant: str, header: bool = True) -> str:
    """Rows (the first the header, when there is one) written as the variant writes them."""
    delimiter, _, _, extra, quoting = VARIANTS[variant]
    if extra and header:
        rows = [["note", *row, "source"] if i == 0 else ["x", *row, "y"] for i, row in enumerate(rows)]
    elif extra:  # a headerless file's extra columns are appended
        rows = [[*row, "y"] for row in rows]
    if quoting == "raw":
        return "".join(delimiter.join(row) + "\n" for row in rows)
    out = io.StringIO()
    mode = csv.QUOTE_ALL if quoting == "all" else csv.QUOTE_MINIMAL
    csv.writer(out, delimiter=delimiter, lineterminator="\n", quoting=mode).writerows(rows)
    return out.getvalue()


def write(path, text: str, variant: str = "comma"):
    """The text with the variant's BOM and line ends."""
    _, bom, end, _, _ = VARIANTS[variant]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.replace("\n", end).encode())
    return path


def write_json(path, data, variant: str = "comma"):
    return write(path, json.dumps(data, indent=1), variant)


def write_msrvtt(folder, variant: str = "comma", videos=("video0", "video1", "video2")):
    sentences = [{"video_id": v, "caption": f"{v} caption {k}", "sen_id": k} for v in videos for k in range(2)]
    sentences[0]["caption"] = TRICKY
    data = {"videos": [{"video_id": v} for v in videos], "sentences": sentences}
    write_json(folder / "MSRVTT_data.json", data, variant)
    write(folder / "MSRVTT_train.9k.csv", table([["video_id"], *[[v] for v in videos[:-1]]], variant), variant)
    test_rows = [["key", "vid_key", "video_id", "sentence"], ["ret0", "msr9", videos[-1], TRICKY]]
    write(folder / "MSRVTT_JSFUSION_test.csv", table(test_rows, variant), variant)
    return folder


@pytest.mark.parametrize("variant", VARIANTS)
def test_msrvtt_variants(tmp_path, variant):
    write_msrvtt(tmp_path, variant)
    assert detect_dataset(tmp_path) == "msrvtt"
    captions = load_captions(tmp_path)
    assert [(c.video, c.text) for c in captions if c.split == "test"] == [("video2", TRICKY)]
    train = [(c.video, c.text) for c in captions if c.split == "train"]
    assert train[0] == ("video0", TRICKY) and {v for v, _ in train} == {"video0", "video1"} and len(train) == 4


LSMDC_LINE = ["1001_Movie_00.00.01.000-00.00.03.000", "00.00.01.000", "00.00.03.000", "00.00.01.0", "00.00.03.0"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_lsmdc_variants(tmp_path, variant):
    rows = [[*LSMDC_LINE, TRICKY], [*LSMDC_LINE, "SOMEONE, then SOMEONE; leaves."]]
    text = table(rows, variant, header=False)
    for name in ("training", "val", "test"):
        write(tmp_path / f"LSMDC16_annos_{name}.csv", text, variant)
    captions = load_captions(tmp_path)
    assert detect_dataset(tmp_path) == "lsmdc" and len(captions) == 6
    assert (captions[0].video, captions[0].text) == (LSMDC_LINE[0], TRICKY)
    assert captions[1].text == "SOMEONE, then SOMEONE; leaves."


@pytest.mark.parametrize("variant", ["comma", "bom", "crlf", "bom-crlf-tab"])
def test_didemo_and_vatex_json_with_bom_and_crlf(tmp_path, variant):
    items = [{"video": "a.mp4", "times": [[1, 2]], "description": TRICKY, "dl_link": "x"}]
    for split in ("train", "val", "test"):
        write_json(tmp_path / "didemo" / f"{split}_data.json", items, variant)
    assert [c.text for c in load_captions(tmp_path / "didemo")] == [TRICKY] * 3
    item = {"videoID": "abc_000010_000020", "enCap": [TRICKY, "second"], "chCap": ["..."]}
    for name in ("training", "validation"):
        write_json(tmp_path / "vatex" / f"vatex_{name}_v1.0.json", [item], variant)
    assert [c.text for c in load_captions(tmp_path / "vatex")] == [TRICKY, "second"] * 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_generic_csv_variants(tmp_path, variant):
    rows = [["video", "caption", "split"], ["x.mp4", TRICKY, "test"], ["y.mp4", "plain words", ""]]
    path = write(tmp_path / "captions.csv", table(rows, variant), variant)
    assert [(c.video, c.text, c.split) for c in load_captions(path)] == [
        ("x.mp4", TRICKY, "test"),
        ("y.mp4", "plain words", "train"),
    ]


@pytest.mark.parametrize("variant", ["comma", "bom", "crlf"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_generic_json_lines_and_list(tmp_path, variant, suffix):
    rows = [{"video": "x.mp4", "caption": TRICKY, "split": "val", "extra": 1}, {"video": 7, "caption": "b"}]
    text = "\n".join(map(json.dumps, rows)) + "\n" if suffix == ".jsonl" else json.dumps(rows, indent=1)
    captions = load_captions(write(tmp_path / f"captions{suffix}", text, variant))
    assert [(c.video, c.text, c.split) for c in captions] == [("x.mp4", TRICKY, "val"), ("7", "b", "train")]


MSRVTT_TEST = "MSRVTT_JSFUSION_test.csv"
BAD_FILES = {
    "msrvtt-pipe-delimiter": (
        MSRVTT_TEST,
        "key|vid_key|video_id|sentence\nret0|msr9|video2|hi\n",
        "MSRVTT_JSFUSION_test.csv: no columns 'video_id', 'sentence' "
        "(found: key|vid_key|video_id|sentence as one column; is the delimiter '|'?",
    ),
    "msrvtt-misnamed-column": (
        MSRVTT_TEST,
        "key;vid_key;videoid;sentence\n",
        "MSRVTT_JSFUSION_test.csv: no column 'video_id' (found: key, vid_key, videoid, sentence; read as semicolon",
    ),
    "msrvtt-short-row": (
        MSRVTT_TEST,
        "key,vid_key,video_id,sentence\nret0,msr9,video2,hi\nret1,msr9\n",
        "MSRVTT_JSFUSION_test.csv line 3: no value for 'video_id' (has 2 of the header's 4 comma-separated fields)",
    ),
    "msrvtt-empty-id": (MSRVTT_TEST, "key,vid_key,video_id,sentence\nret0,msr9,,hi\n", "line 2: 'video_id' is empty"),
    "msrvtt-open-quote": (
        MSRVTT_TEST,
        'key,vid_key,video_id,sentence\nret0,msr9,video2,"hi\nret1,msr9,video2,there\n',
        "MSRVTT_JSFUSION_test.csv line 2: a quoted field runs on to line 3",
    ),
    "msrvtt-empty-file": (MSRVTT_TEST, "", "MSRVTT_JSFUSION_test.csv: empty file"),
    "msrvtt-not-utf8": (MSRVTT_TEST, b"key,vid_key,video_id,sentence\nret0,msr9,video2,caf\xe9\n", "line 2: not UTF-8"),
    "msrvtt-json-syntax": (
        "MSRVTT_data.json",
        '{"videos": [],\n "sentences": [{"video_id": "video0" "caption": "x"}]}',
        "MSRVTT_data.json line 2 column 38: not valid JSON (Expecting ',' delimiter)",
    ),
    "msrvtt-json-list": ("MSRVTT_data.json", "[]", "MSRVTT_data.json: expected an object with a 'sentences' list"),
    "msrvtt-no-caption": (
        "MSRVTT_data.json",
        '{"sentences": [{"video_id": "video0", "caption": "x"}, {"video_id": "video1", "text": "y"}]}',
        "MSRVTT_data.json: sentence 1 has no 'caption' (keys: video_id, text)",
    ),
    "didemo-no-description": (
        "test_data.json",
        '[{"video": "a.mp4", "description": "x"}, {"video": "b.mp4", "times": [[0, 1]]}]',
        "test_data.json: item 1 has no 'description' (keys: video, times)",
    ),
    "didemo-not-a-list": (
        "val_data.json",
        '{"video": "a"}',
        "val_data.json: expected a JSON list of items, found an object",
    ),
    "didemo-bad-times": (
        "train_data.json",
        '[{"video": "a.mp4", "times": "0-1", "description": "x"}]',
        "train_data.json: item 0: 'times' is not a list of [start, end] segments",
    ),
    "vatex-encap-string": (
        "vatex_training_v1.0.json",
        '[{"videoID": "v", "enCap": "one caption"}]',
        "vatex_training_v1.0.json: item 0: 'enCap' is a string, not a list of captions",
    ),
    "vatex-caption-number": (
        "vatex_validation_v1.0.json",
        '[{"videoID": "v", "enCap": ["a", 3]}]',
        "vatex_validation_v1.0.json: item 0: enCap[1] is a number, not a caption",
    ),
    "vatex-truncated": ("vatex_training_v1.0.json", '[{"videoID": "v",', "vatex_training_v1.0.json line 1 column 18"),
    "lsmdc-two-fields": (
        "LSMDC16_annos_val.csv",
        "clip\t00.01\t00.02\t00.01\t00.02\tok\nonly\ttwo fields\n",
        "LSMDC16_annos_val.csv line 2: expected 6 tab-separated fields (clip id, four times, sentence), found 2",
    ),
    "lsmdc-empty-sentence": ("LSMDC16_annos_test.csv", "clip\t1\t2\t1\t2\t \n", "line 1: 'sentence' is empty"),
}


def good_folder(folder, name: str):
    """A complete, valid folder of the dataset that owns file `name`."""
    if name.startswith("MSRVTT"):
        return write_msrvtt(folder)
    if name.startswith("LSMDC"):
        for split in ("training", "val", "test"):
            write(folder / f"LSMDC16_annos_{split}.csv", "\t".join([*LSMDC_LINE, "words"]) + "\n")
    elif name.startswith("vatex"):
        for split in ("training", "validation"):
            write_json(folder / f"vatex_{split}_v1.0.json", [{"videoID": "v", "enCap": ["a"]}])
    else:
        for split in ("train", "val", "test"):
            write_json(folder / f"{split}_data.json", [{"video": "a", "times": [[0, 1]], "description": "x"}])
    return folder


@pytest.mark.parametrize("case", BAD_FILES)
def test_broken_dataset_files_give_one_line_naming_file_line_and_column(tmp_path, case):
    name, content, message = BAD_FILES[case]
    good_folder(tmp_path, name)
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CaptionError) as caught:
        load_captions(tmp_path)
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith(str(tmp_path / name))


GENERIC_BAD = {
    "c.jsonl": (
        '{"video": "x", "caption": "a"}\n\n{"video": "y", "caption": "b",}\n',
        "c.jsonl line 3 column 31: not valid JSON (Expecting property name",
    ),
    "d.jsonl": (
        '{"video": "x", "caption": "a"}\n["y", "b"]\n',
        "d.jsonl line 2: expected a JSON object {...}, found a list",
    ),
    "e.jsonl": ('{"video": "x", "text": "a"}\n', "e.jsonl line 1 has no 'caption' (keys: video, text)"),
    "f.jsonl": ('{"video": "x", "caption": ["a"]}\n', "f.jsonl line 1: 'caption' is a list, not a string"),
    "g.json": ('{"video": "x", "caption": "a"}\n{"video": "y", "caption": "b"}\n', "g.json line 2 column 1: not valid"),
    "h.csv": ("video;text\nx;a\n", "h.csv: no column 'caption' (found: video, text; read as semicolon-separated)"),
    "i.csv": ("video,caption,split\nx.mp4,hello,dev\n", "i.csv line 2: unknown split 'dev' (train, val, test)"),
    "j.jsonl": ("\n\n", "j.jsonl: no captions in the file"),
}


@pytest.mark.parametrize("name", GENERIC_BAD)
def test_broken_generic_files(tmp_path, name):
    content, message = GENERIC_BAD[name]
    with pytest.raises(CaptionError, match=re.escape(message)):
        load_captions(write(tmp_path / name, content))


def test_detection_names_what_was_found_and_what_is_missing(tmp_path):
    write_msrvtt(tmp_path / "m")
    (tmp_path / "m/MSRVTT_JSFUSION_test.csv").unlink()
    with pytest.raises(CaptionError, match=re.escape("m: no known annotation layout; found MSRVTT_data.json, ")):
        detect_dataset(tmp_path / "m")
    with pytest.raises(CaptionError, match="msrvtt also needs MSRVTT_JSFUSION_test.csv"):
        detect_dataset(tmp_path / "m")
    with pytest.raises(CaptionError, match="msrvtt needs MSRVTT_JSFUSION_test.csv, not found"):
        load_captions(tmp_path / "m", "msrvtt")
    good_folder(tmp_path / "both", "train_data.json")
    write_msrvtt(tmp_path / "both")
    with pytest.raises(CaptionError, match="holds the files of msrvtt and didemo; pass --dataset"):
        detect_dataset(tmp_path / "both")
    write_msrvtt(tmp_path / "outer/inner")
    with pytest.raises(CaptionError, match=re.escape(f"{tmp_path / 'outer/inner'} holds some: give that folder")):
        detect_dataset(tmp_path / "outer")
    with pytest.raises(CaptionError, match="nowhere: no such annotation file or folder"):
        load_captions(tmp_path / "nowhere")


def test_cli_trains_on_a_semicolon_msrvtt_folder_and_names_a_broken_file(tmp_path):
    work, _ = make_feature_workdir(tmp_path, videos=24)
    folder = write_msrvtt(tmp_path / "msrvtt", "semicolon", videos=[f"v{i:04d}" for i in range(24)])
    args = ["train", "-w", str(work), "--captions", str(folder), "--quiet", "--run-name", "semi"]
    args += ["--set", "train.epochs=1", "--set", "train.batch_size=8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best: epoch 1" in result.output
    (folder / "MSRVTT_data.json").write_text('{"sentences": [\n{"video_id": "v0000", "caption": "x"}\n{}]}')
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == (
        f"error: {folder / 'MSRVTT_data.json'} line 3 column 1: not valid JSON (Expecting ',' delimiter)"
    )
