"""ONNX exports of CLIP's text tower and of the heads' query-side scoring, made from the torch modules.

torch is the only implementation of the model: what `query` and `serve` run through onnxruntime
(retrieval/exported.py) are graphs of `clip_text.TextTower.encode_cut` and of `GAISHead` in eval mode,
exported by torch.onnx from those very modules, never a second implementation:

- text:          tokens [N, L] int64 (cut after the longest text's end token) -> [N, embed_dim]
- heads query:   CLIP text [N, D] -> normalize(GAISHead.encode_text(t)), the stage-1 query
- heads prepare: frames [M, T, D], audio [M, T, Da], mask [M, T] bool -> GAISHead.prepare's state arrays
- heads score:   CLIP text [N, D] and the state of M videos -> GAISHead.forward(...).full, gates, attention

N, L and M are dynamic. The exporter is torch.export's (`dynamo=True`, which needs onnxscript): the
TorchScript one (`dynamo=False`, deprecated since torch 2.9 and needing the `onnx` package as much; faster,
0.2-0.6 s a graph against 1-2 s) traced these modules into wrong graphs without a word. It recorded the
attention's reshape sizes of the example text as constants, so a query of another length failed; on the heads
it gave full scores off by 0.36 (default switches) and dropped the state inputs a graph did not read, so the
state could not be fed to it. torch.export instead proves each dynamic dimension or refuses.
Every export is checked before it is published: onnxruntime runs it on inputs of other sizes than the
example's, against torch, within 1e-4; only then is it written (under a temporary name, then renamed) with
the checkpoint's sha256 and the code's version in its metadata (exported.py tells a stale one from those).
A graph that cannot be exported or fails the check is not written; the reason is kept beside where it would
be, and queries use torch and say so.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gais_pipe.workdir import Workdir

from . import exported
from .clip_text import TextTower, load_text_tower
from .heads import GAISHead, VideoBatch, VideoState

if TYPE_CHECKING:
    from onnxscript import ir

TOLERANCE = 1e-4  # the most an exported graph's output may differ from torch's (relative to its largest value)
STATE_FIELDS = tuple(f.name for f in fields(VideoState))


class ExportError(RuntimeError):
    """A graph that could not be exported, or whose export does not compute what torch computes."""


class TextGraph(nn.Module):
    def __init__(self, tower: TextTower):
        super().__init__()
        self.tower = tower

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower.encode_cut(tokens)


class QueryGraph(nn.Module):
    def __init__(self, head: GAISHead):
        super().__init__()
        self.head = head

    def forward(self, clip_text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head.encode_text(clip_text), dim=-1)


class PrepareGraph(nn.Module):
    def __init__(self, head: GAISHead, names: Sequence[str]):
        super().__init__()
        self.head, self.names = head, tuple(names)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.head.prepare(VideoBatch(frames, audio, mask))
        return tuple(getattr(state, name) for name in self.names)


class ScoreGraph(nn.Module):
    def __init__(self, head: GAISHead, names: Sequence[str]):
        super().__init__()
        self.head, self.names = head, tuple(names)

    def forward(self, clip_text: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        given = dict(zip(self.names, state))
        fields_of: dict[str, Any] = {name: given.get(name) for name in STATE_FIELDS}
        out = self.head(clip_text, VideoState(**fields_of), with_stage1=False)
        return out.full, out.pooled.gates, out.pooled.attention


def state_names(head: GAISHead) -> list[str]:
    """The VideoState fields these heads fill (the others are None: no bilinear term, mean pooling...)."""
    with torch.no_grad():
        state = head.prepare(_videos(head, 1, np.random.default_rng(0)))
    return [name for name in STATE_FIELDS if getattr(state, name) is not None]


def _videos(head: GAISHead, m: int, rng: np.random.Generator) -> VideoBatch:
    audio_dim = head.audio_proj.in_features
    mask = rng.random((m, head.frames)) < 0.7
    mask[0, 0] = False  # a segment without sound
    return VideoBatch(
        torch.from_numpy(rng.standard_normal((m, head.frames, head.dim)).astype(np.float32)),
        torch.from_numpy(rng.standard_normal((m, head.frames, audio_dim)).astype(np.float32)),
        torch.from_numpy(mask),
    )


# --- export, check, publish ----------------------------------------------------------------------------
class Graph(NamedTuple):
    """One graph to export: the module, its example input, other inputs to check it on, its names."""

    module: nn.Module
    example: tuple[torch.Tensor, ...]
    checks: Sequence[tuple[torch.Tensor, ...]]
    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, Any]  # input name -> {axis: (dimension name, its maximum or None)}


def _program(graph: Graph) -> ir.Model:
    """The ONNX model of `graph.module` traced by torch.export on its example, with the named dynamic dimensions."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes: list[dict[int, Any]] = []
    for name in graph.inputs[: len(graph.example)]:
        axes = graph.dynamic.get(name, {})
        for dim_name, top in axes.values():
            if dim_name not in dims:
                dims[dim_name] = Dim(dim_name, min=1, max=top) if top else Dim(dim_name, min=1)
        shapes.append({axis: dims[dim_name] for axis, (dim_name, _) in axes.items()})
    dynamic_shapes: dict[str, Any] = {}
    for parameter in inspect.signature(graph.module.forward).parameters.values():  # by forward's own names
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:  # the state's arrays: one tuple of their shapes
            dynamic_shapes[parameter.name] = tuple(shapes[len(dynamic_shapes) :])
        else:
            dynamic_shapes[parameter.name] = shapes[len(dynamic_shapes)]
    module = graph.module.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                graph.example,
                dynamo=True,
                input_names=graph.inputs,
                output_names=graph.outputs,
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,
            )
        except Exception as error:  # torch.export's refusals come in many classes; the first line says which
            raise ExportError(f"torch.onnx.export failed: {_first_line(error)}") from error
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    return program.model


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _check(path: Path, graph: Graph, what: str) -> None:
    """Run the saved graph with onnxruntime on its example and other inputs and hold every output to torch's
    within TOLERANCE."""
    try:
        ort_session = exported.session(path, threads=1)
    except Exception as error:
        raise ExportError(f"onnxruntime cannot load the exported {what}: {_first_line(error)}") from error
    for case in [graph.example, *graph.checks]:
        with torch.no_grad():
            expected = graph.module(*case)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feeds = {name: value.numpy() for name, value in zip(graph.inputs, case)}
        try:
            got = ort_session.run(None, feeds)
        except Exception as error:
            shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in zip(graph.inputs, case))
            raise ExportError(f"the exported {what} fails on {shapes}: {_first_line(error)}") from error
        for value, reference in zip(got, expected):
            reference = reference.numpy()
            if value.shape != reference.shape:
                raise ExportError(f"the exported {what} gives shape {value.shape}, torch {reference.shape}")
            scale = max(1.0, float(np.abs(reference).max(initial=0.0)))
            if not np.allclose(value, reference, rtol=0, atol=TOLERANCE * scale, equal_nan=True):
                worst = float(np.abs(value - reference).max())
                raise ExportError(f"the exported {what} differs from torch by {worst:.2e} (at most {TOLERANCE:g})")


