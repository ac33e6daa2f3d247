"""The training schedule, fitted to the collection: how many steps, how big a batch, what learning rate.

A fixed number of epochs means ~10 optimiser steps on a few hundred videos and tens of thousands on
millions; neither trains. Here the step count has a floor (epochs are scaled up to reach it), the
batch is capped so that even a small train split makes several batches an epoch, and validation runs
a bounded number of times per run however short the epochs are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass
class Schedule:
    batch_size: int
    steps_per_epoch: int
    epochs: int
    warmup_steps: int
    lr: float
    val_every: int  # epochs between validations
    patience: int  # validations without improvement before stopping; 0: never stop early

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def describe(self, train_videos: int, val_videos: int, val_captions: int) -> str:
        return (
            f"schedule: {self.total_steps} steps = {self.epochs} epochs x {self.steps_per_epoch} batches of "
            f"{self.batch_size} (of {train_videos} train videos), lr {self.lr:g}, warm-up {self.warmup_steps} steps, "
            f"validation every {self.val_every} epochs on {val_videos} videos / {val_captions} captions, "
            f"patience {self.patience}"
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "total_steps": self.total_steps}


def auto_batch_size(train_cfg: dict, train_videos: int, world: int) -> int:
    """The configured batch, capped so that an epoch has at least `min_batches` batches (a batch of
    the whole train split has one step an epoch and its negatives never change); a multiple of the
    process count, at least 2 per process."""
    batch = min(int(train_cfg["batch_size"]), max(train_videos // int(train_cfg["min_batches"]), 2))
    batch = max(batch - batch % world, 2 * world)
    return batch


def plan_schedule(train_cfg: dict, train_videos: int, world: int, steps_per_epoch_of) -> Schedule:
    """The schedule for a train split of `train_videos` videos. `steps_per_epoch_of(batch)` counts the
    batches one epoch really makes (after dropping too-small ones)."""
    batch = auto_batch_size(train_cfg, train_videos, world)
    steps = max(1, steps_per_epoch_of(batch))
    epochs = int(train_cfg["epochs"]) or max(1, math.ceil(int(train_cfg["min_steps"]) / steps))
    total = steps * epochs
    warmup = min(
        max(int(train_cfg["warmup_min_steps"]), round(total * float(train_cfg["warmup_fraction"]))), total // 2
    )
    validations = max(1, int(train_cfg["validations"]))
    return Schedule(
        batch_size=batch,
        steps_per_epoch=steps,
        epochs=epochs,
        warmup_steps=max(1, warmup),
        lr=float(train_cfg["lr"]),
        val_every=max(1, math.ceil(epochs / validations)),
        patience=int(train_cfg["patience"]),
    )


def lr_scheduler(optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up, then cosine decay to zero at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_for(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay only on the parameters the model does not exempt (`model.no_decay`)."""
    decay: list[torch.nn.Parameter] = []
    exempt: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        (exempt if model.no_decay(name) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)
