"""The `gais-pipe` command line: one sub-command per stage."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from gais_pipe.config import ConfigError, load_config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Text-to-video retrieval with gated audio-visual fusion (GAIS).",
)
console = Console(stderr=True)

WORKDIR = typer.Option(Path("gais-work"), "--workdir", "-w", help="Where features, models and indexes live.")
CONFIG = typer.Option(
    None,
    "--config",
    "-c",
    help="Bundled config name (tiny, paper) or a TOML file. Default: the workdir's, else tiny.",
)
OVERRIDES = typer.Option([], "--set", "-s", help="Override a config key, e.g. --set features.frames=8 (repeatable).")


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def error_line(error: Exception) -> str:
    """The error's own message: a KeyError's without the quotes its str() adds (and not cutting a quote
    that ends the message itself)."""
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def workdir_identity(workdir: Path) -> dict | None:
    """The workdir's feature record, or None; a corrupt record ends the command with one line."""
    from gais_pipe.workdir import CorruptFile, Workdir

    try:
        return Workdir(workdir).identity()
    except CorruptFile as error:
        fail(str(error))


def resolve_config(workdir: Path, name: str | None, overrides: list[str]) -> dict:
    """The config named, else the one the workdir was made with, else tiny; then the overrides."""

    if name is None:
        record = workdir_identity(workdir)
        if record is not None:
            config = record["config"]
            from gais_pipe.config import apply_override

            for override in overrides:
                apply_override(config, override)
            return config
        name = "tiny"
    return load_config(name, overrides)


