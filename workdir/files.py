"""The workdir's files: written atomically (a reader sees the old file or the new one, never half of
one), and read with errors that name the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class CorruptFile(RuntimeError):
    """A workdir file that exists but cannot be read; the message names it and says why."""


def read_json(path: Path, default=None):
    """The file's JSON value, `default` when it does not exist; a broken file is a one-line error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    except UnicodeDecodeError as error:
        raise CorruptFile(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#x}); delete or restore it"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CorruptFile(
            f"{path} line {error.lineno} column {error.colno}: not valid JSON ({error.msg}); delete or restore it"
        ) from None


def write_json_atomically(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written temporary left behind
        raise


def save_tensors_atomically(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """A safetensors file (loads without pickle), written under a temporary name and renamed."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
