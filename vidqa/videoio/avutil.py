"""PyAV plumbing shared by the probe and the decoder: open, decode tolerantly, name errors.

``decode_tolerantly`` demuxes packet by packet so that one damaged packet costs one frame, not the
rest of the video: FFmpeg's ``container.decode`` would raise on it and end the iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from vidqa.errors import VideoError

# Consecutive undecodable packets after which the rest of the stream is treated as lost.
MAX_BAD_PACKETS = 64


def av_module():
    import av

    return av


def reason(err: BaseException) -> str:
    """First line of an exception's message, short enough for a one-line error.

    FFmpeg errors repeat the file name; their ``strerror`` alone is the reason.
    """
    text = (getattr(err, "strerror", None) or str(err)).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return first[:160]


def open_container(path: Path, label: str | None = None):
    """``av.open`` for reading, with FFmpeg's refusal turned into a :class:`VideoError`."""
    av = av_module()
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError, UnicodeDecodeError, MemoryError) as err:
        raise VideoError(f"{label or path}: cannot be opened ({reason(err)})") from err


class DecodeReport:
    """What went wrong while decoding a stream, for the caller's warning."""

    def __init__(self) -> None:
        self.packets = 0
        self.bad_packets = 0
        self.stopped_early = False
        self.last_error = ""

    def absorb(self, other: DecodeReport) -> None:
        """Adds what another decoder of the same stream (a parallel worker) ran into."""
        self.packets += other.packets
        self.bad_packets += other.bad_packets
        self.stopped_early = self.stopped_early or other.stopped_early
        self.last_error = other.last_error or self.last_error


def decode_tolerantly(container, stream, report: DecodeReport,
                      beat: Callable[[], None] = lambda: None) -> Iterator:
    """Decoded frames of ``stream`` in presentation order, skipping packets that fail to decode.

    Sets ``report.stopped_early`` when demuxing fails (the file ends mid-packet) or too many packets
    in a row are undecodable; the frames decoded until then have been yielded.
    """
    av = av_module()
    bad_in_a_row = 0
    demuxed = container.demux(stream)
    while True:
        try:
            packet = next(demuxed)
        except StopIteration:
            return
        except (av.FFmpegError, ValueError, OSError, MemoryError) as err:
            report.stopped_early, report.last_error = True, reason(err)
            yield from _flush(stream)
            return
        beat()
        if packet.size:
            report.packets += 1
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError) as err:
            report.bad_packets += 1
            report.last_error = reason(err)
            bad_in_a_row += 1
            if bad_in_a_row >= MAX_BAD_PACKETS:
                report.stopped_early = True
                yield from _flush(stream)
                return
            continue
        bad_in_a_row = 0
        yield from frames


def _flush(stream) -> Iterator:
    """Frames the decoder still holds (reordering, frame threads) after the input ended early."""
    av = av_module()
    try:
        yield from stream.codec_context.decode(None)
    except (av.FFmpegError, ValueError):
        return
