"""The train stage: the GAIS heads on cached features, validated every epoch, resumable.

One process or many (torchrun, data parallel): with W processes each computes the score rows of its
share of the global batch's texts against all of the batch's videos (the inputs are cached features,
cheap to hold everywhere), the rows are gathered with autograd, and every process computes the same
loss over the whole batch. Averaged over the processes, the gradients equal those of one process
with the same global batch.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gais_pipe.config import Config, short_hash
from gais_pipe.distributed import destroy_distributed, init_distributed
from gais_pipe.retrieval.augment import AudioNeighbours, same_sound, silence_some, with_audio_of
from gais_pipe.retrieval.checkpoints import load_training_state, save_checkpoint, save_training_state
from gais_pipe.retrieval.data import Split, caption_splits, epoch_batches, variance_texts
from gais_pipe.retrieval.evaluate import evaluate
from gais_pipe.retrieval.heads import GAISHead, VideoBatch
from gais_pipe.retrieval.losses import (
    adaptive_margin,
    gate_match_loss,
    radius_prior,
    support_text_scores,
    symmetric_info_nce,
)
from gais_pipe.retrieval.schedule import Schedule, lr_scheduler, optimizer_for, plan_schedule
from gais_pipe.retrieval.standardise import Standardiser, fit_statistics
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.workdir import Workdir, WorkdirError

# The best validation so far: its epoch (1-based; -1 before any), val t2v R@1 and `selection_score`.
Best = TypedDict("Best", {"epoch": int, "val_t2v_R@1": float, "score": list[float]})


def _no_best() -> Best:
    return {"epoch": -1, "val_t2v_R@1": -1.0, "score": [-float("inf"), 0.0]}


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_val_r1: float
    history: list[dict] = field(default_factory=list)


def _gather_rows(blocks: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    """Stack every process's rows of each [b, B] block, with autograd, in ONE collective: two
    all-gathers would each run a collective in backward, in an order that can differ between
    processes (and then exchange the wrong tensors)."""
    if world == 1:
        return blocks
    import torch.distributed.nn.functional as dist_fn

    widths = [b.shape[1] for b in blocks]
    gathered = torch.cat(dist_fn.all_gather(torch.cat(blocks, dim=1)), dim=0)
    return list(torch.split(gathered, widths, dim=1))


def batch_noise(model: GAISHead, size: int, seed: int, epoch: int, step: int) -> torch.Tensor | None:
    """The perturbation's standard normal draw for a whole global batch, [size, size, D], the same on every
    rank (each takes its rows): per-rank seeds would tile one draw N times, or differ from one process."""
    if not model.perturbing():
        return None
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, step, 2]).generate_state(1)[0]))
    return torch.randn(size, size, model.dim, generator=generator)


def batch_loss(
    model,
    texts: torch.Tensor,
    videos: VideoBatch,
    config: Config,
    rank: int = 0,
    world: int = 1,
    eps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """The loss of one global batch (text i describes video i); this process computes its rows. `eps` is
    the global batch's perturbation draw (`batch_noise`), of which this process uses its rows."""
    loss_cfg = config["loss"]
    size = len(texts)
    lo, hi = rank * size // world, (rank + 1) * size // world
    positives = torch.arange(lo, hi, device=texts.device)
    support = bool(loss_cfg["support_weight"])
    rows = None if eps is None else eps[lo:hi]
    out = model(texts[lo:hi], videos, positives=positives if support else None, eps=rows)
    blocks = [out.full, out.stage1]
    prior = bool(loss_cfg["radius_prior"]) and out.radius is not None
    if prior:
        blocks.append(out.radius)
    if support:
        blocks.append(support_text_scores(out.text, out.pooled.video, out.positive_radius, positives))
    matching = bool(loss_cfg["gate_match_weight"]) and model.match_text is not None and model.use_audio
    if matching:  # each text's matching loss, a column gathered with the rest: the mean is the global batch's
        heard = videos.mask.to(texts.device)
        with torch.no_grad():
            alike = same_sound(model.audio_stats(videos.audio), heard, float(loss_cfg["gate_match_same_sound"]))
        confidence = float(loss_cfg.get("gate_match_confidence", 0.0))
        blocks.append(gate_match_loss(out.pooled.gate_logits, heard, positives, alike[lo:hi], confidence).unsqueeze(1))
    scores, stage1, *rest = _gather_rows(blocks, world)
    margin: torch.Tensor | float = 0.0
    if loss_cfg["refinement"]:  # closeness of the standardised inputs: raw frame cosines are all ~1
        with torch.no_grad():
            margin = adaptive_margin(
                model.text_stats(texts),
                model.frame_stats(videos.frames).mean(dim=1),
                loss_cfg["margin_beta"],
                loss_cfg["margin_delta"],
            )
    parts = {"main": symmetric_info_nce(out.scale * (scores + margin))}
    if loss_cfg["stage1_weight"]:
        parts["stage1"] = loss_cfg["stage1_weight"] * symmetric_info_nce(out.scale * stage1)
    if prior:
        parts["radius"] = loss_cfg["radius_prior"] * radius_prior(rest.pop(0), float(config["model"]["radius_init"]))
    if support:
        parts["support"] = loss_cfg["support_weight"] * symmetric_info_nce(out.scale * rest.pop(0))
    if matching:
        parts["gate"] = loss_cfg["gate_match_weight"] * rest.pop(0).mean()
    total = functools.reduce(torch.add, parts.values())  # as sum(), without its leading int 0
    return total, {k: float(v.detach()) for k, v in parts.items()}


