"""The eval stage: a checkpoint on a split, full text-conditioned scoring, metrics as table and JSON."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from gais_pipe.distributed import resolve_device
from gais_pipe.retrieval.checkpoints import load_head
from gais_pipe.retrieval.data import caption_splits
from gais_pipe.retrieval.evaluate import evaluate
from gais_pipe.retrieval.text_features import TextEncoder
from gais_pipe.workdir import Workdir, WorkdirError, write_json_atomically


def run_eval(
    workdir: Path,
    config: dict,
    split: str = "test",
    checkpoint: Path | None = None,
    captions_path: Path | None = None,
    dataset: str | None = None,
    rerank_k: int | None = None,
    dsl: bool | None = None,
    allow_missing: bool = False,
) -> dict:
    device = resolve_device(config["runtime"]["device"])
    work = Workdir(workdir)
    model, meta, path = load_head(work, checkpoint, device)
    captions_path = captions_path or Path(meta["captions"])
    splits, _ = caption_splits(
        work,
        captions_path,
        dataset or meta.get("dataset"),
        meta["config"]["train"],
        TextEncoder(work, device),
        allow_missing,
    )
    if split not in splits:
        raise WorkdirError(f"{captions_path}: no {split} captions among the extracted videos")
    eval_cfg = config["eval"]
    results = evaluate(
        model,
        splits[split],
        device,
        int(eval_cfg["text_chunk"]),
        int(eval_cfg["rerank_k"] if rerank_k is None else rerank_k),
        bool(eval_cfg["dsl"] if dsl is None else dsl),
    )
    results["checkpoint"] = str(path)
    results["epoch"] = meta.get("epoch")
    out = path.parent / f"eval-{split}.json"
    write_json_atomically(out, results)
    results["json"] = str(out)
    return results


def results_table(results: dict) -> Table:
    table = Table(
        title=f"{results['split']}: {results['texts']} texts, {results['videos']} videos "
        f"({Path(results['checkpoint']).parent.name}, epoch {results['epoch']})"
    )
    for column in ("scoring", "direction", "R@1", "R@5", "R@10", "MdR", "MnR", "seconds"):
        table.add_column(column, justify="left" if column in ("scoring", "direction") else "right")
    for name, value in results.items():
        if isinstance(value, dict) and "t2v" in value:
            for direction in ("t2v", "v2t"):
                row = value[direction]
                seconds = f"{value['seconds']:.2f}" if "seconds" in value and direction == "t2v" else ""
                table.add_row(
                    name if direction == "t2v" else "",
                    direction,
                    *(f"{row[m]:.1f}" for m in ("R@1", "R@5", "R@10", "MdR", "MnR")),
                    seconds,
                )
    return table


def print_results(results: dict, console: Console) -> None:
    console.print(results_table(results))
    console.print(f"written to {results['json']}", highlight=False)
