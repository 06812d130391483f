"""PyAV backend: for each target time, the decoded frame whose presentation time is nearest.

Targets come in ascending order. The decoder reads forward and keeps two frames: the last one at or
before the target and the first one after it, and returns the nearer (ties go to the earlier).
It seeks instead of reading on only when that skips frames. Where the container's index reaches the
target (MP4 and AVI list every keyframe; Matroska does once its cues are read, which a seek to the
start triggers when the index is short) it knows the keyframe before the target and seeks when that keyframe
is more than ``SEEK_MIN_SKIP_S`` past the frames already read. Elsewhere it seeks when
the target is further ahead than the longest keyframe interval seen so far (at least
``SEEK_AHEAD_S``), so that the keyframe it lands on is past what was read. Either way a seek never
decodes more frames than reading on would, and sparse sampling of a long video touches a small
part of it, while 1 fps sampling of a typical video (a keyframe every few seconds) reads on.
After a seek it checks where it landed; if the first frame is already past the target (an index
that points late, B-frames whose keyframe is displayed after its decode time), it seeks further
back, and after a few tries from the start. Dense sampling never seeks. Returned times are the
frames' own presentation times, measured from the stream's start.

Only what the caller asked for is converted to RGB (and resized, and turned upright), so decoding
every frame of a 30 fps video to sample one per second costs the decode, not 30 conversions.

Long reads are decoded by several decoders at once (``workers``, default :func:`default_workers`):
the targets are cut into blocks of consecutive ones and worker threads, each with its own container
and cursor, take the blocks in order (:func:`vidqa.videoio.parallel.ordered_map`); FFmpeg releases
the GIL while demuxing, decoding and scaling. Sparse targets (the mean gap between them at least half
the index's mean keyframe interval, ``SPARSE_GAP_KEY_INTERVALS``) go in blocks of ``BLOCK_TARGETS``,
each reached by a seek. Dense targets (1 fps of a typical video, read on by one decoder) go in blocks
spanning ``DENSE_BLOCK_KEY_INTERVALS`` keyframe intervals: a worker starts each of its blocks from the
keyframe before it, which one decoder reading on would have decoded anyway up to half an interval
later, so the workers together decode about 1/16 more frames than one decoder and convert the same
ones, on several cores instead of one thread. Fewer targets per block when the frames held ahead would
pass ``DENSE_AHEAD_BYTES``; one decoder when a block would then span less than
``DENSE_MIN_BLOCK_KEY_INTERVALS``. Each worker sees ascending targets, so its cursor behaves as the
single one does, and the frame nearest a target does not depend on where decoding started: the
frames and times are those one decoder returns. (Except the pixels of a frame that FFmpeg patches
up from damaged data: they depend on its thread count, which differs between one decoder and
several, as it does between machines.) At most ``AHEAD_PER_WORKER * workers`` sparse blocks, or
``DENSE_AHEAD_PER_WORKER * workers`` dense ones, are decoded ahead of the consumer. Without an
index of the whole stream one decoder reads it.

A file cut short: targets past the last decodable frame (beyond that frame's own duration plus a
frame) are not served; ``truncated`` is set and the iteration ends. Damaged packets are skipped.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np

from vidqa.videoio.avutil import DecodeReport, av_module, decode_tolerantly, open_container
from vidqa.videoio.orient import upright
from vidqa.videoio.parallel import ordered_map
from vidqa.videoio.sampling import target_size

# A seek flushes the decoder (its frame threads lose their work): worth it when it skips this much.
SEEK_MIN_SKIP_S = 1.0
# Without an index, targets nearer than this are reached by decoding on.
SEEK_AHEAD_S = 4.0
# Attempts at landing at or before a target, each seeking further back, before seeking to the start.
SEEK_TRIES = 4
# Parallel decoding: targets per block (a worker's unit of work; consecutive targets stay with one
# cursor, so nearby ones are still read on) and blocks decoded ahead per worker (bounds memory).
BLOCK_TARGETS = 4
AHEAD_PER_WORKER = 2
# Sparse: the mean gap between targets is at least this many mean keyframe intervals. A worker
# starting a block decodes from the keyframe before its first target, half an interval on average,
# where one decoder reading on would have decoded the gap before it: from half an interval on,
# the workers together decode no more frames than one decoder does.
SPARSE_GAP_KEY_INTERVALS = 0.5
# Dense: a block spans this many mean keyframe intervals (its lead-in from the keyframe before it, half
# an interval on average, is then ~6% of it), holds fewer targets when the blocks held ahead of the
# consumer would pass this many bytes of frames, and is not cut out at all (one decoder) when it would
# then span less than the minimum: below one interval the lead-ins would outweigh the parallelism.
DENSE_BLOCK_KEY_INTERVALS = 8
DENSE_MIN_BLOCK_KEY_INTERVALS = 1.0
DENSE_AHEAD_BYTES = 128 * 2**20
# A dense block is long: one per worker in flight (and the one being handed over) keeps them busy.
DENSE_AHEAD_PER_WORKER = 1
# Automatic worker count: beyond a few, the disk and the consumer are the limit, not decoding.
MAX_AUTO_WORKERS = 4


def cpu_cores() -> int:
    """Cores this process may run on (a container or ``taskset`` may allow fewer than the host has)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Decoders used for sparse reads when not told: ``min(MAX_AUTO_WORKERS, cores)``."""
    return min(MAX_AUTO_WORKERS, cpu_cores())


def output_size(info, max_pixels: int | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """((w, h) of returned frames, (w, h) to scale decoded frames to before turning them)."""
    w, h = target_size(info.width, info.height, max_pixels)
    coded = (h, w) if info.rotation in (90, 270) else (w, h)
    return (w, h), coded


class _Decoded:
    """One decoded frame with its time (s, absolute in the stream) and duration (s, 0 if unknown)."""

    __slots__ = ("time", "frame", "duration")

    def __init__(self, time: float, frame, duration: float):
        self.time, self.frame, self.duration = time, frame, duration


class PyAVDecoder:
    """Decodes ``info``'s video stream at given times; frames uint8 ``[H, W, 3]`` upright RGB."""

    name = "pyav"

    def __init__(self, info, max_pixels: int | None = None, workers: int | None = None):
        self.info = info
        self.workers = default_workers() if workers is None else int(workers)
        self.codec_threads = 0  # FFmpeg's threads per decoder; 0: its own choice (all cores)
        self.path = Path(info.path)
        (self.out_w, self.out_h), (self.scale_w, self.scale_h) = output_size(info, max_pixels)
        self.frame_step = 1.0 / info.fps if info.fps else 1.0
        self.truncated = False
        self.report = DecodeReport()
        self.seeks = 0
        self.decoded = 0

    def convert(self, frame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24", width=self.scale_w, height=self.scale_h)
        return np.ascontiguousarray(upright(rgb, self.info.rotation, self.info.mirrored))

    def _decode(self, container, stream, beat: Callable[[], None]) -> Iterator:
        """Raw decoded frames from the container's current position (the step tests replace)."""
        return decode_tolerantly(container, stream, self.report, beat)

    def frames_at(self, targets: np.ndarray, beat: Callable[[], None] = lambda: None
                  ) -> Iterator[tuple[float, np.ndarray]]:
        """``(time s, frame)`` for each ascending target (s from the stream's start), in order."""
        targets = np.asarray(targets, dtype=np.float64).reshape(-1)
        cursor = _Cursor(self, beat)
        try:
            blocks, ahead = self._blocks_for(cursor, targets)
            if len(blocks) == 1:
                ended = yield from self._serve(cursor, targets)
        finally:
            cursor.close()  # at once for a parallel read: each worker opens its own
        if len(blocks) > 1:
            workers = min(self.workers, len(blocks))
            ended = yield from self._frames_in_parallel(blocks, beat, workers, ahead)
        self.truncated = self.truncated or ended or self.report.stopped_early

    def _serve(self, cursor: _Cursor, targets: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        """``(time, frame)`` per target from ``cursor``; returns True if the stream ended before one."""
        converted = (None, None)
        for target in targets:
            want = cursor.start + float(target)
            if cursor.should_seek(want):
                cursor.seek(want)
            best = cursor.nearest(want)
            if best is None:
                return True
            if converted[0] is not best:  # targets nearest the same frame share one conversion
                converted = (best, self.convert(best.frame))
            yield best.time - cursor.start, converted[1]
        return False

    def _blocks_for(self, cursor: _Cursor, targets: np.ndarray) -> tuple[list[np.ndarray], int]:
        """The targets cut into the blocks the workers take, and how many blocks each worker may
        have decoded ahead of the consumer; one block: one decoder reads them all.

        Without an index of the whole stream the cursor's seeks depend on what it has decoded so far
        (and a stream without timestamps cannot seek at all), so one decoder reads it, as before.
        """
        if self.workers < 2 or len(targets) < 2:
            return [targets], 0
        interval = cursor.key_interval()
        gap = (targets[-1] - targets[0]) / (len(targets) - 1)
        if interval is None or interval <= 0 or gap <= 0:
            return [targets], 0
        if gap >= SPARSE_GAP_KEY_INTERVALS * interval:
            size, ahead = BLOCK_TARGETS, AHEAD_PER_WORKER
        else:
            size, ahead = self._dense_block_targets(interval, gap), DENSE_AHEAD_PER_WORKER
        if size is None or size >= len(targets):
            return [targets], 0
        return [targets[i:i + size] for i in range(0, len(targets), size)], ahead

    def _dense_block_targets(self, interval: float, gap: float) -> int | None:
        """Targets per block of a dense read (``gap`` s apart, keyframes ``interval`` s apart), or
        None when a block that fits ``DENSE_AHEAD_BYTES`` would be too short to pay for its lead-in."""
        wanted = math.ceil(DENSE_BLOCK_KEY_INTERVALS * interval / gap)
        # Decoded ahead, the one being handed over, and one more: freed frames stay with the threads'
        # allocator arenas for a while (measured: RSS rose by up to 1.6x the frames one block fewer holds).
        held = DENSE_AHEAD_PER_WORKER * self.workers + 2
        fits = DENSE_AHEAD_BYTES // (held * self.out_w * self.out_h * 3)
        size = min(wanted, fits)
        if size < BLOCK_TARGETS or size * gap < DENSE_MIN_BLOCK_KEY_INTERVALS * interval:
            return None
        return int(size)

    def _frames_in_parallel(self, blocks: list[np.ndarray], beat: Callable[[], None], workers: int,
                            ahead_per_worker: int) -> Iterator[tuple[float, np.ndarray]]:
        """:meth:`_serve` on each block of targets, decoded on ``workers`` threads, yielded in order;
        at most ``ahead_per_worker * workers`` blocks decoded ahead of the consumer.

        Each worker opens its own container and cursor, on a copy of this decoder whose counters
        and damage report are added to this one's when the workers are done.
        """
        # The workers share the cores. After a seek FFmpeg's frame threads decode frames past the
        # target that the next seek throws away: given all the cores each, the workers would spend
        # them on that waste.
        threads = max(1, cpu_cores() // workers)
        forks: list[PyAVDecoder] = []

        def open_cursor(k: int) -> _Cursor:
            fork = self._fork(threads)
            forks.append(fork)
            return _Cursor(fork, beat)

        def serve(worker_cursor: _Cursor, job: int, halted: Callable[[], bool]):
            return _collect(worker_cursor.decoder._serve(worker_cursor, blocks[job]), halted)

        ended = False
        try:
            with closing(ordered_map(len(blocks), serve, workers=workers, ahead=ahead_per_worker * workers,
                                     open_state=open_cursor, close_state=_Cursor.close,
                                     name="vidqa-decode-worker")) as results:
                for frames, ended in results:
                    yield from frames
                    if ended:
                        break  # as one decoder does: nothing past the end of what decodes
        finally:
            for fork in forks:  # the workers are joined by now
                self._absorb(fork)
        return ended

    def _fork(self, codec_threads: int) -> PyAVDecoder:
        """A decoder for one worker: same file and output size, its own counters and report."""
        fork = copy.copy(self)
        fork.truncated, fork.report, fork.seeks, fork.decoded = False, DecodeReport(), 0, 0
        fork.codec_threads = codec_threads
        return fork

    def _absorb(self, fork: PyAVDecoder) -> None:
        self.seeks += fork.seeks
        self.decoded += fork.decoded
        self.report.absorb(fork.report)


def _collect(frames: Iterator, halted: Callable[[], bool]) -> tuple[list, bool]:
    """``(items, ended)`` from a :meth:`PyAVDecoder._serve` generator, or what it had when halted."""
    items = []
    while not halted():
        try:
            items.append(next(frames))
        except StopIteration as stop:
            return items, bool(stop.value)
    return items, False


class _Cursor:
    """Position in the stream: ``last`` (at or before the current target) and ``ahead`` (after)."""

    def __init__(self, decoder: PyAVDecoder, beat: Callable[[], None]):
        self.decoder, self.beat = decoder, beat
        self._open()
        self.time_base = self.stream.time_base
        # A float: Fraction arithmetic on every frame costs more than the rest of the bookkeeping.
        self.tb = float(self.time_base) if self.time_base else 0.0
        start = self.stream.start_time
        self.start = float(start * self.time_base) if start is not None and self.time_base else 0.0
        self.can_seek = bool(self.time_base)
        self.gop = 0.0  # longest keyframe interval seen (s): seeking less far ahead may go backwards
        self.keys, self.key_gap, self.index_size = None, 0.0, -1
        self._read_index()
        if self.can_seek and not self._index_reaches_the_end():
            self._load_full_index()
        self._restart()

    def _index_reaches_the_end(self) -> bool:
        end = self.start + self.decoder.info.duration
        return self.keys is not None and self.keys[-1] >= end - max(self.key_gap, SEEK_AHEAD_S)

    def _load_full_index(self) -> None:
        """Seek to the start: Matroska reads its cues (the whole keyframe index) on its first seek."""
        av = av_module()
        try:
            self.container.seek(int(self.start / self.time_base), stream=self.stream, backward=True,
                                any_frame=False)
        except (av.FFmpegError, ValueError, OverflowError):
            self._from_the_start()  # a container that cannot seek even to its start never seeks
            return
        self._read_index()

    def _read_index(self) -> None:
        """Keyframe times from the container's index, re-read only when it has grown."""
        try:
            size = len(self.stream.index_entries)
        except (AttributeError, TypeError):
            return
        if size != self.index_size:
            self.index_size = size
            self.keys = self._keyframe_times()
            self.key_gap = float(np.max(np.diff(self.keys))) if self.keys is not None else 0.0

    def _keyframe_times(self) -> np.ndarray | None:
        """Ascending keyframe times (s) from the container's index; None if it lists fewer than two.

        MP4 lists decode times: a keyframe is shown a few frames later with B-frames, which only
        makes a seek decision slightly early; the landing check keeps the result exact.
        """
        if not self.can_seek:
            return None
        try:
            stamps = [entry.timestamp for entry in self.stream.index_entries if entry.is_keyframe]
        except (AttributeError, TypeError, ValueError):
            return None
        if len(stamps) < 2:
            return None
        return np.sort(np.asarray(stamps, dtype=np.float64) * float(self.time_base))

    def _restart(self) -> None:
        self.frames = self.decoder._decode(self.container, self.stream, self.beat)
        self.last = self.ahead = None
        self.ended = False
        self.last_key = None
        self.position = self.start  # time up to which frames have been read

    def _next(self) -> _Decoded | None:
        frame = next(self.frames, None)
        if frame is None:
            self.ended = True
            return None
        self.decoder.decoded += 1
        self.beat()
        if frame.pts is None or self.time_base is None:
            # Raw elementary streams carry no timestamps: count frames, and never seek (a landing
            # point could not be checked).
            self.can_seek = False
            prev = self.ahead or self.last
            t = prev.time + self.decoder.frame_step if prev is not None else self.start
        else:
            t = frame.pts * self.tb
        duration = frame.duration * self.tb if frame.duration else 0.0
        if frame.key_frame:
            if self.last_key is not None and t > self.last_key:
                self.gop = max(self.gop, t - self.last_key)
            self.last_key = t
        self.position = max(self.position, t)
        return _Decoded(t, frame, duration)

    def key_interval(self) -> float | None:
        """Mean keyframe interval (s) from the index; None without an index of the whole stream."""
        if not self.can_seek or self.keys is None or not self._index_reaches_the_end():
            return None
        return float(self.keys[-1] - self.keys[0]) / (len(self.keys) - 1)

    def should_seek(self, want: float) -> bool:
        if not self.can_seek:
            return False
        if self.keys is not None and (want <= self.keys[-1] or self._index_reaches_the_end()):
            i = int(np.searchsorted(self.keys, want + 1e-9, side="right")) - 1
            return i >= 0 and self.keys[i] - self.position > SEEK_MIN_SKIP_S
        # No index, or one that stops short of the target (listing only the keyframes read so far).
        return want - self.position > max(SEEK_AHEAD_S, self.gop)

    def seek(self, want: float) -> None:
        av = av_module()
        back = 0.0
        for attempt in range(SEEK_TRIES + 1):
            to = want - back if attempt < SEEK_TRIES else self.start
            to = max(to, self.start)
            try:
                self.container.seek(int(to / self.time_base), stream=self.stream, backward=True,
                                    any_frame=False)
            except (av.FFmpegError, ValueError, OverflowError):
                self._from_the_start()
                return
            self.decoder.seeks += 1
            self._read_index()  # the index may have grown with what was read
            self._restart()
            first = self._next()
            landed_ok = first is not None and first.time <= want + 1e-6
            if landed_ok or to <= self.start:
                self.ahead = first
                if first is not None and first.frame.key_frame:
                    # The keyframe before ``want`` is this far back: a lower bound on the interval.
                    self.gop = max(self.gop, want - first.time)
                return
            back = max(2 * back, self.gop, SEEK_AHEAD_S)

    def _open(self) -> None:
        self.container = open_container(self.decoder.path)
        try:
            self.stream = self.container.streams[self.decoder.info.stream_index]
            self.stream.thread_type = "AUTO"  # frame threads: the decoder is the bottleneck, not Python
            self.stream.thread_count = self.decoder.codec_threads
        except BaseException:
            self.container.close()
            raise

    def close(self) -> None:
        self.container.close()

    def _from_the_start(self) -> None:
        """A container that cannot seek: reopen it and read forward from the beginning."""
        self.can_seek = False
        self.close()
        self._open()
        self._restart()

    def nearest(self, want: float) -> _Decoded | None:
        """The decoded frame nearest ``want``; None if the stream ended well before it."""
        while not self.ended and (self.ahead is None or self.ahead.time <= want):
            if self.ahead is not None:
                self.last = self.ahead
            self.ahead = self._next()
        last, ahead = self.last, self.ahead
        if last is not None and ahead is not None:
            return last if want - last.time <= ahead.time - want else ahead
        if ahead is not None:
            return ahead  # the target is before the first frame
        if last is None:
            return None
        # The stream ended: its last frame stands for targets within its own display time.
        covers = max(last.duration, self.decoder.frame_step) + self.decoder.frame_step + 0.05
        return last if want - last.time <= covers else None