def average_gradients(model: torch.nn.Module, world: int) -> None:
    """Data-parallel gradient averaging, after backward.

    Not DistributedDataParallel's hooks: they all-reduce while backward still runs the all-gather's
    own collective, and on gloo the two can interleave differently on each process.
    """
    if world == 1:
        return
    for parameter in model.parameters():
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad /= world


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(title="training loss", xlabel="epoch", ylabel="loss")
    for key in ("val_t2v_R@1", "val_t2v_R@5", "val_stage1_t2v_R@1"):
        if key in history[0]:
            right.plot(epochs, [h[key] for h in history], marker="o", label=key.replace("val_", ""))
    right.set(title="validation recall", xlabel="epoch", ylabel="%")
    right.legend()
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    os.replace(tmp, path)


@dataclass
class Session:
    """Everything one training run holds between its steps."""

    config: Config
    device: torch.device
    rank: int
    world: int
    train: Split
    val: Split
    run_dir: Path
    meta: dict
    model: GAISHead
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    schedule: Schedule
    neighbours: AudioNeighbours | None = None  # the audio neighbour swap (train.audio_swap > 0)
    start_epoch: int = 0
    best: Best = field(default_factory=_no_best)
    history: list[dict] = field(default_factory=list)

    @property
    def train_cfg(self) -> dict:
        return self.config["train"]


def _load_splits(work: Workdir, captions_path: Path, dataset, config: Config, device, allow_missing, rank, console):
    splits, report = caption_splits(
        work,
        captions_path,
        dataset,
        config["train"],
        TextEncoder(work, device),
        allow_missing,
        bool(config["train"]["lazy_features"]),
    )
    if report.missing and rank == 0:
        console.print(
            f"[yellow]skipped {len(report.missing)} captioned videos that are not extracted (first: "
            f"{', '.join(report.missing[:5])})",
            highlight=False,
        )
    if "train" not in splits or "val" not in splits:
        raise WorkdirError(
            f"{captions_path}: needs train and val captions (val is carved from train when val_ratio > 0)"
        )
    return splits["train"], splits["val"]


def audio_neighbours(model: GAISHead, train: Split, config: Config) -> AudioNeighbours | None:
    """The audio swap's neighbours, searched on standardised audio: the heads' statistics, or statistics fitted
    for the search alone when the heads take raw inputs (raw log-mel shares one large offset, so every cosine
    would be near 1)."""
    if not config["model"]["audio"]:
        return None
    audio_stats = model.audio_stats
    if not config["model"]["standardise"]:
        audio_stats = Standardiser(model.audio_stats.mean.shape[0])
        fit_statistics(Standardiser(model.dim), audio_stats, Standardiser(model.dim), train)
    cfg = config["train"]
    return AudioNeighbours(
        train.videos, audio_stats, int(cfg["audio_swap_neighbours"]), int(cfg["audio_swap_pool"]), int(cfg["seed"])
    )


