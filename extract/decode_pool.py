"""The distributor of decoding: videos decoded in worker processes, each handed back as soon as it is done.

Built on pebble's ProcessPool, which knows which video each worker is on: a file that crashes its decoder
(a segfault in FFmpeg) costs that worker and that video only, the pool starts a new worker, and the video
is retried once in a fresh process before it is reported. A video whose decoding hangs past
`runtime.decode_timeout` is stopped the same way. Results come back in the order they finish, so one slow
file never holds up the others, and at most `workers x queued` videos are in flight, which bounds memory.

Workers start from a forkserver that has imported the decoder's modules once: never forked from a process
that holds a CUDA context or threads, and each worker starts in milliseconds instead of importing torch
again. Each worker decodes on one thread of its own (`DecodeSpec.threads` for FFmpeg).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
import time
from collections import deque
from collections.abc import Collection, Iterator
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import pebble

from .discover import Problem, VideoRef
from .reader import DecodedVideo, DecodeSpec, decode_video

_spec: DecodeSpec | None = None  # set once in each worker by _start_worker


def _start_worker(spec: DecodeSpec) -> None:
    global _spec
    _spec = spec
    import torch

    torch.set_num_threads(1)  # the audio frontend's tensor ops: one core per worker, as FFmpeg gets


def _decode(ref: VideoRef) -> DecodedVideo | Problem:
    assert _spec is not None, "decode worker started without its spec"
    return decode_video(ref, _spec)


def worker_context(spec: DecodeSpec, start_method: str | None = None):
    """A forkserver context whose server has imported the reader and the audio frontend's modules (spawn
    where there is no forkserver)."""
    method = start_method or ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        frontend = spec.audio_frontend
        modules = {
            _decode.__module__,
            type(frontend).__module__,
            *(type(v).__module__ for v in vars(frontend).values()),
        }
        context.set_forkserver_preload(sorted(m for m in modules if m in sys.modules and m != "builtins"))
    return context


@dataclass
class DecodeCounts:
    """What the distributor did: the main process's waits, the transfer of results, the retries."""

    wait_seconds: float = 0.0  # the main process blocked, waiting for a decoded video
    transfer_seconds: float = 0.0  # from a worker's end of decoding to the result being in this process
    transfer_bytes: int = 0
    received: int = 0
    redecoded_alone: int = 0  # videos decoded again in a fresh process after their decoder crashed


class DecodePool:
    """Decoded videos (or Problems) for `refs`, in the order they finish. `workers = 0` decodes inline, in
    this process, in input order (tests, and machines where processes are dear)."""

    def __init__(
        self,
        refs: list[VideoRef],
        spec: DecodeSpec,
        workers: int,
        queued_per_worker: int = 2,
        timeout: float = 0.0,
        start_method: str | None = None,
    ):
        self.refs, self.spec, self.workers = deque(refs), spec, workers
        self.by_id = {ref.id: ref for ref in refs}
        self.limit = max(1, workers * max(1, queued_per_worker))
        self.timeout = timeout or None
        self.counts = DecodeCounts()
        self.pending: dict[Future, tuple[VideoRef, bool]] = {}  # future -> (video, is a retry)
        self.arrived: dict[Future, float] = {}
        self.ready: deque = deque()
        self.pool = None
        if workers > 0:
            self.pool = pebble.ProcessPool(
                max_workers=workers,
                initializer=_start_worker,
                initargs=(spec,),
                context=worker_context(spec, start_method),
            )
            self._fill()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close(cancel=exc[0] is not None)

    def close(self, cancel: bool = True) -> None:
        """Stop the workers (at once when `cancel`, after their current video otherwise)."""
        if self.pool is not None:
            self.pool.stop() if cancel or self.pending else self.pool.close()
            self.pool.join()
            self.pool = None

    def _submit(self, ref: VideoRef, retry: bool = False) -> None:
        assert self.pool is not None  # only called while the workers run
        future = self.pool.schedule(_decode, args=(ref,), timeout=self.timeout)
        future.add_done_callback(self._stamp)
        self.pending[future] = (ref, retry)

    def _stamp(self, future: Future) -> None:
        self.arrived[future] = time.time()  # in pebble's receiving thread, just after the result was read

    def _fill(self) -> None:
        while self.refs and len(self.pending) < self.limit:
            self._submit(self.refs.popleft())

    def __iter__(self) -> Iterator[DecodedVideo | Problem]:
        while (item := self.take(wait=True)) is not None:
            yield item

    def take(self, wait: bool = True) -> DecodedVideo | Problem | None:
        """The next decoded video. None when all are done, or (wait=False) when none is ready yet."""
        if self.pool is None:
            return decode_video(self.refs.popleft(), self.spec) if self.refs else None
        while not self.ready:
            if not self.pending:
                return None
            done: Collection[Future] = [f for f in self.pending if f.done()]
            if not done:
                if not wait:
                    return None
                start = time.perf_counter()
                done, _ = concurrent.futures.wait(list(self.pending), return_when=FIRST_COMPLETED)
                self.counts.wait_seconds += time.perf_counter() - start
            for future in done:
                self._collect(future)
            self._fill()
        return self.ready.popleft()

    def _collect(self, future: Future) -> None:
        ref, retry = self.pending.pop(future)
        arrived = self.arrived.pop(future, time.time())
        try:
            item = future.result()
        except pebble.ProcessExpired as error:
            if not retry:
                self.counts.redecoded_alone += 1
                self._submit(ref, retry=True)
                return
            item = Problem(ref.id, "decode", f"the decoder crashed, twice ({_exit_reason(error.exitcode)})")
        except FutureTimeout:
            item = Problem(ref.id, "decode", f"decoding took over {self.timeout:g} s (runtime.decode_timeout)")
        except Exception as error:  # the result could not come back (pickling, a broken pool)
            item = Problem(ref.id, "decode", f"decode worker failed: {error.__class__.__name__}: {error}")
        if isinstance(item, DecodedVideo):
            self.counts.received += 1
            self.counts.transfer_seconds += max(0.0, arrived - item.finished_at)
            self.counts.transfer_bytes += item.payload_bytes()
        self.ready.append(item)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
