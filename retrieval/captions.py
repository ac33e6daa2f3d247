"""Caption loaders for MSR-VTT, DiDeMo, LSMDC, VATEX and a generic JSONL/CSV.

Every loader returns the same thing: a list of `Caption(video, text, split)`, with `video` the id
the annotation uses (matched to extracted videos later, by path or by file stem).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Caption:
    video: str
    text: str
    split: str  # "train" | "val" | "test"


class CaptionError(ValueError):
    """Annotation files that are missing or not in the expected format."""


def _need(path: Path) -> Path:
    if not path.is_file():
        raise CaptionError(f"{path}: annotation file not found")
    return path


def _read_json(path: Path):
    try:
        return json.loads(_need(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CaptionError(f"{path}: not valid JSON ({error})") from None


def _csv_rows(path: Path, **kwargs) -> list[dict]:
    with open(_need(path), newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, **kwargs))


def load_msrvtt(folder: Path, train: str = "9k") -> list[Caption]:
    """Train: every sentence of the 9k (or 7k) train list's videos; test: the 1k-A pairs (JSFusion)."""
    data = _read_json(folder / "MSRVTT_data.json")
    train_ids = {row["video_id"] for row in _csv_rows(folder / f"MSRVTT_train.{train}.csv")}
    captions = [Caption(s["video_id"], s["caption"], "train") for s in data["sentences"] if s["video_id"] in train_ids]
    captions += [
        Caption(row["video_id"], row["sentence"], "test") for row in _csv_rows(folder / "MSRVTT_JSFUSION_test.csv")
    ]
    return captions


def load_didemo(folder: Path) -> list[Caption]:
    """One paragraph per video: its descriptions joined in time order (paragraph-to-video retrieval)."""
    captions = []
    for split, name in (("train", "train_data.json"), ("val", "val_data.json"), ("test", "test_data.json")):
        paragraphs: dict[str, list[tuple[int, str]]] = {}
        for item in _read_json(folder / name):
            start = min(t[0] for t in item["times"]) if item.get("times") else 0
            paragraphs.setdefault(item["video"], []).append((start, item["description"].strip()))
        captions += [
            Caption(video, " ".join(text for _, text in sorted(parts, key=lambda p: p[0])), split)
            for video, parts in paragraphs.items()
        ]
    return captions


def load_lsmdc(folder: Path) -> list[Caption]:
    """Tab-separated: clip id, four times, sentence."""
    captions = []
    for split, name in (("train", "training"), ("val", "val"), ("test", "test")):
        path = _need(folder / f"LSMDC16_annos_{name}.csv")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 6:
                raise CaptionError(f"{path}:{number}: expected 6 tab-separated fields, found {len(fields)}")
            captions.append(Caption(fields[0].strip(), fields[5].strip(), split))
    return captions


def load_vatex(folder: Path) -> list[Caption]:
    """English captions; the official validation set serves as the test split (as in most papers)."""
    captions = []
    for split, name in (("train", "vatex_training_v1.0.json"), ("test", "vatex_validation_v1.0.json")):
        for item in _read_json(folder / name):
            captions += [Caption(item["videoID"], text, split) for text in item["enCap"]]
    return captions


def load_generic(path: Path) -> list[Caption]:
    """JSONL of {"video", "caption", "split"?} or CSV with columns video, caption[, split]; split defaults to train."""
    _need(path)
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        rows = _csv_rows(path)
    captions = []
    for number, row in enumerate(rows, 1):
        if "video" not in row or "caption" not in row:
            raise CaptionError(f"{path}: row {number} needs 'video' and 'caption' fields")
        split = (row.get("split") or "train").strip()
        if split not in ("train", "val", "test"):
            raise CaptionError(f"{path}: row {number}: unknown split {split!r} (train, val, test)")
        captions.append(Caption(str(row["video"]), str(row["caption"]), split))
    return captions


LOADERS = {
    "msrvtt": load_msrvtt,
    "msrvtt-7k": lambda f: load_msrvtt(f, "7k"),
    "didemo": load_didemo,
    "lsmdc": load_lsmdc,
    "vatex": load_vatex,
}


def detect_dataset(path: Path) -> str:
    if path.is_file():
        return "generic"
    markers = {
        "MSRVTT_data.json": "msrvtt",
        "train_data.json": "didemo",
        "LSMDC16_annos_training.csv": "lsmdc",
        "vatex_training_v1.0.json": "vatex",
    }
    for marker, name in markers.items():
        if (path / marker).exists():
            return name
    raise CaptionError(
        f"{path}: cannot tell which dataset this is; pass --dataset (msrvtt, msrvtt-7k, didemo, lsmdc, vatex, generic)"
    )


def load_captions(path: Path, dataset: str | None = None) -> list[Caption]:
    dataset = dataset or detect_dataset(path)
    if dataset == "generic":
        return load_generic(path)
    if dataset not in LOADERS:
        raise CaptionError(f"unknown dataset {dataset!r} ({', '.join([*LOADERS, 'generic'])})")
    if not path.is_dir():
        raise CaptionError(f"{path}: {dataset} annotations are a folder")
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
