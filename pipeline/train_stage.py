"""The train stage: the GAIS heads on cached features, validated every epoch, resumable.

One process or many (torchrun, data parallel): with W processes each computes the score rows of its
share of the global batch's texts against all of the batch's videos (the inputs are cached features,
cheap to hold everywhere), the rows are gathered with autograd, and every process computes the same
loss over the whole batch. Averaged over the processes, the gradients equal those of one process
with the same global batch.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gais_pipe.config import Config, short_hash
from gais_pipe.distributed import resolve_device
from gais_pipe.retrieval.checkpoints import load_training_state, save_checkpoint, save_training_state
from gais_pipe.retrieval.data import Split, caption_splits
from gais_pipe.retrieval.evaluate import evaluate
from gais_pipe.retrieval.heads import GAISHead, VideoBatch
from gais_pipe.retrieval.losses import adaptive_margin, support_text_scores, symmetric_info_nce
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.workdir import Workdir, WorkdirError


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


def batch_loss(
    model, texts: torch.Tensor, videos: VideoBatch, config: Config, rank: int = 0, world: int = 1
) -> tuple[torch.Tensor, dict]:
    """The loss of one global batch (text i describes video i); this process computes its rows."""
    loss_cfg = config["loss"]
    size = len(texts)
    lo, hi = rank * size // world, (rank + 1) * size // world
    positives = torch.arange(lo, hi, device=texts.device)
    support = bool(loss_cfg["support_weight"])
    out = model(texts[lo:hi], videos, positives=positives if support else None)
    blocks = [out.full, out.stage1]
    if support:
        blocks.append(support_text_scores(out.text, out.pooled.video, out.positive_radius, positives))
    scores, stage1, *rest = _gather_rows(blocks, world)
    margin = 0.0
    if loss_cfg["refinement"]:
        margin = adaptive_margin(texts, videos.frames.mean(dim=1), loss_cfg["margin_beta"], loss_cfg["margin_delta"])
    parts = {"main": symmetric_info_nce(out.scale * (scores + margin))}
    if loss_cfg["stage1_weight"]:
        parts["stage1"] = loss_cfg["stage1_weight"] * symmetric_info_nce(out.scale * stage1)
    if support:
        parts["support"] = loss_cfg["support_weight"] * symmetric_info_nce(out.scale * rest[0])
    total = sum(parts.values())
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


def epoch_batches(split: Split, batch_size: int, seed: int, epoch: int, world: int) -> list[np.ndarray]:
    """One random caption per video (X-Pool's sampling), videos shuffled; the same on every process."""
    generator = np.random.default_rng([seed, epoch])
    by_video: dict[int, list[int]] = {}
    for caption, video in enumerate(split.caption_video):
        by_video.setdefault(int(video), []).append(caption)
    videos = generator.permutation(sorted(by_video))
    captions = np.array([generator.choice(by_video[v]) for v in videos])
    batches = [captions[i : i + batch_size] for i in range(0, len(captions), batch_size)]
    if world > 1:  # every process needs an equal share of rows
        batches = [b[: len(b) - len(b) % world] for b in batches]
    return [b for b in batches if len(b) >= max(2, world)]


def variance_texts(split: Split, captions: np.ndarray, per_video: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `per_video` captions of each batch video, and which video each belongs to."""
    chosen, groups = [], []
    for group, caption in enumerate(captions):
        video = split.caption_video[caption]
        siblings = np.flatnonzero(split.caption_video == video)[:per_video]
        chosen.extend(siblings.tolist())
        groups.extend([group] * len(siblings))
    return split.text_features[chosen], torch.tensor(groups)


def _schedule(optimizer, total_steps: int, warmup_fraction: float):
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config["runtime"]["device"])
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    train_cfg = config["train"]
    work = Workdir(workdir)
    record = work.identity()
    if record is None:
        raise WorkdirError(f"{workdir}: no features yet; run `gais-pipe extract` first")

    splits, report = caption_splits(
        work,
        captions_path,
        dataset,
        train_cfg,
        TextEncoder(work, device),
        allow_missing,
        bool(train_cfg["lazy_features"]),
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
    train, val = splits["train"], splits["val"]

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

    torch.manual_seed(int(train_cfg["seed"]))
    model = GAISHead.for_features(record["identity"], config["model"]).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(train_cfg["lr"]), weight_decay=float(train_cfg["weight_decay"])
    )
    steps_per_epoch = len(epoch_batches(train, int(train_cfg["batch_size"]), int(train_cfg["seed"]), 0, world))
    scheduler = _schedule(optimizer, steps_per_epoch * int(train_cfg["epochs"]), float(train_cfg["warmup_fraction"]))
    start_epoch, best, history = 0, {"epoch": -1, "val_t2v_R@1": -1.0}, []
    state = load_training_state(run_dir, meta)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        if rank == 0:
            console.print(f"resuming {run_dir.name} after epoch {state['epoch'] + 1}", highlight=False)
    if world > 1:  # same start everywhere, whatever each process's RNG did
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    amp = device.type == "cuda" and bool(train_cfg["amp"])

    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} {task.fields[rate]:.0f} captions/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress or rank != 0,
    )
    with progress:
        task = progress.add_task(
            "train",
            total=steps_per_epoch * (int(train_cfg["epochs"]) - start_epoch),
            epoch=start_epoch + 1,
            loss=0.0,
            rate=0.0,
        )
        for epoch in range(start_epoch, int(train_cfg["epochs"])):
            model.train()
            losses, seen, started = [], 0, time.perf_counter()
            for captions_idx in epoch_batches(
                train, int(train_cfg["batch_size"]), int(train_cfg["seed"]), epoch, world
            ):
                video_idx = train.caption_video[captions_idx]
                videos = train.videos.take(video_idx).to(device)
                texts = train.text_features[captions_idx].to(device).float()
                if model.perturbation == "svsp":
                    siblings, groups = variance_texts(train, captions_idx, int(train_cfg["variance_captions"]))
                    with torch.no_grad():
                        model.update_text_variance(model.encode_text(siblings.to(device).float()), groups.to(device))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss, parts = batch_loss(model, texts, videos, config, rank, world)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                average_gradients(model, world)
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(train_cfg["grad_clip"]))
                optimizer.step()
                scheduler.step()
                losses.append(float(loss.detach()))
                seen += len(captions_idx)
                progress.update(
                    task,
                    advance=1,
                    epoch=epoch + 1,
                    loss=losses[-1],
                    rate=seen / (time.perf_counter() - started),
                )
            entry = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "captions_per_s": seen / max(time.perf_counter() - started, 1e-9),
                "lr": scheduler.get_last_lr()[0],
            }
            if rank == 0:
                scores = evaluate(model, val, device, int(config["eval"]["text_chunk"]))
                entry.update(
                    {
                        f"val_t2v_{k}": v
                        for k, v in scores["full"]["t2v"].items()
                        if k.startswith("R@") or k in ("MdR", "MnR")
                    }
                )
                entry["val_stage1_t2v_R@1"] = scores["stage1"]["t2v"]["R@1"]
                history.append(entry)
                if entry["val_t2v_R@1"] > best["val_t2v_R@1"]:
                    best = {"epoch": epoch + 1, "val_t2v_R@1": entry["val_t2v_R@1"]}
                    save_checkpoint(run_dir / "best.safetensors", model, {**meta, "epoch": epoch + 1, "val": scores})
                save_checkpoint(run_dir / "last.safetensors", model, {**meta, "epoch": epoch + 1})
                save_training_state(
                    run_dir,
                    meta,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state(),
                        "epoch": epoch,
                        "best": best,
                        "history": history,
                    },
                )
                with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry) + "\n")
                plot_curves(history, run_dir / "curves.png")
                console.print(
                    f"epoch {epoch + 1}: loss {entry['train_loss']:.4f}, val t2v R@1 {entry['val_t2v_R@1']:.1f} "
                    f"(stage-1 {entry['val_stage1_t2v_R@1']:.1f})",
                    highlight=False,
                )
            if world > 1:
                dist.barrier()
    return TrainResult(run_dir, best["epoch"], best["val_t2v_R@1"], history)
