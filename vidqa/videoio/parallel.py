"""Several threads working through numbered jobs, their results handed back in job order.

``ordered_map`` serves the PyAV backend's sparse reads: jobs are consecutive blocks of targets,
each worker thread keeps its own state (an open container and its cursor) from job to job, and
takes the lowest job nobody has taken yet, so every worker's jobs come in ascending order (what a
cursor needs) and a slow job does not hold up the others. Memory stays bounded: a job is handed
out only while fewer than ``ahead`` jobs past the one being consumed are taken or finished.

A job's exception comes back in its place: the consumer gets every result before it, then the
exception. Closing the iterator (consumer gone, error raised) tells the workers to stop after the
job at hand (``halted()`` turns true so a long job can stop sooner), joins them and closes their
states, so no thread outlives the iteration unless it is stuck inside a C call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any


class _Jobs:
    """Job bookkeeping shared by the workers and the consumer, under one condition variable."""

    def __init__(self, count: int, ahead: int):
        self.count, self.ahead = count, ahead
        self.cond = threading.Condition()
        self.handed = 0  # jobs handed out so far: 0 .. handed-1
        self.consumed = 0  # jobs the consumer has taken the results of
        self.results: dict[int, tuple[bool, Any]] = {}  # job -> (ok, value or exception)
        self.closing = False

    def take(self) -> int | None:
        """The next job for a worker, waiting while ``ahead`` jobs are unconsumed; None when done."""
        with self.cond:
            while not self.closing and self.handed < self.count and self.handed >= self.consumed + self.ahead:
                self.cond.wait()
            if self.closing or self.handed >= self.count:
                return None
            self.handed += 1
            return self.handed - 1

    def finish(self, job: int, ok: bool, value) -> None:
        with self.cond:
            self.results[job] = (ok, value)
            self.cond.notify_all()

    def result(self, job: int) -> tuple[bool, Any]:
        """Waits for ``job`` (every handed-out job is finished by its worker) and frees its slot."""
        with self.cond:
            while job not in self.results:
                self.cond.wait()
            self.consumed = job + 1
            self.cond.notify_all()
            return self.results.pop(job)

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()


def _work(jobs: _Jobs, k: int, open_state: Callable[[int], Any], run: Callable,
          close_state: Callable) -> None:
    """Worker ``k``: takes jobs until none are left, opening its state at its first job.

    An error ends the worker (its state may be broken) after it is recorded as that job's result;
    the jobs after it go to the other workers, and the consumer stops at the error anyway.
    """
    state = None
    try:
        while (job := jobs.take()) is not None:
            try:
                if state is None:
                    state = open_state(k)
                value = run(state, job, lambda: jobs.closing)
            except BaseException as err:  # the consumer re-raises it in the job's place
                jobs.finish(job, False, err)
                return
            jobs.finish(job, True, value)
    finally:
        if state is not None:
            try:
                close_state(state)
            except Exception:  # a close that fails must not replace the result already recorded
                pass


def ordered_map(count: int, run: Callable[[Any, int, Callable[[], bool]], Any], *, workers: int, ahead: int,
                open_state: Callable[[int], Any], close_state: Callable[[Any], None],
                name: str = "vidqa-worker") -> Iterator:
    """``run(state, job, halted)`` for ``job`` in ``0..count-1`` on ``workers`` threads, in job order.

    Worker ``k`` (``0..workers-1``) calls ``open_state(k)`` before its first job and
    ``close_state(state)`` when it stops. At most ``ahead`` (>= ``workers``) jobs past the last one
    consumed are taken or finished at any time. A job's exception is raised in its place.
    """
    jobs = _Jobs(count, max(ahead, workers))
    threads = [threading.Thread(target=_work, args=(jobs, k, open_state, run, close_state),
                                name=f"{name}-{k}", daemon=True) for k in range(workers)]
    try:
        for thread in threads:
            thread.start()
        for job in range(count):
            ok, value = jobs.result(job)
            if not ok:
                raise value
            yield value
    finally:
        jobs.close()
        for thread in threads:
            if thread.ident is not None:  # started (a failed start leaves the rest unstarted)
                thread.join()