def set_up_or_resume(
    workdir: Path, captions_path: Path, config: Config, dataset, allow_missing, run_name, console
) -> Session:
    """Splits, heads (inputs standardised on the train split), schedule, optimiser; or the saved state."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    train_cfg, work = config["train"], Workdir(workdir)
    device = init_distributed(config["runtime"]["device"], timeout_minutes=float(train_cfg["dist_timeout_minutes"]))
    record = work.identity()
    if record is None:
        raise WorkdirError(f"{workdir}: no features yet; run `gais-pipe extract` first")
    train, val = _load_splits(work, captions_path, dataset, config, device, allow_missing, rank, console)
    run_config = {k: config[k] for k in ("model", "loss", "train")}
    run_dir = work.root / "runs" / (run_name or f"run-{short_hash([run_config, record['feature_hash']])[:8]}")
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "config": run_config,
        "feature_hash": record["feature_hash"],
        "identity": record["identity"],
        "clip_sha256": record["clip"]["sha256"],
        "captions": str(captions_path),
        "dataset": dataset,
    }
    seed = int(train_cfg["seed"])
    torch.manual_seed(seed)
    model = GAISHead.for_features(record["identity"], config["model"])
    if config["model"]["standardise"]:
        model.fit_inputs(train)
    neighbours = audio_neighbours(model, train, config) if float(train_cfg["audio_swap"]) > 0 else None
    model = model.to(device)
    schedule = plan_schedule(
        train_cfg, len(train.video_ids), world, lambda batch: len(epoch_batches(train, batch, seed, 0, world))
    )
    optimizer = optimizer_for(model, schedule.lr, float(train_cfg["weight_decay"]))
    scheduler = lr_scheduler(optimizer, schedule.total_steps, schedule.warmup_steps)
    session = Session(
        config, device, rank, world, train, val, run_dir, meta, model, optimizer, scheduler, schedule, neighbours
    )
    state = load_training_state(run_dir, meta)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        session.start_epoch, session.best, session.history = state["epoch"] + 1, state["best"], state["history"]
        if rank == 0:
            console.print(f"resuming {run_dir.name} after epoch {state['epoch'] + 1}", highlight=False)
    if world > 1:  # same start everywhere, whatever each process's RNG did
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
        torch.manual_seed(seed + 1000 * rank + session.start_epoch)  # each rank its own dropout masks
    if rank == 0:
        console.print(schedule.describe(len(train.video_ids), len(val.video_ids), len(val)), highlight=False)
        if neighbours is not None:
            console.print(neighbours.describe(float(train_cfg["audio_swap"])), highlight=False)
    return session


def train_epoch(session: Session, epoch: int, on_step) -> dict:
    """One pass over the train videos (one random caption each); the epoch's history entry."""
    model, train, cfg, device = session.model, session.train, session.train_cfg, session.device
    seed, amp = int(cfg["seed"]), device.type == "cuda" and bool(cfg["amp"])
    sampler = np.random.default_rng([seed, epoch, 1])  # the variance sample: reproducible on resume
    swapper = np.random.default_rng([seed, epoch, 2])  # the audio swap: the same on every rank and on resume
    model.train()
    losses, seen, started = [], 0, time.perf_counter()
    for step, captions_idx in enumerate(epoch_batches(train, session.schedule.batch_size, seed, epoch, session.world)):
        rows = train.caption_video[captions_idx]
        heard = rows
        if session.neighbours is not None:
            heard = session.neighbours.audio_rows(rows, float(cfg["audio_swap"]), swapper)
        videos = silence_some(with_audio_of(train.videos, rows, heard), float(cfg["audio_drop"]), swapper).to(device)
        texts = train.text_features[captions_idx].to(device).float()
        if model.perturbation == "svsp":
            siblings, groups = variance_texts(train, captions_idx, int(cfg["variance_captions"]), sampler)
            with torch.no_grad():
                model.update_text_variance(model.encode_text(siblings.to(device).float()), groups.to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            eps = batch_noise(model, len(captions_idx), seed, epoch, step)
            loss, _ = batch_loss(model, texts, videos, session.config, session.rank, session.world, eps)
        session.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        average_gradients(model, session.world)
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg["grad_clip"]))
        session.optimizer.step()
        session.scheduler.step()
        losses.append(float(loss.detach()))
        seen += len(captions_idx)
        on_step(epoch, losses[-1], seen / (time.perf_counter() - started))
    return {
        "epoch": epoch + 1,
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "captions_per_s": seen / max(time.perf_counter() - started, 1e-9),
        "lr": session.scheduler.get_last_lr()[0],
        "logit_scale": float(model.scale().detach()),
    }


def selection_score(entry: dict) -> list[float]:
    """What picks the checkpoint: the val text-to-video mean reciprocal rank, then the val margin (own
    video's score minus the best other's, averaged over captions). Recall sums saturate on a val split of a
    few dozen captions (R@5 = R@10 = 100 early on) and pick a lucky early epoch. The val loss rises once the
    learned temperature makes the few wrong answers confident while the ranking still improves (one run:
    loss lowest at epoch 35, R@1 75.7; R@1 84.7 at epoch 70). The MRR counts every caption's rank and no
    temperature; the margin breaks its ties once every val caption ranks first."""
    return [entry["val_t2v_MRR"], entry["val_t2v_margin"]]


