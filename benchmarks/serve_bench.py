"""Benchmark of the search service (`gais-pipe serve`) and of a one-query `gais-pipe query` process.

    .venv/bin/python benchmarks/serve_bench.py --work /tmp/sb-tiny --json benchmarks/results/serve_tiny.json
    .venv/bin/python benchmarks/serve_bench.py --work /tmp/sb-vitb32 --config paper \\
        --set features.clip.pretrained=random --set features.audio.encoder=logmel \\
        --json benchmarks/results/serve_vitb32.json

Without an index in --work it first makes one: a `make-synthetic` collection (--videos), extracted
with the config, heads trained for --epochs, `build-index`. Then it starts `gais-pipe serve` on a
free 127.0.0.1 port and, after a warm-up, sends --requests searches (k 10, rerank_k 100, texts in
turn from a fixed list) from 1, 4 and 16 concurrent clients, each a thread with one kept-alive
http.client connection. Per level: latency p50 / p99 / mean as the client sees it, throughput,
errors (any non-200 answer or exception). Every request goes to 127.0.0.1; every loop is bounded
by --requests and by --max-seconds per level (--no-serve skips the service). --serve-engines names the
service's engines to measure, one after the other (auto, onnx, torch; default auto). Then --startup runs
of a one-query `gais-pipe query` process (wall, user and system seconds, median), interleaved: the default
engine (onnx where it can answer), `--engine torch`, and `python -c "import torch, numpy, faiss"` for
reference. --before DIR measures another tree of the code beside this one, in the same runs: DIR is put
first on PYTHONPATH (a folder holding that tree's gais_pipe package, e.g. the commit before a change,
unpacked with its folders laid out as the package), its service measured before this tree's and its
one-query process interleaved with the others. The load average is recorded before and after: other
work on the machine shows up in every figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from gais_pipe.index.layout import read_record
from gais_pipe.workdir import Workdir

TEXTS = [
    "a red circle moving from left to right while high beeps plays",
    "a blue square standing still",
    "a green triangle bouncing with a low hum",
    "a yellow shape and a rising whistle",
    "something moving while noise plays",
    "a purple circle, you can hear a spoken word",
    "a shape moving up and down",
    "high beeps",
]


def gais(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gais_pipe", *args], check=True, **kwargs)


def prepare(work: Path, config: str, overrides: list[str], videos: int, epochs: int) -> None:
    """An indexed, trained workdir of a synthetic collection, unless --work already has an index."""
    if (work / "index" / "CURRENT").exists():
        return
    sets = [arg for item in overrides for arg in ("--set", item)]
    collection = work.parent / f"{work.name}-synthetic"
    if not (collection / "captions.jsonl").exists():
        gais("make-synthetic", str(collection), "--videos", str(videos), "--seed", "0")
    gais("extract", str(collection / "videos"), "-w", str(work), "--config", config, "--quiet", *sets)
    train_sets = [f"train.epochs={epochs}", "train.batch_size=32", "train.lr=1e-3"]
    train_args = [arg for item in train_sets for arg in ("--set", item)]
    gais("train", "-w", str(work), "--captions", str(collection / "captions.jsonl"), "--run-name", "bench",
         "--quiet", "--config", config, *train_args)  # fmt: skip
    gais("build-index", "-w", str(work), "--config", config)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(connection: http.client.HTTPConnection, text: str) -> int:
    body = json.dumps({"text": text, "k": 10, "rerank_k": 100})
    connection.request("POST", "/api/search", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def before_env(tree: Path | None) -> dict[str, str] | None:
    """The environment that runs the code of `tree` (first on PYTHONPATH), None for this tree's."""
    if tree is None:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(":")}


