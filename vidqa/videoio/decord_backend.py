"""decord backend (optional, H.264 only): frames by index, nearest to each target time.

decord indexes every frame when it opens a file and then reads frames by number; the frame nearest
a target is found from its timestamp table. It is only used for H.264: it returns shifted frames
after seeking in x265 HEVC (open GOPs) and cannot open AV1, so :func:`vidqa.video.choose_decoder`
routes every other codec to PyAV.

decord turns frames by the display matrix's rotation itself but ignores mirroring, and ignores the
sample aspect ratio; frames are asked for at the displayed size and the remaining correction is
applied here, so both backends return the same upright frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from vidqa.errors import ConfigError
from vidqa.videoio.orient import ffmpeg_rotation, upright
from vidqa.videoio.sampling import target_size

# Frames fetched per decord call: fewer calls, still a bounded batch.
BATCH = 8


def import_decord():
    """The decord module, or :class:`ConfigError` saying how to install it."""
    try:
        import decord
    except ImportError as err:
        raise ConfigError("the decord decoder is not installed; pip install 'vidqa[decord]' "
                          "or use decoder='pyav'") from err
    return decord


class DecordDecoder:
    """Decodes ``info``'s video at given times with decord; frames uint8 ``[H, W, 3]`` upright RGB."""

    name = "decord"

    def __init__(self, info, max_pixels: int | None = None, workers: int | None = None):
        # ``workers`` is PyAV's: decord reads frames by number with its own threads.
        self.decord = import_decord()
        self.info = info
        self.out_w, self.out_h = target_size(info.width, info.height, max_pixels)
        self.truncated = False
        # decord already turned the frame by FFmpeg's rotation; undo that, then apply ours.
        self.undo = (360 - ffmpeg_rotation(info.rotation, info.mirrored)) % 360

    def _upright(self, rgb: np.ndarray) -> np.ndarray:
        if self.undo == 0 and not self.info.mirrored:
            return rgb
        return np.ascontiguousarray(upright(upright(rgb, self.undo, False), self.info.rotation, self.info.mirrored))

    def frames_at(self, targets: np.ndarray, beat: Callable[[], None] = lambda: None
                  ) -> Iterator[tuple[float, np.ndarray]]:
        """``(time s, frame)`` for each ascending target, in order."""
        # decord takes the size as it returns frames, turned by its rotation; that turn swaps the
        # axes exactly when ours does (both are read off the same matrix), so it is the output size.
        reader = self.decord.VideoReader(self.info.path, ctx=self.decord.cpu(0), width=self.out_w,
                                         height=self.out_h)
        beat()
        count = len(reader)
        if count == 0:
            return
        starts = np.asarray(reader.get_frame_timestamp(np.arange(count)))[:, 0]
        idx = np.clip(np.searchsorted(starts, targets), 0, count - 1)
        earlier = np.clip(idx - 1, 0, count - 1)
        take_earlier = (idx > 0) & (np.abs(starts[earlier] - targets) <= np.abs(starts[idx] - targets))
        picks = np.where(take_earlier, earlier, idx)
        for first in range(0, len(picks), BATCH):
            batch = picks[first:first + BATCH]
            frames = reader.get_batch(batch.tolist()).asnumpy()
            beat()
            for i, rgb in zip(batch, frames):
                yield float(starts[i]), self._upright(rgb)
