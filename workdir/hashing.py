"""Weights are identified by the sha256 of one local file, so every stage can check it uses the very
same checkpoint as the stage before it.

Hashing a 600 MB checkpoint costs about a second, on every query process. `sha256_cached` keeps each
file's hash in a small JSON file beside the workdir's ledger, keyed by the file's resolved path, size
and mtime in nanoseconds (what make and rsync trust too): a file rewritten in place changes its mtime
and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .files import write_json_atomically


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(cache: Path) -> dict:
    """The cache's entries; an unreadable cache is only a cache: empty."""
    try:
        value = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def sha256_cached(path: Path, cache: Path) -> str:
    """sha256 of `path`, computed once per (path, size, mtime_ns) and remembered in the JSON file `cache`.

    The cache is rewritten atomically (temp file + rename); a cache that cannot be written (a read-only
    workdir) costs only the hashing."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    entries = _read_cache(cache)
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return entry["sha256"]
    digest = sha256_file(path)
    entries = _read_cache(cache)  # again: another process may have added entries meanwhile
    entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    try:
        write_json_atomically(cache, entries)
    except OSError:
        pass  # a read-only workdir: the hash is still right, only not remembered
    return digest
