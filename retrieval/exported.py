"""The ONNX graphs a query runs instead of torch: where they live, how a stale one is told, and running them.

Importing torch costs more on a small machine than a whole one-query process should, so `query` (and `serve`)
run two exports through onnxruntime instead, both written by `build-index` (retrieval/onnx_export.py, from the
torch modules themselves: torch stays the only implementation of the model):

    <workdir>/models/onnx/text-<sha256[:16]>.onnx             CLIP's text tower: tokens -> text embedding
    <workdir>/models/onnx/heads-<sha256[:16]>-query.onnx      the heads' stage-1 query: CLIP text -> unit query
    <workdir>/models/onnx/heads-<sha256[:16]>-prepare.onnx    the videos' query-independent state (GAISHead.prepare)
    <workdir>/models/onnx/heads-<sha256[:16]>-score.onnx      text x prepared videos -> full score, gates, attention

named by the sha256 of the checkpoint they were exported from (the CLIP checkpoint, the heads' checkpoint).
Each file carries, in its ONNX metadata, that whole sha256, the format and a hash of the source files that
define the graph (`code_version`). An export is used only when all three match what this query needs: another
checkpoint's export, or one made by another version of the heads' or the tower's code, is stale and never run;
the query then answers with torch and says why (`NotExported`), and the next `build-index` exports again.
Metadata is read straight from the file's top-level protobuf fields (`read_meta`), so telling a stale export
costs a few bytes of reading, not a load. A graph that could not be exported leaves a `.failed.json` with the
reason beside where it would be, so the note says what went wrong at build-index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .bpe_tokenizer import clip_tokenizer

if TYPE_CHECKING:
    import onnxruntime

FORMAT = 1
META_KEY = "gais_pipe"
FOLDER = "onnx"  # under the workdir's models/
# The source files each kind of graph is a trace of: an export made by other versions of them is stale.
SOURCES = {
    "text": ("clip_text.py", "onnx_export.py"),
    "heads": ("heads.py", "standardise.py", "onnx_export.py"),
}
HEADS_GRAPHS = ("query", "prepare", "score")


class NotExported(Exception):
    """No usable ONNX export for this query; the message says why (missing, stale, could not be exported)."""


@cache
def code_version(kind: str) -> str:
    """A hash of the source files whose modules the `kind` graphs are exported from ("text" or "heads")."""
    digest = hashlib.sha256()
    for name in SOURCES[kind]:
        digest.update(name.encode() + b"\0" + Path(__file__).with_name(name).read_bytes())
    return digest.hexdigest()[:16]


def onnx_dir(models_dir: Path) -> Path:
    return Path(models_dir) / FOLDER


def text_path(models_dir: Path, clip_sha256: str) -> Path:
    return onnx_dir(models_dir) / f"text-{clip_sha256[:16]}.onnx"


def heads_path(models_dir: Path, checkpoint_sha256: str, graph: str) -> Path:
    return onnx_dir(models_dir) / f"heads-{checkpoint_sha256[:16]}-{graph}.onnx"


def data_path(path: Path, code: str) -> Path:
    """Where the weights of the export at `path` lie, outside its graph (the text tower's: memory-mapped); named
    by the code version too, so that an export replacing a stale one never pairs with the stale one's weights."""
    return path.with_name(f"{path.name}.{code}.data")


def failure_path(models_dir: Path, kind: str, sha256: str) -> Path:
    return onnx_dir(models_dir) / f"{kind}-{sha256[:16]}.failed.json"


def expected_meta(kind: str, sha256: str) -> dict[str, Any]:
    """What an export of `kind` ("text" or "heads") from the checkpoint `sha256` says about itself."""
    return {"format": FORMAT, "kind": kind, "sha256": sha256, "code": code_version(kind)}


# --- metadata, read without loading the graph ---------------------------------------------------------
def _varint(handle) -> int | None:
    shift = value = 0
    while True:
        byte = handle.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7


def _entry(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto: field 1 the key, field 2 the value."""
    import io

    handle, found = io.BytesIO(data), {1: "", 2: ""}
    while (tag := _varint(handle)) is not None:
        length = _varint(handle) or 0
        value = handle.read(length)
        if tag & 7 == 2 and tag >> 3 in found:
            found[tag >> 3] = value.decode("utf-8", "replace")
    return found[1], found[2]


def read_meta(path: Path) -> dict | None:
    """The gais-pipe metadata of an ONNX file (ModelProto.metadata_props, field 14, read by skipping the other
    top-level fields, the graph included); None when the file is missing, not ONNX or has none."""
    try:
        with open(path, "rb") as handle:
            while (tag := _varint(handle)) is not None:
                field, wire = tag >> 3, tag & 7
                if wire == 0:
                    if _varint(handle) is None:
                        return None
                elif wire == 2:
                    length = _varint(handle)
                    if length is None:
                        return None
                    if field != 14:
                        handle.seek(length, os.SEEK_CUR)
                        continue
                    key, value = _entry(handle.read(length))
                    if key == META_KEY:
                        meta = json.loads(value)
                        return meta if isinstance(meta, dict) else None
                elif wire in (1, 5):
                    handle.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                else:
                    return None
    except (OSError, ValueError):
        return None
    return None


def why_unusable(path: Path, kind: str, sha256: str, what: str) -> str | None:
    """None when `path` is a current export of `kind` from checkpoint `sha256`, else why not, in one line."""
    meta = read_meta(path)
    if meta is None:
        failed = _failure(path.parent.parent, kind, sha256)
        if failed is not None:
            return f"the {what} could not be exported to ONNX at build-index ({failed})"
        return f"no ONNX export of the {what} ({path.name}); `gais-pipe build-index` writes it"
    expected = expected_meta(kind, sha256)
    if meta.get("format") != FORMAT or meta.get("kind") != kind:
        return f"{path.name}: an ONNX export of another format; `gais-pipe build-index` writes it again"
    if meta.get("sha256") != sha256:
        return f"{path.name}: exported from another checkpoint than the {what}'s; `gais-pipe build-index` replaces it"
    if meta.get("code") != expected["code"]:
        sources = ", ".join(SOURCES[kind])
        return f"{path.name}: exported by another version of {sources}; `gais-pipe build-index` exports it again"
    return None


def _failure(models_dir: Path, kind: str, sha256: str) -> str | None:
    """The reason recorded when this checkpoint's `kind` graphs could not be exported by this code, if any."""
    try:
        record = json.loads(failure_path(models_dir, kind, sha256).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("sha256") != sha256 or record.get("code") != code_version(kind):
        return None
    return str(record.get("reason"))


# --- running -------------------------------------------------------------------------------------------
def session(path: Path, threads: int, prepack: bool = True) -> onnxruntime.InferenceSession:
    """An onnxruntime session on the CPU, with `threads` threads for an operator (0: onnxruntime's default).

    `prepack` False leaves the weights where they are, memory-mapped from their file, instead of repacking them
    for its matrix kernels: a ViT-B/32 text tower then loads in 0.02 s instead of 0.1-0.2 s and encodes a
    query in 15 ms instead of 6 (BENCHMARKS.md): the better trade for a process that answers a few queries."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(int(threads), 0)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no notes on stderr about initializers folded away
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxTextEncoder:
    """CLIP's text tower through onnxruntime: `encode(texts) -> [N, embed_dim]` float32, not normalised, as
    clip_text.TextTower returns it (and open_clip's encode_text)."""

    def __init__(self, models_dir: Path, clip_sha256: str, threads: int = 1, prepack: bool = True):
        path = text_path(models_dir, clip_sha256)
        why = why_unusable(path, "text", clip_sha256, "CLIP text tower")
        if why is not None:
            raise NotExported(why)
        meta = read_meta(path) or {}
        self.session = session(path, threads, prepack)
        self.tokenizer = clip_tokenizer(int(meta["context_length"]))
        self.embed_dim = int(meta["embed_dim"])

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.embed_dim), np.float32)
        tokens = self.tokenizer(texts)
        # Under the causal mask the end-of-text feature sees only the tokens before it: the padding after the
        # longest text is cut off here, as TextTower.forward cuts it before encode_cut (the exported graph).
        length = int(tokens.argmax(axis=1).max()) + 1
        return self.session.run(None, {"tokens": np.ascontiguousarray(tokens[:, :length])})[0]


class OnnxHeads:
    """The heads' eval-mode scoring of queries through onnxruntime: three graphs of GAISHead (see onnx_export)."""

    def __init__(self, models_dir: Path, checkpoint_sha256: str, threads: int = 1):
        paths = {graph: heads_path(models_dir, checkpoint_sha256, graph) for graph in HEADS_GRAPHS}
        for path in paths.values():
            why = why_unusable(path, "heads", checkpoint_sha256, "heads' checkpoint")
            if why is not None:
                raise NotExported(why)
        self.state_names: list[str] = list((read_meta(paths["prepare"]) or {})["state"])
        self.sessions = {graph: session(path, threads) for graph, path in paths.items()}

    def query(self, clip_text: np.ndarray) -> np.ndarray:
        """[N, D] CLIP text -> [N, D] the unit stage-1 query the index is searched with."""
        return self.sessions["query"].run(None, {"clip_text": np.asarray(clip_text, np.float32)})[0]

    def prepare(self, frames: np.ndarray, audio: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        """GAISHead.prepare of [M, T, D] frames, [M, T, Da] audio and the [M, T] mask: the state's arrays, in
        `state_names` order."""
        feeds = {
            "frames": np.ascontiguousarray(frames, dtype=np.float32),
            "audio": np.ascontiguousarray(audio, dtype=np.float32),
            "mask": np.ascontiguousarray(mask, dtype=bool),
        }
        return list(self.sessions["prepare"].run(None, feeds))

    def score(self, clip_text: np.ndarray, state: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(full score [N, M], gates [N, M, T], attention [N, M, T]) of N CLIP texts against prepared videos."""
        feeds = {"clip_text": np.asarray(clip_text, np.float32)}
        feeds |= {f"state_{name}": np.ascontiguousarray(value) for name, value in zip(self.state_names, state)}
        full, gates, attention = self.sessions["score"].run(None, feeds)
        return full, gates, attention
