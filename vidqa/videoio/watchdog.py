"""Run decoding in a thread and give up on it, instead of hanging, when it stops making progress.

``stream_chunks`` drives a producer (a backend's ``frames_at``) in a daemon thread. The producer
calls the :class:`Heartbeat` it is handed whenever it makes progress (a packet read, a frame
handed over); the caller's side waits on a queue holding at most one finished chunk, so at most
three chunks exist at a time (one being filled, one queued, one with the caller) whatever the
video's length. If the caller waits and the producer shows no progress for ``timeout_s`` seconds,
the caller gets ``VideoError("... decoding stalled ...")``. A slow decoder that keeps beating is
not a stall, however long a chunk takes; a caller that takes long over a chunk is not one either.

Python cannot kill a thread stuck inside a C call: a stalled producer is abandoned as a daemon
thread (holding one open file) and the program goes on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from vidqa.errors import ResourceError, VideoError, VidqaError

from vidqa.videoio.avutil import reason

# How often a waiting caller looks at the heartbeat; short enough for sub-second test timeouts.
POLL_S = 0.05


class Heartbeat:
    """Callable that records the time of the producer's latest progress (``time.monotonic``)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self) -> None:
        self.last = time.monotonic()


def stalled_error(label: str, timeout_s: float) -> VideoError:
    return VideoError(f"{label}: decoding stalled (no progress for {timeout_s:g} s); "
                      "the file may be damaged or on a hung disk")


def as_vidqa_error(err: BaseException, label: str) -> VidqaError:
    """The project's error for anything a decoder raised; project errors pass through unchanged."""
    if isinstance(err, VidqaError):
        return err
    if isinstance(err, MemoryError):
        return ResourceError(f"{label}: out of memory while decoding; lower max_pixels or chunk_frames")
    return VideoError(f"{label}: decoding failed ({type(err).__name__}: {reason(err)})")


def call_with_timeout(fn: Callable[[], object], timeout_s: float, label: str):
    """``fn()`` run in a daemon thread; its result, its error as a VidqaError, or a stall error."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller below
            box["error"] = err

    worker = threading.Thread(target=run, name="vidqa-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise stalled_error(label, timeout_s)
    if "error" in box:
        raise as_vidqa_error(box["error"], label) from box["error"]
    return box["value"]


def stream_chunks(produce: Callable[[Heartbeat], Iterator[tuple[float, np.ndarray]]], *,
                  chunk_frames: int, timeout_s: float, label: str
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """Yields ``(frames [T, H, W, 3], times [T], is_last)`` from ``produce(beat)``'s frames.

    ``is_last`` is true on the final chunk (the producer is exhausted by then). Nothing is yielded
    if the producer yields nothing. Errors raised by the producer are re-raised here as VidqaError.
    """
    results: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    beat = Heartbeat()

    def put(item) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=POLL_S)
                beat()  # handing over is progress: the caller may have kept us waiting
                return
            except queue.Full:
                continue

    def work() -> None:
        frames_iter = None
        try:
            frames_iter = produce(beat)
            end = object()
            nxt = next(frames_iter, end)
            frames, times = [], []
            while nxt is not end and not stop.is_set():
                frames.append(nxt[1])
                times.append(nxt[0])
                nxt = next(frames_iter, end)  # look one ahead so the last chunk knows it is last
                if len(frames) == chunk_frames or nxt is end:
                    put(("chunk", np.stack(frames), np.asarray(times, dtype=np.float64), nxt is end))
                    frames, times = [], []
            put(("end",))
        except BaseException as err:  # handed to the caller, which re-raises it
            put(("error", err))
        finally:
            close = getattr(frames_iter, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing a broken decoder must not mask what went wrong
                    pass

    worker = threading.Thread(target=work, name="vidqa-decode", daemon=True)
    worker.start()
    try:
        while True:
            waiting_since = time.monotonic()
            while True:
                try:
                    item = results.get(timeout=POLL_S)
                    break
                except queue.Empty:
                    if time.monotonic() - max(beat.last, waiting_since) > timeout_s:
                        raise stalled_error(label, timeout_s) from None
            if item[0] == "end":
                return
            if item[0] == "error":
                raise as_vidqa_error(item[1], label) from item[1]
            _, frames, times, is_last = item
            yield frames, times, is_last
    finally:
        stop.set()
