"""Where an extract run's wall time went, stage by stage (clip-retrieval's per-stage timing is the model).

Start-up is counted from the process's own start (the kernel's record of it), so imports are in it; the
steady rate leaves start-up out. Decoding is summed over the workers' own clocks, so it reads as core-seconds.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from rich.table import Table

from .decode_pool import DecodeCounts
from .reader import DECODE_STEPS, DecodedVideo


def process_start_time() -> float | None:
    """time.time() at which this process started (Linux: /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5), counted from the 3rd field on
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return time.time() - uptime + started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class StageAccount:
    run_start: float = field(default_factory=time.time)
    process_start: float | None = field(default_factory=process_start_time)
    encoders_ready: float | None = None
    first_encoded: float | None = None
    end: float | None = None
    workers: int = 0
    decoded: int = 0
    decode_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DECODE_STEPS, 0.0))
    encode_seconds: dict[str, float] = field(default_factory=dict)  # the mapper's: image, audio, pool
    write_seconds: float = 0.0
    decoding: DecodeCounts = field(default_factory=DecodeCounts)
    batches: list[tuple[float, int]] = field(default_factory=list)  # (seconds since the run's start, videos)

    def add_decoded(self, video: DecodedVideo) -> None:
        self.decoded += 1
        for step, seconds in video.seconds.items():
            self.decode_seconds[step] = self.decode_seconds.get(step, 0.0) + seconds

    def add_batch(self, videos: int) -> None:
        now = time.time()
        if self.first_encoded is None:
            self.first_encoded = now
        self.batches.append((round(now - self.run_start, 4), videos))

    @property
    def origin(self) -> float:
        return self.process_start if self.process_start is not None else self.run_start

    def steady(self) -> tuple[int, float]:
        """(videos, seconds) after the first batch: the rate without start-up."""
        if len(self.batches) < 2 or self.end is None:
            return 0, 0.0
        first_end = self.batches[0][0]
        return sum(n for _, n in self.batches[1:]), self.end - self.run_start - first_end

    def as_dict(self) -> dict:
        videos, seconds = self.steady()
        ready = self.encoders_ready or self.run_start
        return {
            "startup_s": (self.first_encoded - self.origin) if self.first_encoded else None,
            "startup_parts_s": {
                "before_run": self.run_start - self.origin,
                "encoders": ready - self.run_start,
                "first_batch": (self.first_encoded - ready) if self.first_encoded else None,
            },
            "decode_s": {k: round(v, 4) for k, v in self.decode_seconds.items()},
            "decode_workers": self.workers,
            "decoded": self.decoded,
            "transfer_s": self.decoding.transfer_seconds,
            "transfer_bytes_per_video": self.decoding.transfer_bytes / max(1, self.decoding.received),
            "wait_for_decoders_s": self.decoding.wait_seconds,
            "encode_s": {k: round(v, 4) for k, v in self.encode_seconds.items()},
            "write_s": self.write_seconds,
            "steady_videos": videos,
            "steady_s": seconds,
            "steady_videos_per_s": videos / seconds if seconds > 0 else None,
            "redecoded_alone": self.decoding.redecoded_alone,
            "wall_s": (self.end or time.time()) - self.origin,
            "batches": self.batches,
        }

    def table(self) -> Table:
        """The account in a few rows, for the end of `extract`."""
        a = self.as_dict()
        table = Table(title="where the time went", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        parts = a["startup_parts_s"]
        if a["startup_s"] is not None:
            table.add_row(
                "start-up",
                f"{a['startup_s']:.1f} s to the first video encoded (process start to run {parts['before_run']:.1f} s, "
                f"encoders {parts['encoders']:.1f} s, first batch {parts['first_batch']:.1f} s)",
            )
        decode_total = sum(a["decode_s"].values())
        per_video = 1000 * decode_total / max(1, a["decoded"])
        steps = ", ".join(f"{k} {v:.1f}" for k, v in a["decode_s"].items())
        table.add_row(
            "decoding",
            f"{decode_total:.1f} core-s ({steps}); {per_video:.0f} ms a video, {a['decode_workers']} worker(s)",
        )
        table.add_row(
            "transfer",
            f"{a['transfer_s']:.1f} s, {a['transfer_bytes_per_video'] / 1e6:.2f} MB a video; "
            f"the encoders waited {a['wait_for_decoders_s']:.1f} s for decoded videos",
        )
        encode = ", ".join(f"{k} {v:.1f} s" for k, v in a["encode_s"].items()) or "none"
        table.add_row("encoding", f"{encode}; writing {a['write_s']:.1f} s (a thread of its own)")
        if a["steady_videos_per_s"] is not None:
            table.add_row(
                "steady state",
                f"{a['steady_videos_per_s']:.2f} videos/s after the first batch "
                f"({a['steady_videos']} videos in {a['steady_s']:.1f} s)",
            )
        table.add_row("re-decoded", f"{a['redecoded_alone']} video(s) alone, after their decoder crashed")
        return table
