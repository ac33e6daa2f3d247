"""Where a built index lives, and how a new one replaces it without ever leaving a broken one.

    index/
      CURRENT            the name of the published generation (replaced atomically)
      g000007/           a generation: record.json, videos.faiss (approximate kinds), store/
      g000008.building/  a build in progress (or abandoned by a killed one)
      build.lock         held by the build that runs

A build writes a whole new generation under a `.building` name, renames it, and only then points
CURRENT at it (a temp file renamed over CURRENT), so a build killed at any moment leaves the
previous index as it was, usable. Unchanged feature segments are hard links, so a generation costs
only what is new. The next build removes abandoned `.building` folders and every generation but the
current one and the one before it (a reader that read CURRENT just before a switch still finds its
folder; a running reader has its files open already and survives even their removal).

`record.json` says which features, which embeddings and which checkpoint a generation was built
from, so a query can refuse a stale or foreign index.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from pathlib import Path

from gais_pipe.workdir import Workdir, WorkdirError
from gais_pipe.workdir.files import read_json, write_json_atomically

_GENERATION = re.compile(r"^g(\d{6,})$")
_LEGACY = ("videos.faiss", "record.json", "store")  # the single-folder layout of earlier versions


def current_generation(work: Workdir) -> Path | None:
    pointer = work.index_dir / "CURRENT"
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not _GENERATION.match(name) or not (work.index_dir / name).is_dir():
        raise WorkdirError(f"{pointer}: names {name!r}, which is not a built index; run `gais-pipe build-index`")
    return work.index_dir / name


def read_record(work: Workdir) -> dict | None:
    folder = current_generation(work)
    return None if folder is None else read_json(folder / "record.json")


def _generations(index_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in index_dir.glob("g*"):
        match = _GENERATION.match(path.name.removesuffix(".building"))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def new_generation(work: Workdir) -> Path:
    """An empty `.building` folder for the next generation (call while holding `build_lock`)."""
    numbers = [n for n, _ in _generations(work.index_dir)]
    folder = work.index_dir / f"g{(max(numbers) + 1 if numbers else 1):06d}.building"
    folder.mkdir(parents=True)
    return folder


def publish(work: Workdir, building: Path, record: dict) -> Path:
    """Make a finished generation the current one: record, rename, then switch the pointer."""
    write_json_atomically(building / "record.json", record)
    final = building.with_name(building.name.removesuffix(".building"))
    os.replace(building, final)
    tmp = work.index_dir / f".CURRENT.{os.getpid()}.tmp"
    tmp.write_text(final.name + "\n", encoding="utf-8")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, work.index_dir / "CURRENT")
    return final


def clean(work: Workdir, keep_previous: bool = True) -> list[str]:
    """Remove abandoned builds, superseded generations (all but the current and, with
    `keep_previous`, the one before it) and an earlier version's single-folder index. Returns what went."""
    current = current_generation(work)
    number = int(current.name[1:]) if current is not None else -1
    older = [g for n, g in _generations(work.index_dir) if not g.name.endswith(".building") and n < number]
    keep = {current} | ({older[-1]} if keep_previous and older else set())
    removed = []
    for _, folder in _generations(work.index_dir):
        if folder not in keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if current is not None:
        for name in _LEGACY:
            path = work.index_dir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
            elif path.exists():
                path.unlink()
                removed.append(name)
    return removed


@contextlib.contextmanager
def build_lock(work: Workdir):
    """One build-index at a time per workdir; a second is refused, not queued."""
    work.index_dir.mkdir(parents=True, exist_ok=True)
    with open(work.index_dir / "build.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirError(f"{work.index_dir}: another build-index run is writing this index") from None
        yield