@app.command()
def extract(
    videos: Path = typer.Argument(..., help="A folder of videos (searched recursively) or a text file listing paths."),
    workdir: Path = WORKDIR,
    config: str | None = CONFIG,
    overrides: list[str] = OVERRIDES,
    num_shards: int | None = typer.Option(
        None, help="Split the videos among this many workers (default: from torchrun / SLURM, else 1)."
    ),
    shard_index: int | None = typer.Option(None, help="This worker's index among --num-shards."),
    strict: bool = typer.Option(False, help="Exit non-zero if any video failed."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    as_json: bool = typer.Option(
        False, "--json", help="Also print the summary and the account of where the time went as JSON (stdout)."
    ),
) -> None:
    """Decode videos, sample T frames, and store CLIP frame and audio features in HDF5 shards."""
    from gais_pipe.extract.guard import DeviceFailure
    from gais_pipe.extract.weights import WeightsUnavailable
    from gais_pipe.extract_stage import run_extract
    from gais_pipe.workdir import WorkdirError

    try:
        cfg = resolve_config(workdir, config, overrides)
        summary = run_extract(videos, workdir, cfg, num_shards, shard_index, console=console, show_progress=not quiet)
    except (ConfigError, WorkdirError, WeightsUnavailable, DeviceFailure, FileNotFoundError, ValueError) as error:
        fail(str(error))
    table = Table(title=f"extract: {videos} -> {workdir}")
    for column in ("found", "extracted", "skipped", "failed", "warnings", "videos/s"):
        table.add_column(column, justify="right")
    table.add_row(
        *(str(v) for v in (summary.found, summary.extracted, summary.skipped, summary.failed, summary.warned)),
        f"{summary.videos_per_second:.2f}",
    )
    console.print(table)
    if summary.account is not None and summary.extracted:
        console.print(summary.account.table())
    if as_json:
        import json

        counts = {k: getattr(summary, k) for k in ("found", "extracted", "skipped", "failed", "warned", "seconds")}
        account = summary.account.as_dict() if summary.account is not None else None
        print(json.dumps({**counts, "videos_per_s": summary.videos_per_second, "account": account}))
    if summary.failed:
        console.print(f"{summary.failed} failed; reasons in {workdir / 'failures.jsonl'}")
        if strict:
            raise typer.Exit(1)


def stage_config(workdir: Path, name: str | None, overrides: list[str]) -> dict:
    """Heads, training and evaluation settings: the config named, else the one whose name the workdir
    records (if bundled), else tiny. The features themselves always come from the workdir."""
    from gais_pipe.config import bundled_config_names

    if name is None:
        record = workdir_identity(workdir) or {}
        recorded = record.get("config_name")
        name = recorded if isinstance(recorded, str) and recorded in bundled_config_names() else "tiny"
    return load_config(name, overrides)


def _stage_errors():
    from gais_pipe.extract.weights import WeightsUnavailable
    from gais_pipe.retrieval.captions import CaptionError
    from gais_pipe.workdir import WorkdirError
    from gais_pipe.workdir.files import CorruptFile

    return (
        ConfigError,
        WorkdirError,
        CorruptFile,
        WeightsUnavailable,
        CaptionError,
        FileNotFoundError,
        ValueError,
        KeyError,
    )


@app.command()
def train(
    captions: Path = typer.Option(
        ...,
        "--captions",
        help="Annotation folder (MSR-VTT, DiDeMo, LSMDC, VATEX) or a JSONL/CSV of video, caption[, split].",
    ),
    workdir: Path = WORKDIR,
    dataset: str | None = typer.Option(
        None, help="msrvtt, msrvtt-7k, didemo, lsmdc, vatex or generic (default: detected)."
    ),
    config: str | None = CONFIG,
    overrides: list[str] = OVERRIDES,
    allow_missing: bool = typer.Option(
        False, help="Skip captions whose video was not extracted (default: stop and list them)."
    ),
    run: str | None = typer.Option(
        None,
        "--run-name",
        help="Run name under WORKDIR/runs (default: from the config); an existing run resumes.",
    ),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Train the FGF and SVSP heads on the cached features; keeps the best checkpoint by val R@1+R@5+R@10."""
    from gais_pipe.train_stage import run_train

    try:
        result = run_train(
            workdir,
            captions,
            stage_config(workdir, config, overrides),
            dataset,
            allow_missing,
            run,
            console,
            not quiet,
        )
    except _stage_errors() as error:
        fail(error_line(error))
    if result.best_epoch > 0:  # under torchrun only rank 0 validates and keeps checkpoints
        console.print(
            f"best: epoch {result.best_epoch}, val t2v R@1 {result.best_val_r1:.1f} -> "
            f"{result.run_dir / 'best.safetensors'}",
            highlight=False,
        )


@app.command("eval")
def evaluate(
    workdir: Path = WORKDIR,
    split: str = typer.Option("test", help="train, val or test."),
    checkpoint: Path | None = typer.Option(None, help="A best.safetensors (default: the newest run's)."),
    captions: Path | None = typer.Option(None, help="Annotations (default: those the checkpoint was trained with)."),
    dataset: str | None = typer.Option(None, help="As for train (default: the checkpoint's)."),
    rerank_k: int | None = typer.Option(None, help="Two-stage: re-rank the stage-1 top K by the full score (0: skip)."),
    dsl: bool | None = typer.Option(
        None, "--dsl/--no-dsl", help="Also report dual-softmax numbers, beside the plain ones."
    ),
    allow_missing: bool = typer.Option(False, help="Skip captions whose video was not extracted."),
    config: str | None = CONFIG,
    overrides: list[str] = OVERRIDES,
) -> None:
    """Score every (text, video) pair of a split and report t2v and v2t recall."""
    from gais_pipe.eval_stage import print_results, run_eval

    try:
        results = run_eval(
            workdir,
            stage_config(workdir, config, overrides),
            split,
            checkpoint,
            captions,
            dataset,
            rerank_k,
            dsl,
            allow_missing,
        )
    except _stage_errors() as error:
        fail(error_line(error))
    print_results(results, Console())


@app.command("build-index")
def build_index(
    workdir: Path = WORKDIR,
    checkpoint: Path | None = typer.Option(
        None, help="Trained heads (default: the newest run's best; none yet: zero-shot)."
    ),
    zero_shot: bool = typer.Option(False, help="Index CLIP's mean-pooled frames even when a checkpoint exists."),
    index_type: str | None = typer.Option(
        None,
        "--type",
        help="flat, ivf-sq8, ivf-pq, ivf-flat, ivf-pq4fs, ivf-hnsw-pq4fs or hnsw (default: auto, by size and memory).",
    ),
    memory_mb: int | None = typer.Option(
        None, help="Memory the index may hold (MiB): decides IVF-SQ8 against IVF-PQ above the exact-search size."
    ),
    quiet: bool = typer.Option(False, help="No progress bar."),
    config: str | None = CONFIG,
    overrides: list[str] = OVERRIDES,
) -> None:
    """One embedding per extracted video into a FAISS index, and the re-rank store beside it."""
    from gais_pipe.index_stage import run_build_index

    cfg = stage_config(workdir, config, overrides)
    if index_type:
        cfg["index"]["type"] = index_type
    if memory_mb:
        cfg["index"]["memory_mb"] = memory_mb
    try:
        record = run_build_index(workdir, cfg, checkpoint, zero_shot, Console(stderr=True), not quiet)
    except (*_stage_errors(), RuntimeError) as error:
        fail(error_line(error))
    how = "added" if record["incremental"] else "indexed"
    console.print(
        f"{how} {record['added']} videos ({record['count']} in all) in a {record['kind']} index, "
        f"{record['identity']['mode']} embeddings, {record['seconds']:.1f} s -> {workdir / 'index'}",
        highlight=False,
    )
    console.print(f"index: {record['kind']}: {record['reason']}; {record['index_build']}", highlight=False)
    for note in record.get("onnx", []):  # the graphs `query` and `serve` run: exported, or why not
        console.print(f"onnx: {note}", highlight=False)


@app.command()
def query(
    text: str | None = typer.Argument(None, help="What to look for."),
    workdir: Path = WORKDIR,
    k: int | None = typer.Option(None, "-k", help="Answers to show (default: config query.k)."),
    rerank_k: int | None = typer.Option(
        None, help="Index candidates re-ranked by the full GAIS score (default: config query.rerank_k)."
    ),
    queries: Path | None = typer.Option(None, help="A text file with one query per line, answered in one process."),
    json_output: bool = typer.Option(False, "--json", help="JSON lines for programs instead of a table."),
    checkpoint: Path | None = typer.Option(None, help="Check that the index was built with these heads."),
    engine: str = typer.Option(
        "auto", help="auto: onnx (onnxruntime, no torch import) where it can answer, else torch; or onnx, torch."
    ),
    config: str | None = CONFIG,
    overrides: list[str] = OVERRIDES,
) -> None:
    """Ranked videos for a text query: index search, then re-ranking by the full GAIS score."""
    from gais_pipe.query_stage import read_queries, run_query

    cfg = stage_config(workdir, config, overrides)
    try:
        run_query(workdir, cfg, read_queries(text, queries), k, rerank_k, checkpoint, json_output, engine)
    except (*_stage_errors(), RuntimeError) as error:
        fail(error_line(error))


@app.command()
def explain(
    text: str = typer.Argument(..., help="The query."),
    video: str = typer.Argument(..., help="A video id (as `info` lists it) or path."),
    workdir: Path = WORKDIR,
    out: Path | None = typer.Option(None, help="The PNG to write (default: explain-<video>.png)."),
    config: str | None = CONFIG,
    overrides: list[str] = OVERRIDES,
) -> None:
    """A PNG of the frames along time with the per-frame audio gate and attention for a query."""
    from gais_pipe.explain_stage import run_explain
    from gais_pipe.index.search import Searcher

    try:
        searcher = Searcher(workdir, stage_config(workdir, config, overrides))
        path = run_explain(searcher, text, video, out or Path(f"explain-{Path(video).stem}.png"))
    except (*_stage_errors(), RuntimeError) as error:
        fail(error_line(error))
    console.print(f"wrote {path}", highlight=False)


@app.command()
def serve(
    workdir: Path = WORKDIR,
    host: str | None = typer.Option(
        None, help="Address to bind (default: config serve.host, 127.0.0.1: this machine only)."
    ),
    port: int | None = typer.Option(None, help="Port (default: config serve.port, 8000)."),
    checkpoint: Path | None = typer.Option(None, help="Check that the index was built with these heads."),
    engine: str = typer.Option("auto", help="auto: onnx where it can answer, else torch (as query); or onnx, torch."),
    config: str | None = CONFIG,
    overrides: list[str] = OVERRIDES,
) -> None:
    """A search service: the index loaded once, a JSON API and a results page in the browser."""
    from gais_pipe.serve_stage import run_serve

    cfg = stage_config(workdir, config, overrides)
    try:
        where = (host or cfg["serve"]["host"], port or int(cfg["serve"]["port"]))
        run_serve(workdir, cfg, *where, checkpoint, console, engine)
    except (*_stage_errors(), RuntimeError, OSError) as error:
        fail(error_line(error))


@app.command("make-synthetic")
def make_synthetic_command(
    out: Path = typer.Argument(..., help="Folder for videos/ and captions.jsonl."),
    videos: int = typer.Option(240, help="How many videos."),
    seed: int = typer.Option(0, help="Same seed, same collection."),
    unnamed: str = typer.Option(
        "noise",
        help="The sounds no caption names: noise (random noise), or same-kinds (tones and words of the named "
        "kinds at other pitches, rhythms, sweeps and words, in place of the noise).",
    ),
    caption_style: str = typer.Option(
        "paraphrase",
        help="paraphrase (three captions a video, each telling all it shows and its named sound) or aspects "
        "(five, each telling a part: a heard clip's sound named in three of them, not in two).",
    ),
) -> None:
    """Make a captioned audio-visual test collection: shapes, colours, motions, tones, words and noise."""
    from rich.progress import Progress

    from gais_pipe.synthetic import check_caption_style, check_unnamed, make_synthetic

    if videos < 1:
        fail(f"--videos {videos}: give at least 1")
    try:
        check_unnamed(unnamed)
    except ValueError as error:
        fail(f"--unnamed: {error}")
    try:
        check_caption_style(caption_style)
    except ValueError as error:
        fail(f"--caption-style: {error}")
    with Progress(console=console) as progress:
        task = progress.add_task("make-synthetic", total=videos)
        made = make_synthetic(
            out,
            videos,
            seed,
            lambda done, total: progress.update(task, completed=done),
            unnamed=unnamed,
            caption_style=caption_style,
        )
    console.print(
        f"{made['videos']} videos in {made['folder']}, {made['captions']} captions in {made['captions_file']}",
        highlight=False,
    )


@app.command()
def info(workdir: Path = typer.Argument(Path("gais-work"), help="The workdir to describe.")) -> None:
    """Say what a workdir holds: videos, shards, encoders, config, failures."""
    from gais_pipe.workdir_info import describe

    if not (workdir / "workdir.json").exists():
        fail(f"{workdir}: not a gais-pipe workdir (no workdir.json)")
    try:
        describe(workdir, Console())
    except _stage_errors() as error:
        fail(error_line(error))


# Commands whose process has nothing left to do once they have answered. Python's teardown of torch's
# modules takes 0.5-0.9 s on 2 busy cores, a third of a one-query process; these skip it.
QUICK_EXIT = {"query"}


def main() -> None:
    """The console script and `python -m gais_pipe`: the command, then for `query` an exit without the
    interpreter's teardown (output flushed first; the command has closed every file it wrote)."""
    import os
    import sys

    try:
        app()
    except SystemExit as done:
        if len(sys.argv) < 2 or sys.argv[1] not in QUICK_EXIT:
            raise
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int | None):
            print(done.code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
