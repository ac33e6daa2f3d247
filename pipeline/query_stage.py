"""The query command: read the queries, answer each with one loaded searcher, print the hits.

The searcher runs the ONNX engine (CLIP's text tower and the heads exported by build-index, through
onnxruntime) wherever it can answer, so that a one-query process never imports torch (2 s of a small
machine's time); else torch, and the answer says why: `--json` in "engine_note", the table in its caption.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from gais_pipe.index.hits import Hit, hits_as_dicts
from gais_pipe.index.search import ENGINES, open_searcher

__all__ = ["ENGINES", "hits_table", "read_queries", "run_query"]


def read_queries(text: str | None, queries_file: Path | None) -> list[str]:
    """The query on the command line, then one per non-empty line of the queries file."""
    texts = [text] if text is not None else []
    if queries_file is not None:
        if not queries_file.is_file():
            raise FileNotFoundError(f"{queries_file}: no such queries file")
        lines = queries_file.read_text(encoding="utf-8").splitlines()
        texts += [line.strip() for line in lines if line.strip()]
    if not texts or any(not t.strip() for t in texts):
        raise ValueError("empty query: give TEXT or --queries FILE")
    return texts


def run_query(
    workdir: Path,
    config: dict,
    texts: list[str],
    k: int | None = None,
    rerank_k: int | None = None,
    checkpoint: Path | None = None,
    json_output: bool = False,
    engine: str = "auto",
) -> None:
    searcher, why_torch = open_searcher(workdir, config, checkpoint, engine, len(texts))
    if searcher.engine == "torch":
        from gais_pipe.index.torch_scorer import limit_threads

        limit_threads(config)
    k = k or int(config["query"]["k"])
    rerank_k = rerank_k if rerank_k is not None else int(config["query"]["rerank_k"])
    for text, hits in zip(texts, _answers(searcher, texts, k, rerank_k)):
        if json_output:
            answer = {"query": text, "results": hits_as_dicts(hits), "engine": searcher.engine}
            print(json.dumps(answer | ({"engine_note": why_torch} if why_torch else {})))
        else:
            Console().print(hits_table(text, hits, searcher.record["identity"]["mode"], why_torch))


BATCH = 256  # queries encoded and searched in one call (`Searcher.search_many`)


def _answers(searcher, texts: list[str], k: int, rerank_k: int):
    """Each text's hits, in order, searched BATCH at a time: one text-tower and one index call a batch."""
    for start in range(0, len(texts), BATCH):
        yield from searcher.search_many(texts[start : start + BATCH], k, rerank_k)


def hits_table(text: str, hits: list[Hit], mode: str, why_torch: str | None = None) -> Table:
    """The hits as a table; when torch answered instead of the ONNX engine, the caption says why."""
    table = Table(title=f'"{text}"  ({"re-ranked by the GAIS heads" if mode == "stage1" else "zero-shot CLIP"})')
    if why_torch:
        table.caption = f"answered by torch: {why_torch}"
    for column in ("rank", "score", "video", "best moment", "audio gate"):
        table.add_column(column, justify="left" if column == "video" else "right", overflow="fold")
    for hit in hits:
        gate = "-" if hit.audio_gate is None else f"{hit.audio_gate:.2f}"
        table.add_row(str(hit.rank), f"{hit.score:.3f}", hit.path or hit.video, f"{hit.moment:.1f}s", gate)
    return table