def validate_and_keep(session: Session, epoch: int, entry: dict, console: Console) -> None:
    """Rank 0: validate, keep the best checkpoint by `selection_score`, save the resumable state."""
    model, meta, run_dir = session.model, session.meta, session.run_dir
    scores = evaluate(model, session.val, session.device, int(session.config["eval"]["text_chunk"]))
    full = scores["full"]["t2v"]
    entry.update({f"val_t2v_{k}": v for k, v in full.items() if k.startswith("R@") or k in ("MdR", "MnR", "MRR")})
    entry["val_t2v_loss"] = scores["full"]["t2v_loss"]
    entry["val_t2v_margin"] = scores["full"]["t2v_margin"]
    entry["val_stage1_t2v_R@1"] = scores["stage1"]["t2v"]["R@1"]
    entry["val_score"] = selection_score(entry)
    session.history.append(entry)
    if entry["val_score"] > session.best["score"]:
        session.best = {"epoch": epoch + 1, "val_t2v_R@1": entry["val_t2v_R@1"], "score": entry["val_score"]}
        save_checkpoint(run_dir / "best.safetensors", model, {**meta, "epoch": epoch + 1, "val": scores})
    save_checkpoint(run_dir / "last.safetensors", model, {**meta, "epoch": epoch + 1})
    state = {
        "model": model.state_dict(),
        "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if session.device.type == "cuda" else None,
        "epoch": epoch,
        "best": session.best,
        "history": session.history,
    }
    save_training_state(run_dir, meta, state)
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    plot_curves(session.history, run_dir / "curves.png")
    console.print(
        f"epoch {epoch + 1}: loss {entry['train_loss']:.4f}, val t2v R@1 {entry['val_t2v_R@1']:.1f} "
        f"R@5 {entry['val_t2v_R@5']:.1f} (stage-1 R@1 {entry['val_stage1_t2v_R@1']:.1f})",
        highlight=False,
    )


def should_stop(session: Session) -> bool:
    """Early stop: `patience` validations in a row without a better checkpoint (decided on rank 0)."""
    patience = session.schedule.patience
    stop = 0
    if session.rank == 0 and patience > 0 and session.history:
        stop = int(
            len(session.history) - [h["epoch"] for h in session.history].index(session.best["epoch"]) - 1 >= patience
        )
    if session.world > 1:
        flag = torch.tensor([stop])
        dist.broadcast(flag, src=0)
        stop = int(flag)
    return bool(stop)


def run_train(
    workdir: Path,
    captions_path: Path,
    config: Config,
    dataset: str | None = None,
    allow_missing: bool = False,
    run_name: str | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> TrainResult:
    console = console or Console(stderr=True)
    owns_group = not (dist.is_available() and dist.is_initialized())
    try:
        return _train(workdir, captions_path, config, dataset, allow_missing, run_name, console, show_progress)
    finally:
        if owns_group:  # a process group this run made is left before the process exits
            destroy_distributed()


def _train(workdir, captions_path, config, dataset, allow_missing, run_name, console, show_progress) -> TrainResult:
    session = set_up_or_resume(workdir, captions_path, config, dataset, allow_missing, run_name, console)
    schedule = session.schedule
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} {task.fields[rate]:.0f} captions/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress or session.rank != 0,
    )
    with progress:
        task = progress.add_task(
            "train",
            total=schedule.steps_per_epoch * (schedule.epochs - session.start_epoch),
            epoch=session.start_epoch + 1,
            loss=0.0,
            rate=0.0,
        )

        def on_step(epoch: int, loss: float, rate: float) -> None:
            progress.update(task, advance=1, epoch=epoch + 1, loss=loss, rate=rate)

        for epoch in range(session.start_epoch, schedule.epochs):
            if should_stop(session):  # a run that stopped early stays stopped when it is run again
                break
            entry = train_epoch(session, epoch, on_step)
            last = epoch + 1 == schedule.epochs
            if (epoch + 1) % schedule.val_every and not last:
                continue
            if session.rank == 0:
                validate_and_keep(session, epoch, entry, console)
            if session.world > 1:
                dist.barrier()
            if epoch + 1 < schedule.epochs and should_stop(session):
                if session.rank == 0:
                    console.print(
                        f"stopped early after epoch {epoch + 1}: "
                        f"no better val score in {schedule.patience} validations",
                        highlight=False,
                    )
    return TrainResult(session.run_dir, session.best["epoch"], session.best["val_t2v_R@1"], session.history)
