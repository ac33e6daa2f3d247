"""What a built index is: `<workdir>/index/record.json` says which features, which embeddings and
which checkpoint it was built from, so a query can refuse a stale or foreign index."""

from __future__ import annotations

import json

from gais_pipe.workdir import Workdir


def read_record(work: Workdir) -> dict | None:
    path = work.index_dir / "record.json"
    return json.loads(path.read_text()) if path.exists() else None
