"""Which GPU architectures a CUDA library carries code for, read from its fatbinary headers (no CUDA
toolkit needed). How the `[gpu]` extra's faiss wheel was chosen: an H100 needs sm_90 code or PTX.

    python scripts/cuda_archs.py path/to/libfaiss.so      # e.g. unzipped from `pip download --no-deps faiss-gpu`
"""

from __future__ import annotations

import collections
import struct
import sys

MAGIC = struct.pack("<I", 0xBA55ED50)  # a fatbinary's header
KINDS = {1: "ptx", 2: "elf"}


def archs(data: bytes) -> collections.Counter:
    """(kind, sm) -> entries: every fatbinary in `data`, each entry's kind and target architecture."""
    found: collections.Counter = collections.Counter()
    start = data.find(MAGIC)
    while start != -1:
        header_size, fat_size = struct.unpack_from("<HQ", data, start + 6)
        position, end = start + header_size, start + header_size + fat_size
        while position + 32 <= min(end, len(data)):
            kind, _, entry_header, size = struct.unpack_from("<HHIQ", data, position)
            if kind not in KINDS or entry_header < 32:
                break
            found[KINDS[kind], struct.unpack_from("<I", data, position + 28)[0]] += 1
            position += entry_header + size
        start = data.find(MAGIC, max(end, start + 1))
    return found


def main(paths: list[str]) -> int:
    for path in paths:
        with open(path, "rb") as handle:
            found = archs(handle.read())
        print(path + ": " + (", ".join(f"{kind} sm_{sm} x{n}" for (kind, sm), n in sorted(found.items())) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
