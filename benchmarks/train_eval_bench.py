"""Benchmark of the train and eval stages on synthetic cached features of the real width.

    .venv/bin/python benchmarks/train_eval_bench.py                 # T=12, D=512, Da=512, batch 128, 1000 x 1000
    .venv/bin/python benchmarks/train_eval_bench.py --json out.json

Each figure is measured in a fresh process (so the peak memory it reports is its own):
- train: captions/s of full training steps (loss, backward, AdamW step) at the given batch size,
  with the semantic-variance update, after one warm-up step;
- eval-full: the full text-conditioned score of every (text, video) pair, in chunks of texts;
- eval-stage1: the query-independent stage-1 dot products;
- eval-two-stage: stage-1 top K re-ranked by the full score.
Peak memory is the process's maximum resident set size minus that right after the data was made.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(args):
    from gais_pipe.config import load_config
    from gais_pipe.retrieval.heads import GAISHead, VideoBatch

    config = load_config("paper")
    torch.manual_seed(0)
    model = GAISHead(args.dim, args.audio_dim, args.frames, config["model"])
    g = torch.Generator().manual_seed(0)
    videos = VideoBatch(
        torch.randn(args.videos, args.frames, args.dim, generator=g).half(),
        torch.randn(args.videos, args.frames, args.audio_dim, generator=g).half(),
        torch.rand(args.videos, args.frames, generator=g) > 0.2,
    )
    texts = torch.randn(args.texts, args.dim, generator=g)
    device = torch.device(args.device)
    return config, model.to(device), videos.to(device), texts.to(device)


def measure(args) -> dict:
    config, model, videos, texts = setup(args)
    base = rss_mib()
    from gais_pipe.retrieval.heads import VideoBatch
    from gais_pipe.retrieval.scoring import full_scores, stage1_scores, two_stage_scores

    if args.measure == "train":
        from gais_pipe.train_stage import batch_loss

        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model.train()

        def step(i):
            rows = (torch.arange(i * args.batch, (i + 1) * args.batch) % args.videos).to(videos.frames.device)
            batch = VideoBatch(videos.frames[rows], videos.audio[rows], videos.mask[rows])
            with torch.no_grad():
                model.update_text_variance(
                    model.encode_text(texts[rows % len(texts)]), torch.arange(args.batch, device=rows.device) // 2
                )
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
            with torch.autocast(videos.frames.device.type, dtype=dtype, enabled=dtype is not None):
                loss, _ = batch_loss(model, texts[rows % len(texts)], batch, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step(0)
        synchronize = torch.cuda.synchronize if videos.frames.is_cuda else (lambda: None)
        synchronize()
        started = time.perf_counter()
        for i in range(1, args.steps + 1):
            step(i)
        synchronize()
        seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "steps_per_s": args.steps / seconds,
            "captions_per_s": args.steps * args.batch / seconds,
            "peak_extra_mib": rss_mib() - base,
        }
    started = time.perf_counter()
    if args.measure == "eval-full":
        full_scores(model, texts, videos, args.chunk)
    elif args.measure == "eval-stage1":
        stage1_scores(model, texts, videos)
    elif args.measure == "eval-two-stage":
        two_stage_scores(model, texts, videos, stage1_scores(model, texts, videos), args.k)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_extra_mib": rss_mib() - base}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--audio-dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--measure", choices=["train", "eval-full", "eval-stage1", "eval-two-stage"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast (training)")
    parser.add_argument("--only", nargs="+", help="measure only these (train, eval-full, eval-stage1, eval-two-stage)")
    parser.add_argument("--json", help="write all figures here")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return 0
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json")]
    if "--json" in sys.argv:
        index = sys.argv.index("--json")
        passthrough = sys.argv[1:index] + sys.argv[index + 2 :]
    results = {
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "frames": args.frames,
        "dim": args.dim,
        "audio_dim": args.audio_dim,
        "batch": args.batch,
        "texts": args.texts,
        "videos": args.videos,
        "chunk": args.chunk,
        "k": args.k,
    }
    for name in args.only or ("train", "eval-full", "eval-stage1", "eval-two-stage"):
        output = subprocess.run(
            [sys.executable, __file__, *passthrough, "--measure", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
        print(f"{name:15s} {json.dumps(results[name])}", flush=True)
    if "eval-full" in results and "eval-stage1" in results:
        results["full_over_stage1_time"] = results["eval-full"]["seconds"] / results["eval-stage1"]["seconds"]
        print(f"full scoring costs {results['full_over_stage1_time']:.0f}x the stage-1 dot products")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
