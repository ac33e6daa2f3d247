"""open_clip model factory: build an architecture, then load weights from one identified file.

Sources (config key `features.clip.pretrained`):
- "random": initialise from `seed`, save once as <workdir>/models/<model>-random-seed<seed>.safetensors,
  and from then on load that file like any other checkpoint;
- an open_clip pretrained tag ("openai", "laion2b_s34b_b79k", ...), fetched through open_clip into
  the HF cache, which HF_HUB_OFFLINE=1 keeps offline;
- "hf-hub:org/repo": an open_clip checkpoint in an HF repo (cache or download);
- a path to a local .safetensors / .bin / .pt checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import torch

from gais_pipe.workdir.files import save_tensors_atomically
from gais_pipe.workdir.hashing import sha256_file

from .weights import WeightsUnavailable


@dataclass
class LoadedClip:
    model: Any  # an open_clip CLIP module (open_clip has no type information: encode_image is not seen)
    identity: dict  # model, pretrained, file, sha256
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int


class _QuietAboutNoWeights(logging.Filter):
    """open_clip warns that a model built without `pretrained` is random; here weights always follow."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


logging.getLogger().addFilter(_QuietAboutNoWeights())


def register_bundled_architectures() -> None:
    """Make the small architectures in configs/open_clip/ known to open_clip by name."""
    folder = resources.files("gais_pipe.configs") / "open_clip"
    with resources.as_file(folder) as path:
        open_clip.add_model_config(path)


def configured_image_size(model_name: str) -> int:
    """The image size an architecture takes, read from its config without building it: decoding can start
    before the model is loaded (open_clip sets the preprocessing size from the built visual tower's)."""
    register_bundled_architectures()
    config = open_clip.get_model_config(model_name)
    if not config:
        raise WeightsUnavailable(f"unknown open_clip architecture {model_name!r}")
    size = config["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (tuple, list)) else size)


@contextlib.contextmanager
def no_random_init() -> Iterator[None]:
    """torch.nn.init's functions as no-ops while a model is built whose every weight a checkpoint then sets
    (loaded strictly): a random ViT-B/32 costs about 1 s of CPU to initialise, 0.1 s to build without."""
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}
    try:
        for name in names:
            setattr(init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


def random_checkpoint(model_name: str, seed: int, models_dir: Path) -> Path:
    """The random initialisation for `seed`, written once; later runs load the same file."""
    path = models_dir / f"{model_name}-random-seed{seed}.safetensors"
    if not path.exists():
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name, pretrained=None)
        torch.random.set_rng_state(generator_state)
        save_tensors_atomically(path, model.state_dict())
    return path


def _how_to_get(model_name: str, tag: str) -> str:
    return (
        f"open_clip weights {model_name}/{tag} are not on this machine and cannot be downloaded here. "
        f"On a machine with network run: python -c \"import open_clip; open_clip.create_model('{model_name}', "
        f"pretrained='{tag}')\", then copy its HF cache (~/.cache/huggingface) to this machine and set "
        "HF_HUB_OFFLINE=1; "
        f"or download the checkpoint file and pass --set features.clip.pretrained=/path/to/checkpoint.safetensors"
    )


def resolve_checkpoint(clip_cfg: dict, models_dir: Path) -> tuple[Path, bool]:
    """(local checkpoint file, whether the architecture needs QuickGELU) for the configured source."""
    name, source = clip_cfg["model"], str(clip_cfg["pretrained"])
    if source == "random":
        return random_checkpoint(name, int(clip_cfg.get("seed", 0)), models_dir), False
    local = Path(source).expanduser()
    if local.is_file():
        return local, False
    if source.startswith("hf-hub:"):
        try:
            return Path(open_clip.pretrained.download_pretrained_from_hf(source[len("hf-hub:") :])), False
        except Exception as error:
            raise WeightsUnavailable(_how_to_get(name, source) + f" ({error})") from None
    if any(sep in source for sep in "/\\") or source.endswith((".safetensors", ".pt", ".pth", ".bin")):
        raise WeightsUnavailable(f"{source}: checkpoint file not found")
    pretrained_cfg = open_clip.get_pretrained_cfg(name, source)
    if not pretrained_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise WeightsUnavailable(f"open_clip has no pretrained tag {source!r} for {name} (known: {tags})")
    try:
        file = open_clip.pretrained.download_pretrained(pretrained_cfg)
    except Exception as error:
        raise WeightsUnavailable(_how_to_get(name, source) + f" ({error.__class__.__name__})") from None
    if not file:
        raise WeightsUnavailable(_how_to_get(name, source))
    return Path(file), bool(pretrained_cfg.get("quick_gelu", False))


def load_clip(
    clip_cfg: dict,
    models_dir: Path,
    device: torch.device | str = "cpu",
    sha256: str | None = None,
    hash_file: Callable[[Path], str] = sha256_file,
) -> LoadedClip:
    """The whole model from one checkpoint file; `sha256` is the file's hash when the caller has already
    computed it, `hash_file` what computes it otherwise (a 600 MB file costs a second to hash: the workdir's
    cache hashes each file once)."""
    register_bundled_architectures()
    name = clip_cfg["model"]
    if name not in open_clip.list_models():
        raise WeightsUnavailable(f"unknown open_clip architecture {name!r}")
    file, quick_gelu = resolve_checkpoint(clip_cfg, models_dir)
    with no_random_init():
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    try:
        open_clip.load_checkpoint(model, str(file), weights_only=True)
    except Exception as error:
        raise WeightsUnavailable(
            f"{file}: not a usable {name} checkpoint ({error.__class__.__name__}: {str(error)[:200]})"
        ) from None
    model = model.eval().requires_grad_(False).to(device)
    preprocess = open_clip.get_model_preprocess_cfg(model)
    size = preprocess.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    identity = {
        "model": name,
        "pretrained": str(clip_cfg["pretrained"]),
        "file": str(file),
        "sha256": sha256 or hash_file(file),
        "quick_gelu": quick_gelu,  # forced by the pretrained tag: a text tower built later must match
    }
    return LoadedClip(
        model=model,
        identity=identity,
        image_size=int(size),
        mean=tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),
        embed_dim=int(
            model.text_projection.shape[1]
            if hasattr(model, "text_projection") and model.text_projection is not None
            else model.visual.output_dim
        ),
    )


def image_tower_in(clip: LoadedClip, dtype: torch.dtype | None) -> None:
    """Keep the image tower's weights in the autocast dtype (CUDA fp16 / bf16): autocast would otherwise cast
    every weight again on every call, and half the weights is half the memory traffic. The text tower stays
    fp32. Outputs match autocast over fp32 weights up to the rounding of the few ops autocast leaves in fp32
    (adding the positional embedding); features are stored in fp16 anyway."""
    if dtype is not None:
        clip.model.visual.to(dtype)