def start_server(
    work: Path, config: str, port: int, engine: str = "auto", env: dict[str, str] | None = None
) -> subprocess.Popen:
    command = [sys.executable, "-m", "gais_pipe", "serve", "-w", str(work), "--config", config, "--port", str(port)]
    server = subprocess.Popen(
        command + (["--engine", engine] if env is None else []),  # the tree before may have no --engine
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"serve exited: {server.stderr.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("serve did not answer within 300 s")


def level(port: int, clients: int, requests: int, max_seconds: float) -> dict:
    """`requests` searches spread over `clients` threads; latency as each client sees it."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for n in range(index, requests, clients):
            if time.monotonic() > stop_at:
                break
            started = time.perf_counter()
            try:
                status = post(connection, TEXTS[n % len(TEXTS)])
            except (OSError, http.client.HTTPException) as error:
                status, connection = repr(error), http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = 1000 * (time.perf_counter() - started)
            with lock:
                (latencies.append(elapsed) if status == 200 else errors.append(str(status)))
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_ms": round(statistics.median(ordered), 2) if ordered else None,
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2) if ordered else None,
        "mean_ms": round(statistics.fmean(ordered), 2) if ordered else None,
        "throughput_per_s": round(len(latencies) / wall, 1),
    }


def startup(work: Path, config: str, runs: int, before: Path | None = None) -> dict:
    """One-query `gais-pipe query` processes, as /usr/bin/time would see them (wall, user, system seconds),
    with each engine (and the tree `before`), interleaved run by run so that the machine's load falls on all alike."""
    query = [str(Path(sys.executable).with_name("gais-pipe")), "query", TEXTS[0], "-w", str(work), "--config", config]
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "default": (query, None),
        "torch": ([*query, "--engine", "torch"], None),
        "import torch, numpy, faiss": ([sys.executable, "-c", "import torch, numpy, faiss"], None),
    }
    if before is not None:
        commands["before: default"] = (query, before_env(before))
    used = json.loads(subprocess.run([*query, "--json"], check=True, capture_output=True, text=True).stdout)
    measured: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (command, env) in commands.items():
            before_times = os.times()
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
            after = os.times()
            measured[name].append(
                (
                    time.perf_counter() - started,
                    after.children_user - before_times.children_user,
                    after.children_system - before_times.children_system,
                )
            )
    out = {"runs": runs, "default_engine": used["engine"], "default_engine_note": used.get("engine_note")}
    for name, values in measured.items():
        wall, user, system = (statistics.median(column) for column in zip(*values))
        out[name] = {
            "wall_s": round(wall, 2),
            "user_s": round(user, 2),
            "system_s": round(system, 2),
            "wall_range_s": [round(min(v[0] for v in values), 2), round(max(v[0] for v in values), 2)],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="workdir (made and indexed if it has no index)")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (extract)")
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=400, help="searches per concurrency level")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="bound on each level's duration")
    parser.add_argument("--startup", type=int, default=5, help="one-query processes to time per engine (0: none)")
    parser.add_argument("--no-serve", action="store_true", help="skip the service; time only one-query processes")
    parser.add_argument("--serve-engines", default="auto", help="the service's engines to measure, comma-separated")
    parser.add_argument("--before", type=Path, help="measure the code of this tree too (put first on PYTHONPATH)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    prepare(args.work, args.config, args.overrides, args.videos, args.epochs)
    record = read_record(Workdir(args.work))
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "videos": record["count"],
        "mode": record["identity"]["mode"],
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "levels": [],
    }
    if not args.no_serve:
        serve_levels(args, result)
    if args.startup:
        result["query_process"] = startup(args.work, args.config, args.startup, args.before)
        print(json.dumps(result["query_process"]), flush=True)
    result["load_after"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def serve_levels(args: argparse.Namespace, result: dict) -> None:
    """Each level of clients against the service of each engine asked for (and of the tree before, first)."""
    runs = [("before", "auto", before_env(args.before))] if args.before is not None else []
    runs += [(engine, engine, None) for engine in args.serve_engines.split(",")]
    for name, engine, env in runs:
        port = free_port()
        server = start_server(args.work, args.config, port, engine, env)
        try:
            level(port, 1, args.warmup, args.max_seconds)
            for clients in (int(c) for c in args.clients.split(",")):
                figures = {"service": name, **level(port, clients, args.requests, args.max_seconds)}
                result["levels"].append(figures)
                print(json.dumps(figures), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
