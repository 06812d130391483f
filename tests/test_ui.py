"""The web app driven through gradio_client on a loopback port, with a tiny model."""

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from vidqa.app.ui import AllowedPaths, build_app, serve
from vidqa.errors import VideoError

from videos import make_video


def _text(message) -> str:
    """Gradio 6 returns chat content as a list of parts."""
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingQA:
    """A real VideoQA (tiny model) that counts ingests that did real work and records what its
    last ``ask_stream`` yielded (``pieces``, ``answer``)."""

    def __init__(self, adapter, cache):
        from vidqa.config import VidqaConfig, VideoConfig
        from vidqa.pipeline import VideoQA

        self.qa = VideoQA(model="tiny-random/qwen2_5_vl", adapter=adapter,
                          config=VidqaConfig(video=VideoConfig(chunk_frames=4), cache_dir=str(cache), max_new_tokens=5))
        self.encodes = 0
        original = adapter.encode

        def counting(*a, **k):
            self.encodes += 1
            return original(*a, **k)

        adapter.encode = counting
        self._restore = (adapter, original)
        self.pieces, self.answer = [], None

    def ask_stream(self, *args, **kwargs):
        self.pieces, self.answer = [], None
        for piece in self.qa.ask_stream(*args, **kwargs):
            if isinstance(piece, str):
                self.pieces.append(piece)
            else:
                self.answer = piece
            yield piece

    def __getattr__(self, name):
        return getattr(self.qa, name)


@pytest.fixture(scope="module")
def served(tmp_path_factory, qwen_adapter):
    root = tmp_path_factory.mktemp("ui")
    allowed = root / "allowed"
    allowed.mkdir()
    clip = make_video(allowed / "clip.mp4", 24, fps=4, width=64, height=48)
    (root / "secret.mp4").write_bytes(clip.read_bytes())
    os.symlink(root / "secret.mp4", allowed / "link.mp4")
    holder = {}

    def factory():
        holder["qa"] = CountingQA(qwen_adapter, root / "cache")
        return holder["qa"]

    app = build_app(factory, allowed_dirs=[allowed], max_upload_mb=1, model_name="tiny-random/qwen2_5_vl")
    port = _free_port()
    serve(app, "127.0.0.1", port, block=False)
    yield app, f"http://127.0.0.1:{port}/", clip, root, holder
    adapter, original = holder["qa"]._restore if "qa" in holder else (None, None)
    if adapter is not None:
        adapter.encode = original
    app.close()


def test_upload_ingest_and_two_questions_without_reingest(served):
    from gradio_client import Client, handle_file

    app, url, clip, root, holder = served
    client = Client(url, verbose=False)
    status = client.predict(handle_file(str(clip)), "", 1.0, 8192, "", "original", api_name="/ingest")
    assert status.startswith("Ingested clip.mp4"), status  # the video itself stays in the session state
    encodes = holder["qa"].encodes
    assert encodes > 0
    job = client.submit("What happens?", [], api_name="/ask")
    history, evidence, gallery, status = job.result()
    streamed = [_text(h[-1]) for h, *_ in job.outputs()[:-1]]
    pieces = holder["qa"].pieces
    assert pieces, "the engine yielded no text"
    # the question shows at once, then one update per generated piece, in order
    assert streamed == ["".join(pieces[:i]) for i in range(len(pieces) + 1)]
    assert history[-1]["role"] == "assistant" and _text(history[-1]).startswith(holder["qa"].answer.text)
    assert "visual tokens attended" in status and "Evidence:" in _text(history[-1])
    history2, *_ = client.predict("And then?", history, api_name="/ask")
    assert len(history2) == 4
    assert holder["qa"].encodes == encodes  # the second question did not re-ingest


def test_each_session_asks_its_own_memory_with_its_own_budget(served):
    """A question is answered from the memory its session ingested, even after another session
    ingested the same video with other settings; the budget is read at ask time, no re-ingest."""
    from gradio_client import Client

    app, url, clip, root, holder = served
    mine, other = Client(url, verbose=False), Client(url, verbose=False)
    status = mine.predict(None, str(clip), 1.0, 8192, "", "original", api_name="/ingest")
    kept = int(re.search(r"(\d+) visual tokens kept", status).group(1))
    other_status = other.predict(None, str(clip), 3.0, 8192, "", "original", api_name="/ingest")
    assert int(re.search(r"(\d+) visual tokens kept", other_status).group(1)) != kept
    encodes = holder["qa"].encodes
    *_, full = mine.predict("What happens?", [], 8192, "original", api_name="/ask")
    *_, small = mine.predict("What happens?", [], 1, "original", api_name="/ask")
    assert f"{kept} of {kept} visual tokens attended" in full
    attended = int(re.search(r"(\d+) of (\d+) visual tokens attended", small).group(1))
    assert 0 < attended < kept and f"of {kept} visual" in small
    assert holder["qa"].encodes == encodes


def test_path_inside_allowed_is_accepted_and_escapes_are_refused(served):
    from gradio_client import Client

    app, url, clip, root, holder = served
    client = Client(url, verbose=False)
    status = client.predict(None, str(clip), 1.0, 8192, "", "original", api_name="/ingest")
    assert status.startswith("Ingested")
    for bad in [str(root / "secret.mp4"), str(clip.parent / ".." / "secret.mp4"), str(clip.parent / "link.mp4"),
                "/etc/passwd"]:
        status = client.predict(None, bad, 1.0, 8192, "", "original", api_name="/ingest")
        assert status.startswith("Error") and "outside the allowed folders" in status
    history, *_ = client.predict("Still there?", [], api_name="/ask")
    assert _text(history[-1]) == "Ingest a video first."  # the refused path replaced the video


def test_oversize_upload_is_refused(served, tmp_path):
    from gradio_client import Client, handle_file

    app, url, clip, root, holder = served
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2 * 1024 * 1024))
    client = Client(url, verbose=False)
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(big)), "", 1.0, 8192, "", "original", api_name="/ingest")
    assert "size" in str(info.value).lower() or "large" in str(info.value).lower() or "413" in str(info.value)


def test_allowed_paths_unit(tmp_path):
    (tmp_path / "ok").mkdir()
    allowed = AllowedPaths([tmp_path / "ok"])
    assert allowed.check(str(tmp_path / "ok" / "a.mp4")) == (tmp_path / "ok" / "a.mp4").resolve()
    with pytest.raises(VideoError):
        allowed.check(str(tmp_path / "ok" / ".." / "a.mp4"))
    with pytest.raises(VideoError, match="disabled"):
        AllowedPaths([]).check("/x.mp4")


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_real_browser_loads_the_page_and_takes_a_screenshot(served):
    app, url, clip, root, holder = served
    out = Path(os.environ.get("VIDQA_ARTIFACTS", "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "ui.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={root / 'chrome'}", "--window-size=1280,900", "--virtual-time-budget=8000",
           f"--screenshot={shot.resolve()}", url]
    subprocess.run(cmd, check=True, timeout=90, capture_output=True)
    assert shot.exists() and shot.stat().st_size > 10_000
    dom = subprocess.run(cmd[:-2] + ["--dump-dom", url], timeout=90, capture_output=True, text=True).stdout
    assert "vidqa" in dom
