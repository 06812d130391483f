"""``open_video``: learn what a file holds, or say in one line why it cannot be read.

Every way a path can be unusable becomes a :class:`~vidqa.errors.VideoError` whose message starts
with the path and names the reason: a URL (not supported: download first), no such file, a
directory, not a regular file (a pipe or a device would block), permission denied, an empty file,
not a video (unrecognised bytes, a text file), a still image (a single picture is not a video; an
animated GIF is), no video stream (audio only, perhaps with cover art), a damaged or truncated file
(a known container FFmpeg cannot open, e.g. an MP4 cut before its index), no decodable frame, zero
duration, an implausible duration (a damaged header), and a probe that stalls.

The probe decodes the first frame: it proves the stream decodes and gives the orientation (display
matrix) and size. ``num_frames`` is the container's count, else ``duration * fps``; ``duration``
is the stream's, else the container's, else found by reading the packets (raw elementary streams).
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vidqa.errors import VideoError
from vidqa.videoio.avutil import DecodeReport, av_module, decode_tolerantly, open_container, reason
from vidqa.videoio.orient import frame_orientation
from vidqa.videoio.watchdog import call_with_timeout


URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
# FFmpeg demuxers that read a single picture (or a sequence of picture files).
IMAGE_FORMATS = {"image2", "image2pipe", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe",
                 "jpegls_pipe", "qoi_pipe", "pgm_pipe", "ppm_pipe", "pam_pipe", "pbm_pipe", "dpx_pipe",
                 "exr_pipe", "j2k_pipe", "psd_pipe", "sgi_pipe", "svg_pipe", "xpm_pipe", "gem_pipe",
                 "pcx_pipe", "hdr_pipe", "jpegxl_pipe", "pictor_pipe", "photocd_pipe", "sunrast_pipe"}
# Formats that can hold one picture or an animation: a still image only if one frame decodes.
MAYBE_ANIMATED_FORMATS = {"gif", "apng", "webp"}
# FFmpeg "decodes" almost any text as ANSI art, subtitles or similar; none of them is a video.
TEXT_FORMATS = {"tty", "ansi", "bintext", "xbin", "adf", "idf", "lrc", "srt", "ass", "webvtt",
                "microdvd", "subviewer", "subviewer1", "sami", "realtext", "jacosub", "mpl2", "mpsub",
                "pjs", "stl", "vplayer", "aqtitle", "scc", "json"}
TEXT_CODECS = {"ansi", "bintext", "xbin", "idf", "text"}
# Longer than a month at 1 fps is a damaged header, not a recording anyone can ask about.
MAX_DURATION_S = 31 * 24 * 3600.0
MAX_FPS = 1000.0


@dataclass
class VideoInfo:
    """What :func:`open_video` learnt about a video file.

    ``duration`` (s) and ``fps`` are positive; ``num_frames`` is the container's count or, when it
    lacks one, ``round(duration * fps)``. ``width``/``height`` are the size as displayed: after the
    sample aspect ratio and the rotation. ``rotation`` is the clockwise turn (0/90/180/270) applied
    to decoded frames to show them upright, then a left-right mirror if ``mirrored``.
    ``codec`` is FFmpeg's codec name (``h264``, ``hevc``, ``vp9``, ``av1``...), ``container`` its
    demuxer name; ``stream_index`` the container stream read.
    """

    path: str
    duration: float
    fps: float
    num_frames: int
    width: int
    height: int
    rotation: int
    codec: str
    container: str
    mirrored: bool = False
    stream_index: int = 0


def check_path(path) -> Path:
    """The path as a :class:`Path` if it names a readable, non-empty regular file."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise VideoError(f"expected a video file path, got {type(path).__name__}")
    text = os.fspath(path)
    if URL_PATTERN.match(text):
        raise VideoError(f"{text}: URLs are not supported; download the video and pass the local file")
    if not text.strip():
        raise VideoError("empty video path")
    p = Path(text).expanduser()
    try:
        info = p.stat()
    except FileNotFoundError:
        raise VideoError(f"{p}: no such file") from None
    except PermissionError:
        raise VideoError(f"{p}: permission denied") from None
    except OSError as err:
        raise VideoError(f"{p}: cannot be read ({reason(err)})") from err
    if stat.S_ISDIR(info.st_mode):
        raise VideoError(f"{p}: is a directory, not a video file")
    if not stat.S_ISREG(info.st_mode):
        raise VideoError(f"{p}: not a regular file (a pipe or a device); save the video to a file first")
    if not os.access(p, os.R_OK):
        raise VideoError(f"{p}: permission denied")
    if info.st_size == 0:
        raise VideoError(f"{p}: empty file (0 bytes)")
    return p


