"""A real HTTP server for tests: the service's app on uvicorn in a thread, on a free 127.0.0.1 port,
and a small stdlib client for it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import torch
import uvicorn

from gais_pipe.config import load_config
from gais_pipe.index_stage import run_build_index
from gais_pipe.retrieval.checkpoints import save_checkpoint
from gais_pipe.retrieval.heads import GAISHead
from gais_pipe.workdir import Workdir


class Server:
    def __init__(self, app):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body=None, headers: dict | None = None):
        """(status, headers as a lower-case dict, body bytes); a dict body is sent as JSON."""
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body=None, headers: dict | None = None):
        status, _, data = self.request(method, path, body, headers)
        return status, json.loads(data)


def index_with_random_heads(work, seed: int = 0) -> dict:
    """Build the index of an extracted workdir with heads initialised at random (no training): every
    per-frame output (gates, attention) exists and is a deterministic function of the features."""
    config = load_config("tiny")
    record = Workdir(work).identity()
    torch.manual_seed(seed)
    model = GAISHead.for_features(record["identity"], config["model"])
    meta = {
        "config": config,
        "feature_hash": record["feature_hash"],
        "identity": record["identity"],
        "clip_sha256": record["clip"]["sha256"],
        "captions": None,
        "dataset": None,
    }
    save_checkpoint(work / "runs" / "random" / "best.safetensors", model, meta)
    return run_build_index(work, config)
