"""The web app on a loopback port with a tiny model: driven through gradio_client, and through a
real headless Chromium (Debian's package) with the network closed."""

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from vidqa.app.ui import AllowedPaths, build_app, clock, serve
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


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, no sandbox (containers), and nothing that phones home; the resolver rule closes the
# network for the browser itself: every host but the loopback address fails to resolve.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
WAIT_MS = 60_000  # per step; the whole test is bounded by its timeout mark
# Records every progress line the page renders (a MutationObserver sees each DOM change, so a
# line shown for a moment is not missed between two polls).
RECORD_PROGRESS = """() => {
  window.vidqaProgress = [];
  new MutationObserver(() => {
    const found = document.body.innerText.match(/\\d+\\/\\d+ frames, \\d+ tokens kept, ~\\d+s left/g);
    if (found) window.vidqaProgress.push(...found);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                    reason="Debian's chromium is not installed (.ci/run installs it)")
def test_real_browser_ingests_asks_and_seeks(served):
    """Upload, ingest (progress shown), ask twice (no re-ingest), click a timestamp (the player
    seeks), then a path-given video plays in the player; no request leaves the machine."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    app, url, clip, root, holder = served
    out = Path(os.environ.get("VIDQA_ARTIFACTS", "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "ui.png"
    shot.unlink(missing_ok=True)
    left_machine = []

    def loopback_only(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            left_machine.append(route.request.url)
            route.abort()

    def player(prop):
        return page.evaluate(f"document.querySelector('#vidqa-player video')?.{prop}")

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, timeout=WAIT_MS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, service_workers="block")
            context.set_default_timeout(WAIT_MS)
            context.route("**/*", loopback_only)
            page = context.new_page()
            page.goto(url, wait_until="load")
            expect = sync_api.expect
            expect(page.get_by_role("heading", name=re.compile("vidqa"))).to_be_visible(timeout=WAIT_MS)
            fps_box = page.get_by_label("Frames per second")
            expect(fps_box).to_be_hidden()  # the settings panel starts collapsed

            page.locator("#vidqa-player input[type=file]").set_input_files(str(clip))
            page.locator("#vidqa-player video").wait_for()
            page.locator("#vidqa-settings").get_by_role("button").first.click()
            expect(page.get_by_role("textbox", name=re.compile("^Model"))).to_have_value("tiny-random/qwen2_5_vl")
            # 2 fps: settings no other test ingests with, so the ingest is real and shows progress;
            # budget 1: only the newest block is recalled, so its span starts after 0:00.
            fps_box.fill("2")
            page.get_by_label("Visual tokens per question").fill("1")
            page.evaluate(RECORD_PROGRESS)
            encodes = holder["qa"].encodes if "qa" in holder else 0  # the engine starts on first use
            page.get_by_role("button", name="Ingest").click()
            status = page.locator("#vidqa-status")
            expect(status).to_contain_text("Ingested clip.mp4", timeout=WAIT_MS)
            ingested = holder["qa"].encodes
            assert ingested > encodes
            kept = int(re.search(r"(\d+) visual tokens kept", status.inner_text()).group(1))
            progress = page.evaluate("window.vidqaProgress")
            # at least one line of a chunk before the last: the bar moved during the ingest
            assert any(int(done) < int(total) for done, total in (re.match(r"(\d+)/(\d+)", line).groups()
                                                                   for line in progress)), progress

            question = page.get_by_role("textbox", name="Question", exact=True)
            question.fill("What happens?")
            page.get_by_role("button", name="Ask").click()
            expect(status).to_contain_text("visual tokens attended", timeout=WAIT_MS)
            assert re.fullmatch(rf"\d+ of {kept} visual tokens attended; first token [\d.]+s, total [\d.]+s; "
                                r"host \d+ MiB, GPU \d+ MiB", status.inner_text().strip()), status.inner_text()
            answer = holder["qa"].answer
            spans = [label.strip() for label in page.locator("#vidqa-evidence label").all_inner_texts()]
            bot = page.locator("#vidqa-chat .message.bot")
            expect(bot.last).to_contain_text(answer.text.strip())
            expect(bot.last).to_contain_text("Evidence: " + ", ".join(spans))
            assert spans and spans == [f"{clock(a)}-{clock(b)}" for a, b in answer.spans]
            expect(page.locator("#vidqa-moments img")).to_have_count(2 * len(spans))

            # The click must seek (a "seeked" event at the span's start), not merely play on to it.
            start = answer.spans[0][0]
            assert start > 0 and player("currentTime") < start
            page.evaluate("() => { const v = document.querySelector('#vidqa-player video');"
                          " v.addEventListener('seeked', () => { window.vidqaSeekedTo = v.currentTime },"
                          " {once: true}) }")
            page.locator("#vidqa-evidence label").first.click()
            page.wait_for_function("window.vidqaSeekedTo !== undefined", timeout=WAIT_MS)
            assert abs(page.evaluate("window.vidqaSeekedTo") - start) < 0.5
            page.screenshot(path=str(shot), full_page=True)

            question.fill("And then?")  # a follow-up, sent with Enter, on the same memory
            question.press("Enter")
            expect(bot).to_have_count(2, timeout=WAIT_MS)
            expect(page.locator("#vidqa-chat .message.user").last).to_contain_text("And then?")
            expect(status).to_contain_text("visual tokens attended", timeout=WAIT_MS)
            expect(bot.last).to_contain_text(holder["qa"].answer.text.strip())
            assert holder["qa"].encodes == ingested

            # By path: the same content comes from the disk cache and the player shows the file.
            page.locator("#vidqa-path input, #vidqa-path textarea").first.fill(str(clip))
            page.get_by_role("button", name="Ingest").click()
            expect(status).to_contain_text("Ingested clip.mp4 (from cache)", timeout=WAIT_MS)
            page.wait_for_function("(want) => { const v = document.querySelector('#vidqa-player video');"
                                   " return v && decodeURIComponent(v.src).endsWith(want) && v.duration > 0 }",
                                   arg="file=" + str(clip), timeout=WAIT_MS)
            assert abs(player("duration") - 6.0) < 0.5 and holder["qa"].encodes == ingested
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000
    assert not left_machine, left_machine  # the page works offline: nothing but loopback was asked for


def test_chat_turns_feed_follow_ups_without_evidence_or_errors():
    from vidqa.app.ui import chat_turns

    messages = [{"role": "user", "content": "What is shown?"},
                {"role": "assistant", "content": "A red circle.\n\nEvidence: 00:04-00:06"},
                {"role": "user", "content": "Broken?"}, {"role": "assistant", "content": "Error: no video"},
                {"role": "user", "content": [{"type": "text", "text": "And then?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A card."}]}]
    assert chat_turns(messages) == [("What is shown?", "A red circle."), ("And then?", "A card.")]
    assert chat_turns([]) == [] and chat_turns(None) == []
