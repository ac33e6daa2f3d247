"""The build-index stage: one embedding per extracted video into an index, plus the re-rank store.

Before any training the embedding is CLIP's mean-pooled frames (zero-shot); with a checkpoint it is
the stage-1 embedding e_v of the heads (METHOD.md section 6).

It streams, so its memory does not grow with the collection's features: shards are read
`index.build_chunk` videos at a time (one chunk of per-frame features, about 25 KB a video at T=12,
D=512, plus its embeddings), appended to the store's segments and forgotten; which video is where
is kept in a SQLite staging table on disk, not in memory. What stays in memory is what the index
itself holds (IVF-SQ8: D+8 bytes a video, 0.5 GB at 1M x 512; exact: nothing) and the k-means sample
(`train_per_list` x lists x D x 4 bytes, 0.5 GB at 1M). Bound: chunk x row bytes + index (up to
twice its codes while faiss's lists grow) + sample + ~0.7 GB of Python, torch and faiss; measured
1.89 GB at 1M videos x 512-d (BENCHMARKS.md).

It builds a new generation beside the current one and switches to it only when complete
(`gais_pipe.index.layout`), so a killed build leaves the previous index working. When the features
and checkpoint are unchanged and no indexed video changed, the new generation links the previous
one's segments and adds only the new videos; the faiss index is added to as well unless the
collection grew into another kind or list count, when it is trained again from the store.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gais_pipe.distributed import resolve_device
from gais_pipe.index import faiss_index, layout, probe
from gais_pipe.index.embeddings import video_embeddings
from gais_pipe.index.gpu import gpu_status, placement
from gais_pipe.index.searchable import VideoIndex
from gais_pipe.index.store import COLUMNS, RerankStore, StoreWriter
from gais_pipe.retrieval.checkpoints import latest_checkpoint, load_head
from gais_pipe.retrieval.onnx_export import ensure_exports
from gais_pipe.workdir import Workdir, WorkdirError
from gais_pipe.workdir.shards import read_attrs, read_rows

_LOCATED = (
    "CREATE TABLE located (id TEXT PRIMARY KEY, seq INTEGER, shard TEXT, shard_row INTEGER, size INTEGER, "
    "mtime REAL, duration REAL, path TEXT)"
)


@dataclass
class Generation:
    folder: Path
    record: dict  # its record.json


@dataclass
class Plan:
    shards: list[Path]  # every shard of the workdir, in manifest order
    staging: sqlite3.Connection  # the videos to add: table `located`
    previous: Generation | None  # the generation whose store is extended, or None for a full build
    new_count: int
    total: int
    choice: faiss_index.Choice
    add_to_index: bool  # extend the previous faiss index instead of training a new one


def _embedding_model(work: Workdir, config: dict, checkpoint: Path | None, zero_shot: bool):
    """(heads or None, identity of what is indexed, device, width, the checkpoint's record or None)."""
    features = work.identity()
    if features is None:
        raise WorkdirError(f"{work.root}: no features yet; run `gais-pipe extract` first")
    device = resolve_device(config["runtime"]["device"])
    model, path, meta = None, None, None
    if not zero_shot:
        try:
            path = checkpoint or latest_checkpoint(work)
        except FileNotFoundError:
            path = None  # nothing trained yet: zero-shot
        if path is not None:
            model, meta, path = load_head(work, path, device)
    identity = {
        "feature_hash": features["feature_hash"],
        "mode": "stage1" if model is not None else "zero-shot",
        "checkpoint": str(path) if path else None,
        "checkpoint_sha256": work.sha256(path) if path else None,
    }
    return model, identity, device, int(features["identity"]["embed_dim"]), meta


def _video_path(video_id: str, root: str | None) -> str | None:
    return video_id if Path(video_id).is_absolute() else (str(Path(root) / video_id) if root else None)


def _scan(staging: sqlite3.Connection, shards: list[tuple[int, Path]], progress: Progress) -> None:
    """Where each video's newest row is (a later shard replaces an earlier row of the same video)."""
    task = progress.add_task("scan shards", total=len(shards))
    for seq, shard in shards:
        small = read_rows(shard, slice(None), ["video_id", "file_size", "file_mtime", "duration"])
        root = read_attrs(shard).get("source_root")
        staging.executemany(
            "INSERT OR REPLACE INTO located VALUES (?,?,?,?,?,?,?,?)",
            [
                (str(v), seq, shard.name, row, int(size), float(mtime), float(duration), _video_path(str(v), root))
                for row, (v, size, mtime, duration) in enumerate(
                    zip(small["video_id"], small["file_size"], small["file_mtime"], small["duration"])
                )
            ],
        )
        progress.advance(task)
    staging.commit()


def _extendable(work: Workdir, identity: dict, shard_names: set[str]) -> Generation | None:
    """The current generation, where this build can extend its store: the same features and checkpoint, and
    every shard it indexed still there."""
    folder = layout.current_generation(work)
    record = layout.read_record(work) if folder is not None else None
    if (
        folder is not None
        and record is not None
        and record.get("identity") == identity
        and set(record.get("shards", [None])) <= shard_names
        and RerankStore(folder / "store").exists()
    ):
        return Generation(folder, record)
    return None


def _plan(work: Workdir, building: Path, identity: dict, dim: int, config: dict, device, progress) -> Plan:
    shards = work.shards()
    previous = _extendable(work, identity, {s.name for s in shards})
    staging = sqlite3.connect(building / "staging.sqlite", uri=True)
    staging.execute(_LOCATED)
    known = set(previous.record["shards"]) if previous is not None else set()
    _scan(staging, [(i, s) for i, s in enumerate(shards) if s.name not in known], progress)
    if previous is not None:  # a video indexed before and extracted again has changed: everything is rebuilt
        store_db = previous.folder / "store" / "videos.sqlite"
        staging.execute("ATTACH DATABASE ? AS prev", (f"{store_db.resolve().as_uri()}?mode=ro",))
        changed = staging.execute("SELECT COUNT(*) FROM located WHERE id IN (SELECT id FROM prev.videos)").fetchone()[0]
        staging.execute("DETACH DATABASE prev")
        if changed:
            previous = None
            staging.execute("DELETE FROM located")
            _scan(staging, list(enumerate(shards)), progress)
    new_count = staging.execute("SELECT COUNT(*) FROM located").fetchone()[0]
    total = new_count + (previous.record["count"] if previous is not None else 0)
    if total == 0:
        raise WorkdirError(f"{work.root}: no extracted videos to index")
    choice = faiss_index.choose_kind(total, dim, config["index"], gpu_present=device.type == "cuda")
    same_index = previous is not None and {k: previous.record.get(k) for k in choice.params()} == choice.params()
    return Plan(shards, staging, previous, new_count, total, choice, same_index)


def _read_chunk(work: Workdir, rows: list[tuple]) -> dict[str, np.ndarray]:
    """Per-frame columns of a chunk of staged rows (ordered by shard, then row), read shard by shard."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
    start = 0
    while start < len(rows):
        shard = rows[start][2]
        stop = start
        while stop < len(rows) and rows[stop][2] == shard:
            stop += 1
        read = read_rows(work.features_dir / shard, np.array([r[3] for r in rows[start:stop]]), list(COLUMNS))
        for name in COLUMNS:
            parts[name].append(read[name])
        start = stop
    return {name: np.concatenate(values) for name, values in parts.items()}


def _write_store(work: Workdir, plan: Plan, building: Path, model, device, config: dict, progress) -> None:
    """Append the staged videos' features and embeddings to a store in the new generation."""
    previous = RerankStore(plan.previous.folder / "store") if plan.previous is not None else None
    cfg = config["index"]
    writer = StoreWriter(building / "store", plan.new_count, int(cfg["segment_rows"]), previous)
    task = progress.add_task("features -> store", total=plan.new_count)
    cursor = plan.staging.execute(
        "SELECT id, path, shard, shard_row, size, mtime, duration FROM located ORDER BY seq, shard_row"
    )
    try:
        while rows := cursor.fetchmany(int(cfg["build_chunk"])):
            columns = _read_chunk(work, rows)
            embeddings = video_embeddings(columns, model, device)
            metadata = [(r[0], r[1], r[6], r[2], r[3], r[4], r[5]) for r in rows]
            writer.append(columns, embeddings, metadata)
            progress.advance(task, len(rows))
        writer.finish()
    except BaseException:
        writer.abort()
        raise


def _sample(store: RerankStore, rows: np.ndarray) -> np.ndarray:
    """The chosen rows' embeddings, read block by block (plain reads, nothing left mapped)."""
    parts = []
    for first, block in store.iter_embeddings():
        chosen = rows[(rows >= first) & (rows < first + len(block))] - first
        parts.append(block[chosen])
    return np.concatenate(parts)


def _build_faiss(plan: Plan, building: Path, dim: int, device, config: dict, progress, captions) -> tuple[str, dict]:
    """Fill the approximate index (nothing to do for exact search): add the new rows to the previous
    index, or train a new one on a sample and add every row. Then, for IVF kinds with encoded captions,
    the modality gap and the tuned probe (`_probe_record`). Returns what was done and the record's
    additions."""
    if plan.choice.kind == "flat":
        return "exact: the store's embeddings are the index", {}
    cfg = config["index"]
    store = RerankStore(building / "store")
    if plan.add_to_index:
        assert plan.previous is not None  # only an extended generation's index is added to
        index = faiss_index.load(plan.previous.folder / "videos.faiss")
        first, how = plan.total - plan.new_count, "added to the previous index"
    else:
        index = faiss_index.new_index(plan.choice, dim, cfg)
        status = gpu_status() if device.type == "cuda" else None
        gpu = placement("ivf-flat", 0, device, bool(cfg.get("use_gpu", True)), status).gpu if status else None
        task = progress.add_task("train" + (f" (k-means on GPU {gpu})" if gpu is not None else ""), total=1)
        rows = faiss_index.training_rows(plan.total, max(plan.choice.lists, 1), cfg)
        faiss_index.train(index, _sample(store, rows), gpu, cfg)
        progress.advance(task)
        first, how = 0, "trained" + (f" (k-means on GPU {gpu})" if gpu is not None else "")
    task = progress.add_task("index", total=plan.total - first)
    mean = _RunningMean(plan.previous.record.get("gap") if plan.add_to_index and plan.previous else None, first)
    exact, groups = faiss_index.assignment(plan.choice.kind, cfg)
    blocks = mean.through(store.iter_embeddings(start_row=first))
    faiss_index.add_blocks(index, blocks, lambda n: progress.advance(task, n), exact, groups)
    faiss_index.save(index, building / "videos.faiss")
    extra = _probe_record(index, plan, store, cfg, captions, mean.value(), progress)
    if "tuned" in extra:
        how += "; " + probe.Tuned(**extra["tuned"]).line()
    elif "probe_note" in extra:
        how += "; " + extra["probe_note"]
    return how, extra


GAP_CAPTIONS = 50_000  # encoded captions read for the gap and the tuning queries, at most


class _RunningMean:
    """The mean indexed vector, summed while the rows stream into the index; an extended index starts from
    the previous record's mean over its `first` rows."""

    def __init__(self, previous_gap: dict | None, first: int):
        known = previous_gap is not None and "video_mean" in previous_gap and first > 0
        self.total = np.asarray(previous_gap["video_mean"], np.float64) * first if known and previous_gap else None
        self.count = first if known else 0
        self.whole = known or first == 0  # an extended index without the previous mean: no mean of every row

    def through(self, blocks):
        for first, block in blocks:
            part = block.sum(axis=0, dtype=np.float64)  # no float64 copy of the block
            self.total = part if self.total is None else self.total + part
            self.count += len(block)
            yield first, block

    def value(self) -> np.ndarray | None:
        if not self.whole or self.total is None or not self.count:
            return None
        return (self.total / self.count).astype(np.float32)


def training_texts(meta: dict | None) -> tuple[set[str] | None, str]:
    """The caption texts the checkpoint was trained on (its captions file's train and val splits), so that
    the gap and the tuning never read the captions evaluation asks; None and why where no checkpoint
    names a captions file that can still be read (then every encoded caption serves: the tuning matches
    the index to exact search and reads no answers, but test captions are no longer held out)."""
    from gais_pipe.retrieval.annotation_files import CaptionError
    from gais_pipe.retrieval.captions import load_captions

    if meta is None or not meta.get("captions"):
        return None, "zero-shot: no checkpoint names its captions, so encoded captions of every split"
    try:
        captions = load_captions(Path(meta["captions"]), meta.get("dataset"))
    except (CaptionError, OSError) as error:
        return None, f"{error}: encoded captions of every split"
    return {c.text for c in captions if c.split != "test"}, f"train captions of {meta['captions']}"


def _caption_queries(work: Workdir, model, device, dim: int, meta: dict | None = None) -> tuple[np.ndarray | None, str]:
    """The training captions the workdir has encoded (text_features.h5 rows whose text `training_texts`
    names) as index queries, in the index's space (the heads' stage-1 text, or CLIP's own, unit length);
    None and why not. The source string says which captions served."""
    path = work.root / "text_features.h5"
    if not path.exists():
        return None, f"no encoded captions ({path.name}): lists chosen with the query itself, probe not tuned"
    import h5py
    import torch
    import torch.nn.functional as F

    keep, which = training_texts(meta)
    with h5py.File(path, "r") as handle:
        stored = handle["embedding"]
        rows = np.arange(len(stored))
        if keep is not None:
            texts = handle["text"].asstr()[()]
            rows = rows[np.fromiter((t in keep for t in texts), bool, len(texts))]
        if len(rows) > GAP_CAPTIONS:  # a mean and 200 tuning queries need no more (and 1M x 512 is 2 GB)
            rows = np.sort(np.random.default_rng(0).choice(rows, GAP_CAPTIONS, replace=False))
        clip_text = np.asarray(stored[rows], np.float32) if len(rows) else np.zeros((0, dim), np.float32)
    if model is not None:
        with torch.no_grad():
            parts = [
                model.encode_text(torch.from_numpy(clip_text[i : i + 4096]).to(device)).float().cpu()
                for i in range(0, len(clip_text), 4096)
            ]
            clip_text = torch.cat(parts).numpy() if parts else clip_text
    if clip_text.ndim != 2 or clip_text.shape[1] != dim or len(clip_text) < 2:
        return None, f"{path.name} holds {clip_text.shape} {which} vectors, not 2+ of width {dim}: probe not tuned"
    return F.normalize(torch.from_numpy(clip_text), dim=-1).numpy(), f"{path.name}: {which}"


def _probe_record(index, plan: Plan, store: RerankStore, cfg: dict, captions, video_mean, progress) -> dict:
    """For an IVF index and encoded captions: the modality gap (from all but the held-out captions) and
    the nprobe and re-scoring depth measured on the held-out ones (index/probe.py)."""
    queries, source = captions
    if queries is None or not isinstance(index, faiss_index.faiss.IndexIVF) or video_mean is None:
        return {"probe_note": source} if queries is None else {}
    order = np.random.default_rng(0).permutation(len(queries))
    held = order[: min(int(cfg["tune_queries"]), len(queries) // 2)]
    rest = queries[order[len(held) :]]
    gap = probe.estimate_gap(rest, video_mean)
    extra = {"gap": {**probe.gap_record(gap, len(rest), source), "video_mean": [float(v) for v in video_mean]}}
    if len(held) == 0 or plan.choice.kind not in cfg.get("tune_kinds", list(faiss_index.LARGE_KINDS)):
        return extra  # the other kinds keep their configured probe (1M: recall 1.000 at nprobe 32, BENCHMARKS.md)
    task = progress.add_task(f"tune on {len(held)} held-out captions", total=1)
    tuned = _tune(index, store, queries[held], gap, cfg)
    progress.advance(task)
    return {**extra, "tuned": tuned.as_record()}


def _tune(index, store: RerankStore, queries: np.ndarray, gap: np.ndarray, cfg: dict) -> probe.Tuned:
    """Exact top-10 of the held-out queries in one pass over the store, then `probe.tune`."""
    truth = probe.exact_top(store.iter_embeddings(), queries, 10)
    faiss_index.set_probe(index, index.nprobe, cfg)  # the graph walk of searches, not of the build's adds

    def make(searched, refine: int) -> VideoIndex:
        return VideoIndex(searched, rescore=store.embeddings, factor=refine)

    return probe.tune(make, index, gap, queries, truth, cfg)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


def run_build_index(
    workdir: Path,
    config: dict,
    checkpoint: Path | None = None,
    zero_shot: bool = False,
    console: Console | None = None,
    show_progress: bool = False,
) -> dict:
    work = Workdir(workdir)
    model, identity, device, dim, meta = _embedding_model(work, config, checkpoint, zero_shot)
    # the ONNX graphs `query` and `serve` run instead of torch, once per checkpoint (retrieval/onnx_export.py)
    exported = ensure_exports(work, model, identity["checkpoint_sha256"])
    started = time.perf_counter()
    with layout.build_lock(work):
        layout.clean(work)
        building = layout.new_generation(work)
        manifest = work.manifest_digest()  # before reading the shards: a shard added meanwhile makes it differ
        with _progress(console or Console(stderr=True), show_progress) as progress:
            plan = _plan(work, building, identity, dim, config, device, progress)
            if plan.previous is not None and plan.new_count == 0 and plan.add_to_index:
                plan.staging.close()
                layout.clean(work)  # nothing new: the current generation stays
                unchanged = {"added": 0, "incremental": True, "index_build": "unchanged"}
                return {**plan.previous.record, **unchanged, "onnx": exported}
            _write_store(work, plan, building, model, device, config, progress)
            captions = _caption_queries(work, model, device, dim, meta) if plan.choice.kind != "flat" else (None, "")
            how, probed = _build_faiss(plan, building, dim, device, config, progress, captions)
        plan.staging.close()
        (building / "staging.sqlite").unlink()
        record = {
            "identity": identity,
            **plan.choice.params(),
            "reason": plan.choice.reason,
            "count": plan.total,
            "dim": dim,
            "built": time.time(),
            "added": plan.new_count,
            "incremental": plan.previous is not None,
            "index_build": how,
            **{key: value for key, value in probed.items() if key != "probe_note"},
            "shards": [s.name for s in plan.shards],
            "seconds": time.perf_counter() - started,
            "manifest": manifest,  # the shards this index saw: a query compares it instead of opening them
        }
        layout.publish(work, building, record)
        layout.clean(work)
    return {**record, "onnx": exported}