def _publish(graph: Graph, meta: dict[str, Any], path: Path, what: str, external: bool = False) -> None:
    """Export, check and write `graph` to `path` with `meta` inside. With `external` the weights go to a file of
    their own beside it (exported.data_path), which onnxruntime memory-maps instead of reading. Both are written
    in a temporary folder and renamed into place, the weights first, so a reader never sees half an export."""
    from onnxscript import ir

    model = _program(graph)
    model.metadata_props[exported.META_KEY] = json.dumps(meta, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    data = exported.data_path(path, meta["code"]) if external else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ir.save(model, tmp / path.name, external_data=data.name if data else None, alignment=4096)
        _check(tmp / path.name, graph, what)
        if data is not None:
            os.replace(tmp / data.name, data)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in path.parent.glob(f"{path.name}.*.data"):  # the weights of exports this one replaced
        if old != data:
            old.unlink(missing_ok=True)


def text_tower_graph(tower: TextTower) -> Graph:
    """The text tower as a graph to export: tokens [N, L] -> [N, embed_dim]."""
    context = int(tower.context_length)
    rng = np.random.default_rng(0)

    def tokens(n: int, length: int) -> tuple[torch.Tensor]:
        ids = rng.integers(1, 49406, size=(n, length))
        ids[:, 0] = 49406
        ids[np.arange(n), rng.integers(1, length, size=n)] = 49407
        ids[-1, -1] = 49407  # the longest text ends last, as the caller cuts the padding
        return (torch.from_numpy(ids.astype(np.int64)),)

    dynamic = {"tokens": {0: ("n", None), 1: ("length", context)}}
    checks = [tokens(1, min(4, context)), tokens(3, context)]
    return Graph(TextGraph(tower).eval(), tokens(2, min(9, context)), checks, ["tokens"], ["text"], dynamic)


def heads_graphs(head: GAISHead) -> dict[str, Graph]:
    """The heads' three query-side graphs to export, by name (exported.HEADS_GRAPHS)."""
    head = head.eval()
    names = state_names(head)
    rng = np.random.default_rng(0)

    def text(n: int) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal((n, head.dim)).astype(np.float32))

    def batch(m: int) -> tuple[torch.Tensor, ...]:
        videos = _videos(head, m, rng)
        return videos.frames, videos.audio, videos.mask

    def state(m: int) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            prepared = head.prepare(VideoBatch(*batch(m)))
        return tuple(getattr(prepared, name) for name in names)

    videos = {0: ("m", None)}
    state_inputs = [f"state_{name}" for name in names]
    dynamic = {"clip_text": {0: ("n", None)}, **{name: videos for name in ("frames", "audio", "mask", *state_inputs)}}
    modules: dict[str, tuple[nn.Module, Callable[[int, int], tuple[torch.Tensor, ...]], list[str], list[str]]] = {
        "query": (QueryGraph(head), lambda n, m: (text(n),), ["clip_text"], ["query"]),
        "prepare": (PrepareGraph(head, names), lambda n, m: batch(m), ["frames", "audio", "mask"], state_inputs),
        "score": (
            ScoreGraph(head, names),
            lambda n, m: (text(n), *state(m)),
            ["clip_text", *state_inputs],
            ["full", "gates", "attention"],
        ),
    }
    return {
        graph: Graph(module, inputs(2, 3), [inputs(1, 1), inputs(1, 7), inputs(3, 2)], ins, outs, dynamic)
        for graph, (module, inputs, ins, outs) in modules.items()
    }