def sniff(p: Path) -> str:
    """A coarse guess from the first bytes: a container name, 'image', 'text' or ''."""
    try:
        with open(p, "rb") as f:
            head = f.read(512)
    except OSError:
        return ""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "MP4/MOV"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith(b"FLV"):
        return "FLV"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "MPEG-PS"
    if head.startswith(b"\x30\x26\xb2\x75"):
        return "ASF/WMV"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "MPEG-TS"
    if (head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*"))
            or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")):
        return "image"
    if head and _looks_like_text(head):
        return "text"
    return ""


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head[:-3].decode("utf-8", errors="replace")  # a character cut at the 512-byte edge
        if "\ufffd" in text:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * len(text)


def _open_error(p: Path, err: VideoError) -> VideoError:
    kind = sniff(p)
    detail = str(err).split(": cannot be opened ", 1)[-1]
    if kind == "text":
        return VideoError(f"{p}: not a video (it is a text file)")
    if kind == "image":
        return VideoError(f"{p}: is a still image, not a video")
    if kind:
        return VideoError(f"{p}: damaged or truncated {kind} file; FFmpeg cannot open it {detail}")
    return VideoError(f"{p}: not a video (unrecognised format) {detail}")


def _video_stream(container):
    """The first real video stream (cover art is an 'attached picture', not a video)."""
    av = av_module()
    attached = int(av.stream.Disposition.attached_pic)
    for stream in container.streams.video:
        if not int(stream.disposition) & attached:
            return stream
    return None


def _no_video_error(p: Path, container) -> VideoError:
    if container.streams.video:
        return VideoError(f"{p}: has no video stream (audio only, with cover art)")
    if container.streams.audio:
        return VideoError(f"{p}: has no video stream (audio only)")
    if len(container.streams):
        return VideoError(f"{p}: has no video stream (only subtitle or data streams)")
    return VideoError(f"{p}: has no video stream (no streams at all)")


def _codec_name(stream) -> str:
    """The codec's own name (``av1``), not its decoder's (``libdav1d``)."""
    ctx = stream.codec_context
    if ctx is None:
        return "unknown"
    codec = ctx.codec
    return getattr(codec, "canonical_name", None) or codec.name or ctx.name


def _seconds(value, time_base) -> float:
    if value is None or time_base is None:
        return 0.0
    out = float(value * time_base)
    return out if math.isfinite(out) else 0.0


def _frame_rate(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and 0 < value <= MAX_FPS:
                return value
    return 0.0


def _packet_span(container, stream) -> tuple[int, float]:
    """(packets, seconds) of a stream from the current position to its end; for containers that
    state no duration (raw elementary streams)."""
    av = av_module()
    count, first, last = 0, None, None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            count += 1
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is not None and packet.time_base is not None:
                t = float(ts * packet.time_base)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
    except (av.FFmpegError, ValueError, OSError):
        pass
    span = (last - first) if first is not None and last is not None else 0.0
    return count, span


def _display_size(frame, stream, rotation: int) -> tuple[int, int]:
    width, height = int(frame.width), int(frame.height)
    sar = stream.sample_aspect_ratio or getattr(stream.codec_context, "sample_aspect_ratio", None)
    if sar:
        ratio = float(Fraction(sar))
        if 0.1 <= ratio <= 10 and abs(ratio - 1) > 1e-3:  # anamorphic: pixels are not square
            width = max(1, round(width * ratio))
    return (height, width) if rotation in (90, 270) else (width, height)


def _probe(p: Path) -> VideoInfo:
    av = av_module()
    try:
        container = open_container(p)
    except VideoError as err:
        raise _open_error(p, err) from err.__cause__
    try:
        fmt = container.format.name if container.format else ""
        names = set(fmt.split(","))
        stream = _video_stream(container)
        if stream is None:
            raise _no_video_error(p, container)
        codec = _codec_name(stream)
        if names & TEXT_FORMATS or codec in TEXT_CODECS:
            raise VideoError(f"{p}: not a video (it is a text file)")
        if names & IMAGE_FORMATS:
            raise VideoError(f"{p}: is a still image, not a video")
        fps = _frame_rate(stream)
        duration = _seconds(stream.duration, stream.time_base) or (
            container.duration / 1_000_000 if container.duration and container.duration > 0 else 0.0)
        report = DecodeReport()
        first, second = None, None
        for frame in decode_tolerantly(container, stream, report):
            if first is None:
                first = frame
                if not names & MAYBE_ANIMATED_FORMATS:
                    break
            else:
                second = frame
                break
        if first is None:
            if not stream.frames and duration <= 0 and not report.bad_packets:
                raise VideoError(f"{p}: has a video stream with no frames (zero duration)")
            why = f" ({report.last_error})" if report.last_error else ""
            raise VideoError(f"{p}: no decodable video frames; the file is damaged or truncated{why}")
        if names & MAYBE_ANIMATED_FORMATS and second is None:
            raise VideoError(f"{p}: is a still image, not a video")
        frames = int(stream.frames or 0)
        if duration <= 0 and frames > 1 and fps:
            duration = frames / fps
        if duration <= 0:
            count, span = _packet_span(container, stream)
            frames = frames or count + report.packets  # the packets the probe decoded count too
            if fps and frames > 1:
                duration = frames / fps
            elif span > 0:
                duration = span * frames / max(frames - 1, 1)
        if duration <= 0 and frames <= 1:
            # One picture in a video container: it lasts one frame (one sampling step at most).
            duration, frames = (1.0 / fps if fps else 1.0), 1
        if not (math.isfinite(duration) and duration > 0):
            raise VideoError(f"{p}: zero duration (the video stream has no timing)")
        if duration > MAX_DURATION_S:
            raise VideoError(f"{p}: implausible duration of {duration:.0f} s; the header is damaged")
        if not fps:
            fps = max(frames, 1) / duration
        frames = frames or max(1, int(round(duration * fps)))
        rotation, mirrored = frame_orientation(first)
        width, height = _display_size(first, stream, rotation)
        return VideoInfo(str(p), float(duration), float(fps), int(frames), width, height, rotation,
                         codec, fmt, mirrored, int(stream.index))
    except VideoError:
        raise
    except (av.FFmpegError, ValueError, TypeError, ArithmeticError, OSError, AttributeError) as err:
        # Headers damaged in ways PyAV does not anticipate (a None time base, a zero rate...).
        raise VideoError(f"{p}: damaged video header ({type(err).__name__}: {reason(err)})") from err
    finally:
        container.close()


def open_video(path, *, timeout_s: float = 60.0) -> VideoInfo:
    """Probes ``path``; raises :class:`VideoError` with a one-line reason if it is unusable.

    The probe runs under a ``timeout_s`` watchdog: a file whose probe stalls is an error, not a hang.
    """
    p = check_path(path)
    return call_with_timeout(lambda: _probe(p), timeout_s, str(p))
