"""What a built index is: `<workdir>/index/record.json` says which features, which embeddings and
which checkpoint it was built from, so a query can refuse a stale or foreign index."""

from __future__ import annotations

from gais_pipe.workdir import Workdir
from gais_pipe.workdir.files import read_json


def read_record(work: Workdir) -> dict | None:
    return read_json(work.index_dir / "record.json")
