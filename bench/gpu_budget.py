"""The time budget of one benchmark run and the estimates that decide what fits in it.

Tasks run in order of importance; before each, its estimated seconds (times a safety factor) are
compared with what is left, and a task that does not fit is reported as skipped instead of run.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

END_RESERVE_S = 8.0  # kept free at the end of the budget for the last writes
# Estimates are multiplied by these before they are compared with the time left: vidqa's time is
# linear in frames (measured per frame on the reference video); native's is extrapolated.
SAFETY_VIDQA, SAFETY_NATIVE = 1.15, 1.3
PROFILE_S = 10.0  # the profile's device measurements (matmuls, copies), kept free by the OOM search


class Budget:
    """Seconds left of ``seconds`` counted from ``start`` (a ``time.monotonic()`` reading taken when
    the process started, before the heavy imports), less ``END_RESERVE_S``."""

    def __init__(self, seconds: float, start: float):
        self.seconds, self.start = seconds, start

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed() - END_RESERVE_S

    def fits(self, estimate_s: float, safety: float = SAFETY_VIDQA) -> bool:
        return estimate_s * safety <= self.left()


def native_fit(points: list[tuple[int, float]], n: int) -> float | None:
    """Seconds for ``n`` native frames from measured ``(frames, seconds)``: a least-squares
    ``a n + b n^2`` (vision and projections grow linearly, attention quadratically); with one point
    the quadratic scaling of that point (an upper bound); None without points."""
    if not points:
        return None
    if len(points) == 1:
        n0, t0 = points[0]
        return t0 * max(1.0, (n / n0) ** 2)
    x = np.array([[p[0], p[0] ** 2] for p in points], dtype=np.float64)
    y = np.array([p[1] for p in points], dtype=np.float64)
    (a, b), *_ = np.linalg.lstsq(x, y, rcond=None)
    a, b = max(a, 0.0), max(b, 0.0)
    if a == 0.0 and b == 0.0:
        return max(y) * n / max(p[0] for p in points)
    return a * n + b * n * n


class Estimates:
    """Seconds a task will take, from what this run has measured so far.

    ``reference``: the reference-length vidqa record once measured (its per-frame ingest time and
    question latencies); ``native_points``: ``(frames, seconds)`` of native runs that fit;
    ``generation_rates``: wall seconds per frame of the videos generated (not cached) so far.
    """

    def __init__(self, new_tokens: int):
        self.new_tokens = new_tokens
        self.reference: dict | None = None
        self.native_points: list[tuple[int, float]] = []
        self.generation_rates: list[float] = []

    def vidqa(self, frames: int) -> float:
        """Ingest of ``frames`` plus the three questions (5 s for them before the reference exists)."""
        ref = self.reference
        per_frame = ref["ingest_s"] / ref["frames"] if ref else None
        ask = (ref["ttft_first_s"] + 2 * ref["ttft_followup_s"] + 3 * self.new_tokens / max(1.0, ref["decode_tok_s"])
               if ref else 5.0)
        return (per_frame or 0.05) * frames + ask + 2.0

    def native(self, frames: int) -> float:
        """Native processor + generate on ``frames``: fitted to the native points, or, before any
        exists, four times vidqa's estimate (generous: vidqa was 1.5x faster before packing)."""
        fitted = native_fit(self.native_points, frames)
        return 4 * self.vidqa(frames) if fitted is None else fitted

    def generation(self, frames: int) -> float:
        """Generating a ``frames``-frame video at the median rate seen (0.01 s per frame before any)."""
        rate = statistics.median(self.generation_rates) if self.generation_rates else 0.01
        return rate * frames + 5.0
