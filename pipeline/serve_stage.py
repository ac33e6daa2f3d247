"""The serve command: load the index once, then answer HTTP until stopped (Ctrl-C)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from gais_pipe.serve.engine import Engine

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run_serve(
    workdir: Path,
    config: dict,
    host: str,
    port: int,
    checkpoint: Path | None = None,
    console: Console | None = None,
    engine: str = "auto",
) -> None:
    import uvicorn

    from gais_pipe.serve.app import create_app

    console = console or Console(stderr=True)
    # a missing, stale or foreign index stops here, as for query
    service = Engine(workdir, config, checkpoint, engine)
    summary = service.index_summary()
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"serving {summary['videos']} videos ({summary['mode']} index built {summary['built_at']}, "
        f"{summary['engine']} engine) at http://{shown}:{port}/  (Ctrl-C stops)",
        highlight=False,
    )
    if summary["engine_note"]:
        console.print(f"answered by torch: {summary['engine_note']}", highlight=False)
    if host not in LOOPBACK:
        console.print(
            f"note: bound to {host}: anyone who can reach this machine on port {port} can search and play the "
            "indexed videos",
            highlight=False,
        )
    uvicorn.run(create_app(service, host), host=host, port=port, log_level="warning", access_log=False)
