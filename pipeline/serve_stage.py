"""The serve command: load the index once, then answer HTTP until stopped (Ctrl-C)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from gais_pipe.serve.engine import Engine

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run_serve(
    workdir: Path, config: dict, host: str, port: int, checkpoint: Path | None = None, console: Console | None = None
) -> None:
    import uvicorn

    from gais_pipe.serve.app import create_app

    console = console or Console(stderr=True)
    threads = int(config["query"]["torch_threads"])
    if threads > 0:  # inference is serial (the engine's lock): its threads are the whole budget
        import torch

        torch.set_num_threads(threads)
    engine = Engine(workdir, config, checkpoint)  # a missing, stale or foreign index stops here, as for query
    summary = engine.index_summary()
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"serving {summary['videos']} videos ({summary['mode']} index built {summary['built_at']}) "
        f"at http://{shown}:{port}/  (Ctrl-C stops)",
        highlight=False,
    )
    if host not in LOOPBACK:
        console.print(
            f"note: bound to {host}: anyone who can reach this machine on port {port} can search and play the "
            "indexed videos",
            highlight=False,
        )
    uvicorn.run(create_app(engine, host), host=host, port=port, log_level="warning", access_log=False)
