"""`gais-pipe info`: a person's view of a workdir."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from gais_pipe.workdir import Workdir, WorkdirError


def describe(root: Path, console: Console) -> dict:
    work = Workdir(root)
    record = work.identity()
    if record is None:
        raise WorkdirError(f"{root}: not a gais-pipe workdir (no workdir.json)")
    shards = work.shards()
    rows = work.rows()
    failures = work.failures()
    stored = sum(p.stat().st_size for p in shards)
    facts = {
        "workdir": str(root),
        "config": record.get("config_name"),
        "feature hash": record["feature_hash"],
        "frames per video": record["identity"]["features"]["frames"],
        "image encoder": f"{record['clip']['model']} ({record['clip']['pretrained']}), sha256 "
        f"{record['clip']['sha256'][:12]}, {record['identity']['embed_dim']}-d",
        "audio encoder": f"{record['audio']['encoder']}"
        + (f", sha256 {record['audio']['sha256'][:12]}" if record["audio"].get("sha256") else " (weight-free)")
        + f", {record['identity']['audio_dim']}-d",
        "videos": len(rows),
        "shards": len(shards),
        "stored": f"{stored / 1e6:.2f} MB ({stored / max(len(rows), 1) / 1024:.1f} KiB per video)",
        "failures": len(failures),
    }
    table = Table(title="gais-pipe workdir", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in facts.items():
        table.add_row(key, str(value))
    console.print(table)
    for failure in failures[:10]:
        console.print(
            f"[red]failed[/red] {failure['video']}: {failure['stage']}: {failure['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    if len(failures) > 10:
        console.print(f"... and {len(failures) - 10} more in {work.failures_path}")
    return facts
