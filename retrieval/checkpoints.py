"""Checkpoints: safetensors weights carrying their config and feature identity, and a resumable
training state loaded with weights_only=True."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from gais_pipe.config import short_hash
from gais_pipe.workdir import Workdir, WorkdirError
from gais_pipe.workdir.files import save_tensors_atomically

from .heads import GAISHead

STATE_FILE = "training_state.pt"


def save_checkpoint(path: Path, model: torch.nn.Module, meta: dict) -> None:
    save_tensors_atomically(path, model.state_dict(), metadata={"gais_pipe": json.dumps(meta, sort_keys=True)})


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, meta: config, feature identity, epoch, ...)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("gais_pipe", "{}"))
    if "feature_hash" not in meta:
        raise WorkdirError(f"{path}: not a gais-pipe checkpoint (no config or feature identity inside)")
    return load_file(str(path)), meta


def _run_key(meta: dict) -> str:
    return short_hash([meta["config"], meta["feature_hash"], meta.get("captions"), meta.get("dataset")])


def save_training_state(run_dir: Path, meta: dict, state: dict) -> None:
    path = run_dir / STATE_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({**state, "run_key": _run_key(meta)}, tmp)
    os.replace(tmp, path)


def load_training_state(run_dir: Path, meta: dict) -> dict | None:
    """The state to resume from, or None for a fresh run; a run of another config is refused."""
    path = run_dir / STATE_FILE
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("run_key") != _run_key(meta):
        raise WorkdirError(f"{run_dir}: holds a run of another config, features or captions; pass another --run-name")
    return state


def latest_checkpoint(work: Workdir) -> Path:
    runs = sorted(work.runs_dir.glob("*/best.safetensors"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(
            f"{work.root}: no trained checkpoint (runs/*/best.safetensors); run `gais-pipe train` or pass --checkpoint"
        )
    return runs[-1]


def load_head(work: Workdir, checkpoint: Path | None, device: torch.device) -> tuple[GAISHead, dict, Path]:
    """The head of a checkpoint, after checking it was trained on this workdir's features."""
    path = checkpoint or latest_checkpoint(work)
    state, meta = load_checkpoint(path)
    record = work.identity()
    if record is None or record["feature_hash"] != meta["feature_hash"]:
        raise WorkdirError(f"{path}: trained on other features (hash {meta['feature_hash']}) than {work.root} holds")
    model = GAISHead.for_features(meta["identity"], meta["config"]["model"])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise WorkdirError(
            f"{path}: does not fit this version's heads ({str(error).splitlines()[-1].strip()})"
        ) from None
    return model.to(device).eval(), meta, path
