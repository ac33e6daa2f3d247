"""Caption loaders for MSR-VTT, DiDeMo, LSMDC, VATEX and a generic JSONL/CSV.

Every loader returns the same thing: a list of `Caption(video, text, split)`, with `video` the id
the annotation uses (matched to extracted videos later, by path or by file stem).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .annotation_files import (
    CaptionError,
    field,
    kind,
    read_json,
    read_json_list,
    read_jsonl,
    read_lsmdc,
    read_table,
    value,
)


@dataclass(frozen=True)
class Caption:
    video: str
    text: str
    split: str  # "train" | "val" | "test"


def load_msrvtt(folder: Path, train: str = "9k") -> list[Caption]:
    """Train: every sentence of the 9k (or 7k) train list's videos; test: the 1k-A pairs (JSFusion)."""
    path = folder / "MSRVTT_data.json"
    data = read_json(path)
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        found = f"keys: {', '.join(data) or 'none'}" if isinstance(data, dict) else f"found {kind(data)}"
        raise CaptionError(f"{path}: expected an object with a 'sentences' list ({found})")
    train_list = folder / f"MSRVTT_train.{train}.csv"
    train_ids = {field(where, row, "video_id", True) for where, row in read_table(train_list, ("video_id",))}
    captions = []
    for number, sentence in enumerate(sentences):
        where = f"{path}: sentence {number}"
        video, text = field(where, sentence, "video_id", True), field(where, sentence, "caption")
        if video in train_ids:
            captions.append(Caption(video, text, "train"))
    test = read_table(folder / "MSRVTT_JSFUSION_test.csv", ("video_id", "sentence"), text_column="sentence")
    captions += [Caption(field(w, row, "video_id", True), field(w, row, "sentence"), "test") for w, row in test]
    return captions


def _start(where: str, item: dict) -> float:
    """When a DiDeMo moment starts: the earliest of its annotators' [start, end] segments (0 without times)."""
    times = item.get("times") or []
    if not isinstance(times, list) or not all(
        isinstance(t, list) and t and isinstance(t[0], (int, float)) and not isinstance(t[0], bool) for t in times
    ):
        raise CaptionError(f"{where}: 'times' is not a list of [start, end] segments")
    return min((t[0] for t in times), default=0)


def load_didemo(folder: Path) -> list[Caption]:
    """One paragraph per video: its descriptions joined in time order (paragraph-to-video retrieval)."""
    captions = []
    for split, name in (("train", "train_data.json"), ("val", "val_data.json"), ("test", "test_data.json")):
        paragraphs: dict[str, list[tuple[float, str]]] = {}
        for number, item in enumerate(read_json_list(folder / name)):
            where = f"{folder / name}: item {number}"
            video, text = field(where, item, "video", True), field(where, item, "description")
            paragraphs.setdefault(video, []).append((_start(where, item), text))
        captions += [
            Caption(video, " ".join(text for _, text in sorted(parts, key=lambda p: p[0])), split)
            for video, parts in paragraphs.items()
        ]
    return captions


def load_lsmdc(folder: Path) -> list[Caption]:
    """Headerless, tab-separated as published (comma or semicolon copies too): clip id, four times, sentence."""
    captions = []
    for split, name in (("train", "training"), ("val", "val"), ("test", "test")):
        captions += [Caption(clip, text, split) for _, clip, text in read_lsmdc(folder / f"LSMDC16_annos_{name}.csv")]
    return captions


def _english(where: str, item: dict) -> list[str]:
    texts = value(where, item, "enCap")
    if not isinstance(texts, list):
        raise CaptionError(f"{where}: 'enCap' is {kind(texts)}, not a list of captions")
    for number, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise CaptionError(f"{where}: enCap[{number}] is {kind(text) if text else 'empty'}, not a caption")
    return [text.strip() for text in texts]


def load_vatex(folder: Path) -> list[Caption]:
    """English captions; the official validation set serves as the test split (as in most papers)."""
    captions = []
    for split, name in (("train", "vatex_training_v1.0.json"), ("test", "vatex_validation_v1.0.json")):
        for number, item in enumerate(read_json_list(folder / name)):
            where = f"{folder / name}: item {number}"
            video = field(where, item, "videoID", True)
            captions += [Caption(video, text, split) for text in _english(where, item)]
    return captions


def _generic_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) from a JSONL, a JSON list, or a comma/semicolon/tab-separated table with a header."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return [(f"{path} line {number}", row) for number, row in read_jsonl(path)]
    if suffix == ".json":
        return [(f"{path}: item {number}", row) for number, row in enumerate(read_json_list(path))]
    return read_table(path, ("video", "caption"), text_column="caption")


def load_generic(path: Path) -> list[Caption]:
    """JSONL of {"video", "caption", "split"?} (or a JSON list of them), or a CSV/TSV with columns
    video, caption[, split]; split defaults to train."""
    if path.is_dir():
        raise CaptionError(f"{path}: generic annotations are one JSONL or CSV file, not a folder")
    captions = []
    for where, row in _generic_rows(path):
        video, text = field(where, row, "video", True), field(where, row, "caption")
        split = row.get("split") or "train"
        if not isinstance(split, str) or split.strip() not in ("train", "val", "test"):
            raise CaptionError(f"{where}: unknown split {split!r} (train, val, test)")
        captions.append(Caption(video, text, split.strip()))
    if not captions:
        raise CaptionError(f"{path}: no captions in the file")
    return captions


