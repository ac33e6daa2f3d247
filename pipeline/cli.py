"""The `gais-pipe` command line: one sub-command per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from gais_pipe.config import ConfigError, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Text-to-video retrieval with gated audio-visual fusion (GAIS).")
console = Console(stderr=True)

WORKDIR = typer.Option(Path("gais-work"), "--workdir", "-w", help="Where features, models and indexes live.")
CONFIG = typer.Option(None, "--config", "-c", help="Bundled config name (tiny, paper) or a TOML file. Default: the workdir's, else tiny.")
OVERRIDES = typer.Option([], "--set", "-s", help="Override a config key, e.g. --set features.frames=8 (repeatable).")


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def resolve_config(workdir: Path, name: Optional[str], overrides: list[str]) -> dict:
    """The config named, else the one the workdir was made with, else tiny; then the overrides."""
    from gais_pipe.extract.workdir import Workdir

    if name is None:
        record = Workdir(workdir).identity()
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
    config: Optional[str] = CONFIG,
    overrides: list[str] = OVERRIDES,
    num_shards: Optional[int] = typer.Option(None, help="Split the videos among this many workers (default: from torchrun / SLURM, else 1)."),
    shard_index: Optional[int] = typer.Option(None, help="This worker's index among --num-shards."),
    strict: bool = typer.Option(False, help="Exit non-zero if any video failed."),
    quiet: bool = typer.Option(False, help="No progress bar."),
) -> None:
    """Decode videos, sample T frames, and store CLIP frame and audio features in HDF5 shards."""
    from gais_pipe.extract.weights import WeightsUnavailable
    from gais_pipe.extract.workdir import WorkdirError
    from gais_pipe.extract_stage import run_extract

    try:
        cfg = resolve_config(workdir, config, overrides)
        summary = run_extract(videos, workdir, cfg, num_shards, shard_index, console=console, show_progress=not quiet)
    except (ConfigError, WorkdirError, WeightsUnavailable, FileNotFoundError, ValueError) as error:
        fail(str(error))
    table = Table(title=f"extract: {videos} -> {workdir}")
    for column in ("found", "extracted", "skipped", "failed", "warnings", "videos/s"):
        table.add_column(column, justify="right")
    table.add_row(*(str(v) for v in (summary.found, summary.extracted, summary.skipped, summary.failed, summary.warned)), f"{summary.videos_per_second:.2f}")
    console.print(table)
    if summary.failed:
        console.print(f"{summary.failed} failed; reasons in {workdir / 'failures.jsonl'}")
        if strict:
            raise typer.Exit(1)


@app.command()
def info(workdir: Path = typer.Argument(Path("gais-work"), help="The workdir to describe.")) -> None:
    """Say what a workdir holds: videos, shards, encoders, config, failures."""
    from gais_pipe.workdir_info import describe

    if not (workdir / "workdir.json").exists():
        fail(f"{workdir}: not a gais-pipe workdir (no workdir.json)")
    describe(workdir, Console())


def main() -> None:  # pragma: no cover
    app()
