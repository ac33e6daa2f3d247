"""CLIP's text tower alone, without importing open_clip and without building its image tower.

A query needs one text embedding. The whole open_clip model for it costs importing open_clip (which
imports transformers and torchvision: seconds on a small machine), initialising the image tower at
random, then overwriting both towers from the checkpoint. The standard CLIP text tower is small and
fixed: token and position embeddings, pre-LayerNorm residual attention blocks under a causal mask, a
last LayerNorm, the feature of the end-of-text token (the largest token id), a projection.
`TextTower` is that, under open_clip's parameter names, so it takes the text half of a checkpoint
as it is (from a safetensors file only those tensors are read; the image weights stay on disk); tests hold
its output equal to open_clip's `encode_text`. The tokenizer is open_clip's own `SimpleTokenizer`,
loaded from its file without running the open_clip package's imports.

Whatever this does not cover returns None from `load_text_tower`, and the caller builds the whole
model with open_clip: HF text towers, layer scale, custom attention blocks, a projection bias,
non-argmax pooling, TorchScript files, and pretrained tags of workdirs that did not record whether
the tag forced QuickGELU.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import TypeGuard

import torch
from torch import nn

# text_cfg keys the tower implements, and the keys it accepts only at open_clip's default value
SIZES = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0}
DEFAULT_ONLY = {
    "ls_init_value": None,
    "embed_cls": False,
    "pad_id": 0,
    "eos_id": 2,
    "no_causal_mask": False,
    "final_ln_after_pool": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "proj_type": "linear",
    "output_tokens": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
    "hf_model_name": None,
    "hf_tokenizer_name": None,
    "tokenizer_mode": None,
    "tokenizer_kwargs": None,
}


# Every weight comes from the checkpoint, so none is initialised first (nn's initialisation of a ViT-B/32
# text tower costs a few hundred ms; building it on the meta device instead imports torch._dynamo, more).
class _Linear(nn.Linear):
    def reset_parameters(self) -> None:
        pass


class _Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class _LayerNorm(nn.LayerNorm):
    def reset_parameters(self) -> None:
        pass


class _Attention(nn.MultiheadAttention):
    def _reset_parameters(self) -> None:
        pass


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """open_clip's ResidualAttentionBlock without layer scale: x + attn(ln_1 x), then x + mlp(ln_2 x)."""

    def __init__(self, width: int, heads: int, mlp_width: int, quick_gelu: bool):
        super().__init__()
        self.ln_1 = _LayerNorm(width)
        self.attn = _Attention(width, heads, batch_first=True)
        self.ln_2 = _LayerNorm(width)
        act = QuickGELU() if quick_gelu else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", _Linear(width, mlp_width)), ("gelu", act), ("c_proj", _Linear(mlp_width, width))])
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(*(self.ln_1(x),) * 3, need_weights=False, attn_mask=mask.to(x.dtype))[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    """The blocks under open_clip's parameter names (transformer.resblocks.N...)."""

    def __init__(self, blocks: list[Block]):
        super().__init__()
        self.resblocks = nn.ModuleList(blocks)


class TextTower(nn.Module):
    def __init__(self, text_cfg: dict, embed_dim: int, quick_gelu: bool):
        super().__init__()
        sizes = {key: text_cfg.get(key, default) for key, default in SIZES.items()}
        width, context = sizes["width"], sizes["context_length"]
        self.token_embedding = _Embedding(sizes["vocab_size"], width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        mlp_width = int(width * sizes["mlp_ratio"])
        blocks = [Block(width, sizes["heads"], mlp_width, quick_gelu) for _ in range(sizes["layers"])]
        self.transformer = _Transformer(blocks)
        self.ln_final = _LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.context_length = context
        self.embed_dim = embed_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, context] token ids -> [N, embed_dim], not normalised (as open_clip's encode_text).

        Under the causal mask no position sees a later one, so the end-of-text feature depends only on
        the tokens up to it: the padding after the longest text is cut off (a 6-word query runs 8
        positions, not 77)."""
        ends = tokens.argmax(dim=-1)
        length = int(ends.max()) + 1 if len(tokens) else 1
        return self.encode_cut(tokens[:, :length])

    def encode_cut(self, tokens: torch.Tensor) -> torch.Tensor:
        """`forward` of tokens already cut after the longest text's end-of-text token ([N, L], L <= context):
        what the ONNX export of the tower is a graph of (retrieval/onnx_export.py), the cut left to its caller."""
        ends = tokens.argmax(dim=-1)
        length = tokens.shape[1]
        mask = torch.full((length, length), float("-inf"), device=tokens.device).triu_(1)
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), ends]
        return x @ self.text_projection


def architecture(model_name: str) -> dict | None:
    """The open_clip model config: this package's bundled ones first, then open_clip's, read as JSON."""
    bundled = resources.files("gais_pipe.configs") / "open_clip" / f"{model_name}.json"
    if bundled.is_file():
        return json.loads(bundled.read_text())
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "model_configs" / f"{model_name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def covered(config: dict | None) -> TypeGuard[dict]:
    if not config or config.get("custom_text") or "embed_dim" not in config:
        return False
    text_cfg = config.get("text_cfg", {})
    return all(key in SIZES or (key in DEFAULT_ONLY and value == DEFAULT_ONLY[key]) for key, value in text_cfg.items())


def simple_tokenizer(context_length: int):
    """open_clip's SimpleTokenizer, from its module file (which needs only ftfy, regex and torch). The
    module makes a default tokenizer as it loads (its merges table costs 0.1 s); that one is reused."""
    module = sys.modules.get("open_clip.tokenizer")
    if module is None:
        name = "gais_pipe._open_clip_tokenizer"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError("open_clip is not installed (its tokenizer is needed)", name="open_clip")
            path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"{path}: cannot be loaded as a module", path=str(path))
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            sys.modules[name] = module
    default = getattr(module, "_tokenizer", None)
    if isinstance(default, module.SimpleTokenizer) and default.context_length == context_length:
        return default
    return module.SimpleTokenizer(context_length=context_length)


def read_text_state(file: Path, names) -> dict[str, torch.Tensor] | None:
    """The named tensors from a safetensors file (only those are read) or a torch state-dict file
    (memory-mapped, weights only); None when the file is anything else or lacks one of them."""
    from safetensors import safe_open

    names = list(names)
    if Path(file).suffix == ".safetensors":
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return {name: handle.get_tensor(name) for name in names} if set(names) <= set(handle.keys()) else None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a TorchScript archive, an old-format file: open_clip knows those
        return None
    state = state.get("state_dict", state) if isinstance(state, dict) else None
    if not state:
        return None
    if next(iter(state)).startswith("module."):
        state = {name[len("module.") :]: value for name, value in state.items()}
    return {name: state[name] for name in names} if set(names) <= set(state) else None


def load_text_tower(model_name: str, pretrained: str, file: Path, quick_gelu: bool | None = None):
    """(TextTower in eval mode, tokenizer) for a covered architecture and file, else None.

    `quick_gelu` is what the checkpoint was loaded with when the features were made (some pretrained
    tags force QuickGELU); unknown (None) for a pretrained tag, the whole model is built instead."""
    config = architecture(model_name)
    is_tag = pretrained != "random" and not pretrained.startswith("hf-hub:") and not Path(pretrained).is_file()
    if (is_tag and quick_gelu is None) or not covered(config):
        return None
    gelu = bool(config.get("quick_gelu")) or bool(quick_gelu)
    tower = TextTower(config.get("text_cfg", {}), int(config["embed_dim"]), gelu)
    wanted = tower.state_dict()
    state = read_text_state(Path(file), wanted)
    if state is None or any(state[name].shape != wanted[name].shape for name in wanted):
        return None
    tower.load_state_dict({name: value.float() for name, value in state.items()}, strict=True, assign=True)
    try:
        tokenizer = simple_tokenizer(tower.context_length)
    except Exception:  # an open_clip whose tokenizer module changed: the caller uses open_clip itself
        return None
    return tower.eval().requires_grad_(False), tokenizer


def trim_bpe_cache(tokenizer, limit: int = 100_000) -> None:
    """open_clip's SimpleTokenizer remembers the BPE of every word it has seen, without bound; a service
    that tokenizes whatever its users type would grow without end. Past `limit` words the cache is
    reset to the special tokens it starts with."""
    cache = getattr(tokenizer, "cache", None)
    if isinstance(cache, dict) and len(cache) > limit and hasattr(tokenizer, "all_special_ids"):
        specials = [tokenizer.decoder[i] for i in tokenizer.all_special_ids]
        tokenizer.cache = {t: t for t in specials}