LOADERS = {
    "msrvtt": load_msrvtt,
    "msrvtt-7k": lambda f: load_msrvtt(f, "7k"),
    "didemo": load_didemo,
    "lsmdc": load_lsmdc,
    "vatex": load_vatex,
}

LAYOUTS = {
    "msrvtt": ("MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv"),
    "msrvtt-7k": ("MSRVTT_data.json", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv"),
    "didemo": ("train_data.json", "val_data.json", "test_data.json"),
    "lsmdc": ("LSMDC16_annos_training.csv", "LSMDC16_annos_val.csv", "LSMDC16_annos_test.csv"),
    "vatex": ("vatex_training_v1.0.json", "vatex_validation_v1.0.json"),
}


def _layout_report(path: Path) -> str:
    """What was found of each layout and what it still needs; or, with nothing found, where to look."""
    partial = {}
    for name, files in LAYOUTS.items():
        found = [f for f in files if (path / f).is_file()]
        if found:
            partial[name] = (found, [f for f in files if f not in found])
    if "msrvtt" in partial and "msrvtt-7k" in partial:
        del partial["msrvtt-7k" if len(partial["msrvtt"][1]) <= len(partial["msrvtt-7k"][1]) else "msrvtt"]
    if partial:
        return "; ".join(
            f"found {', '.join(found)}; {name} also needs {', '.join(missing)}"
            for name, (found, missing) in partial.items()
        )
    markers = sorted({files[0] for files in LAYOUTS.values()})
    below = sorted({str(hit.parent) for marker in markers for hit in path.glob(f"*/{marker}")})
    singles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv"))
    hints = [f"{', '.join(below[:3])} holds some: give that folder"] if below else []
    hints += [f"a single annotation file is given as the file itself ({', '.join(singles[:3])})"] if singles else []
    return "; ".join([f"none of {', '.join(markers)}", *hints])


def layout_missing(path: Path, dataset: str) -> list[str]:
    return [name for name in LAYOUTS[dataset] if not (path / name).is_file()]


def detect_dataset(path: Path) -> str:
    """Which dataset a folder holds, from the complete set of files of one layout (never a guess from one file)."""
    if path.is_file():
        return "generic"
    if not path.exists():
        raise CaptionError(f"{path}: no such annotation file or folder")
    complete = [name for name in LAYOUTS if not layout_missing(path, name)]
    if "msrvtt" in complete and "msrvtt-7k" in complete:
        complete.remove("msrvtt-7k")
    if len(complete) > 1:
        raise CaptionError(f"{path}: holds the files of {' and '.join(complete)}; pass --dataset")
    if complete:
        return complete[0]
    raise CaptionError(
        f"{path}: no known annotation layout; {_layout_report(path)} "
        f"(or give a JSONL/CSV file of video, caption[, split], or pass --dataset)"
    )


def load_captions(path: Path, dataset: str | None = None) -> list[Caption]:
    dataset = dataset or detect_dataset(path)
    if dataset == "generic":
        return load_generic(path)
    if dataset not in LOADERS:
        raise CaptionError(f"unknown dataset {dataset!r} ({', '.join([*LOADERS, 'generic'])})")
    if not path.is_dir():
        raise CaptionError(f"{path}: {dataset} annotations are a folder")
    missing = layout_missing(path, dataset)
    if missing:
        raise CaptionError(f"{path}: {dataset} needs {', '.join(missing)}, not found there")
    return LOADERS[dataset](path)


def carve_validation(captions: list[Caption], ratio: float, seed: int, minimum: int = 1) -> list[Caption]:
    """Without a val split, move `ratio` of the train videos (all their captions) to val: at least
    `minimum` videos (a val split of a few dozen captions picks checkpoints by noise) as long as that is
    at most a quarter of them."""
    if any(c.split == "val" for c in captions) or ratio <= 0:
        return captions
    videos = sorted({c.video for c in captions if c.split == "train"})
    count = max(1, round(len(videos) * ratio), min(minimum, len(videos) // 4))
    chosen = set(random.Random(seed).sample(videos, count)) if videos else set()
    return [Caption(c.video, c.text, "val") if c.split == "train" and c.video in chosen else c for c in captions]


def match_videos(captions: list[Caption], extracted: list[str]) -> tuple[dict[str, str], list[str]]:
    """Map annotation video ids to extracted ids: exact path first, then file name without extension.

    Returns (annotation id -> extracted id, annotation ids with no extracted video)."""
    by_stem: dict[str, list[str]] = {}
    for video_id in extracted:
        stem = Path(video_id).stem
        by_stem.setdefault(stem, []).append(video_id)
    exact = set(extracted)
    mapping, missing = {}, []
    for video in sorted({c.video for c in captions}):
        if video in exact:
            mapping[video] = video
            continue
        candidates = by_stem.get(Path(video).stem, [])
        if len(candidates) == 1:
            mapping[video] = candidates[0]
        elif len(candidates) > 1:
            raise CaptionError(f"video {video!r} matches several extracted files: {', '.join(candidates[:3])}")
        else:
            missing.append(video)
    return mapping, missing
