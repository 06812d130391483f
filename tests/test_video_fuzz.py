"""Fuzzing the video reader: damaged files give frames or a VidqaError, never another exception,
never a hang. Bounded in the default run (``VIDQA_FUZZ_EXAMPLES``, 30 per container); set it higher
to search longer."""

import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidqa.errors import VidqaError
from vidqa.video import iter_chunks, open_video

from videos import make_video

EXAMPLES = int(os.environ.get("VIDQA_FUZZ_EXAMPLES", "30"))
_BASES: dict = {}


def base_bytes(tmp_path_factory, kind: str) -> bytes:
    if kind not in _BASES:
        folder = tmp_path_factory.mktemp("fuzz-base")
        if kind == "mp4":  # B-frames and a keyframe every 8 frames: seeking and reordering get fuzzed
            path = make_video(folder / "base.mp4", 24, fps=10, gop=8, realistic=True)
        else:
            path = make_video(folder / "base.mkv", 24, fps=10, gop=8, container="matroska")
        _BASES[kind] = path.read_bytes()
    return _BASES[kind]


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.integers(1, 64)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 256)),
    st.tuples(st.just("zero"), st.floats(0, 1), st.integers(1, 512)),
)


def mutate(data: bytes, edits, seed: int) -> bytes:
    out = bytearray(data)
    rng = np.random.default_rng(seed)
    for kind, where, amount in edits:
        at = int(where * max(len(out) - 1, 0))
        if kind == "flip" and out:
            out[at] ^= amount
        elif kind == "cut":
            del out[max(at, 1):]
        elif kind == "insert":
            out[at:at] = rng.bytes(amount)
        elif kind == "delete":
            del out[at:at + amount]
        elif kind == "zero":
            out[at:at + amount] = bytes(len(out[at:at + amount]))
    return bytes(out)


def read_everything(path) -> None:
    try:
        open_video(path, timeout_s=10)
    except VidqaError as err:
        assert "\n" not in str(err)
    try:
        for chunk in iter_chunks(path, fps=5.0, chunk_frames=4, timeout_s=10):
            assert chunk.frames.dtype == np.uint8 and chunk.frames.ndim == 4 and chunk.frames.shape[-1] == 3
            assert len(chunk.times) == len(chunk.frames) == len(chunk.indices)
            assert np.all(np.isfinite(chunk.times))
        for chunk in iter_chunks(path, num_frames=3, timeout_s=10):  # seeking paths
            assert len(chunk.frames) <= 3
    except VidqaError as err:
        assert "\n" not in str(err)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["mp4", "mkv"])
def test_fuzzed_files_raise_only_project_errors(tmp_path_factory, kind):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(edits=st.lists(mutation, min_size=1, max_size=6), seed=st.integers(0, 2**16))
    def check(edits, seed):
        data = mutate(base_bytes(tmp_path_factory, kind), edits, seed)
        path = tmp_path_factory.mktemp("fuzz") / f"fuzz.{kind}"
        path.write_bytes(data)
        t0 = time.perf_counter()
        read_everything(path)
        assert time.perf_counter() - t0 < 30

    check()