def write_failure(models_dir: Path, kind: str, sha256: str, reason: str) -> None:
    """Keep why this checkpoint's `kind` graphs could not be exported, for the note of the queries that follow."""
    path = exported.failure_path(models_dir, kind, sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": sha256, "code": exported.code_version(kind), "reason": reason}))
    os.replace(tmp, path)


def export_text_tower(tower: TextTower, models_dir: Path, clip_sha256: str) -> Path:
    """Write the text tower's export; ExportError, with the reason also kept, when it cannot be made."""
    path = exported.text_path(models_dir, clip_sha256)
    meta = {
        **exported.expected_meta("text", clip_sha256),
        "context_length": int(tower.context_length),
        "embed_dim": int(tower.embed_dim),
        "torch": torch.__version__,
    }
    try:
        _publish(text_tower_graph(tower), meta, path, "text tower", external=True)
    except ExportError as error:
        write_failure(models_dir, "text", clip_sha256, str(error))
        raise
    exported.failure_path(models_dir, "text", clip_sha256).unlink(missing_ok=True)
    return path


def export_heads(head: GAISHead, models_dir: Path, checkpoint_sha256: str, only: str | None = None) -> list[Path]:
    """Write the heads' three graphs (`only` one of them); ExportError, with the reason also kept, when they
    cannot be made."""
    meta = {**exported.expected_meta("heads", checkpoint_sha256), "state": state_names(head)}
    paths = []
    try:
        for name, graph in heads_graphs(head).items():
            if only is None or name == only:
                path = exported.heads_path(models_dir, checkpoint_sha256, name)
                _publish(graph, {**meta, "graph": name, "torch": torch.__version__}, path, f"{name} graph")
                paths.append(path)
    except ExportError as error:
        write_failure(models_dir, "heads", checkpoint_sha256, str(error))
        raise
    exported.failure_path(models_dir, "heads", checkpoint_sha256).unlink(missing_ok=True)
    return paths


# --- what build-index calls ----------------------------------------------------------------------------
def ensure_exports(work: Workdir, head: GAISHead | None = None, checkpoint_sha256: str | None = None) -> list[str]:
    """Export this workdir's text tower and, given, these heads (checkpoint `checkpoint_sha256`), where no current
    export is there; one line for each export made or not made and why (nothing when all were current)."""
    notes = []
    clip = (work.identity() or {})["clip"]
    text_file = exported.text_path(work.models_dir, clip["sha256"])
    if exported.why_unusable(text_file, "text", clip["sha256"], "CLIP text tower") is not None:
        file = Path(clip["file"])
        if not file.is_file() or work.sha256(file) != clip["sha256"]:
            notes.append(f"text tower not exported: {file} is not the checkpoint that made the features")
        else:
            loaded = load_text_tower(clip["model"], clip["pretrained"], file, clip.get("quick_gelu"))
            try:
                if loaded is None:
                    reason = f"{clip['model']} is not an architecture clip_text.TextTower covers"
                    write_failure(work.models_dir, "text", clip["sha256"], reason)
                    raise ExportError(reason)
                export_text_tower(loaded[0], work.models_dir, clip["sha256"])
                notes.append(f"exported the text tower to {text_file}")
            except ExportError as error:
                notes.append(f"text tower not exported ({error}): queries will use torch")
    if head is not None and checkpoint_sha256 is not None:
        first = exported.heads_path(work.models_dir, checkpoint_sha256, exported.HEADS_GRAPHS[0])
        stale = [
            exported.why_unusable(
                exported.heads_path(work.models_dir, checkpoint_sha256, graph), "heads", checkpoint_sha256, "heads"
            )
            for graph in exported.HEADS_GRAPHS
        ]
        if any(why is not None for why in stale):
            cpu_head = copy.deepcopy(head).cpu() if any(p.device.type != "cpu" for p in head.parameters()) else head
            try:
                export_heads(cpu_head, work.models_dir, checkpoint_sha256)
                notes.append(f"exported the heads to {first.parent}/{first.name.rsplit('-', 1)[0]}-*.onnx")
            except ExportError as error:
                notes.append(f"heads not exported ({error}): queries will use torch")
    return notes
