"""Reliability: concurrent ingest of one video from two processes, bad inputs through the CLI,
and a bounded load test of the web app."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from videos import make_video

TESTS = Path(__file__).resolve().parent


def _cli(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "vidqa.app.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def test_two_processes_ingesting_the_same_video_leave_one_valid_memory(tmp_path):
    clip = make_video(tmp_path / "c.mp4", 40, fps=4, width=64, height=48)
    args = ["ingest", str(clip), "--json", "--model", "tiny-random/qwen2_5_vl", "--device", "cpu",
            "--chunk-frames", "4", "--cache-dir", str(tmp_path / "cache")]
    procs = [_cli(args) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-300:] for o in outs]
    paths = {json.loads(o[0])["memory"] for o in outs}
    assert len(paths) == 1
    saved = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(saved) == 1 and not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]
    from vidqa.memory.persist import load_memory

    load_memory(saved[0])  # verifies size and checksum
    third = _cli(args)
    out, _ = third.communicate(timeout=300)
    assert json.loads(out)["from_cache"] is True


def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, qwen_adapter):
    from vidqa.config import VidqaConfig, VideoConfig
    from vidqa.pipeline import VideoQA

    clip = make_video(tmp_path / "c.mp4", 20, fps=4, width=64, height=48)
    config = VidqaConfig(video=VideoConfig(chunk_frames=4), cache_dir=str(tmp_path / "cache"))
    make = lambda: VideoQA(model="tiny-random/qwen2_5_vl", config=config, adapter=qwen_adapter)  # noqa: E731
    qa = make()
    qa.ingest(clip)
    tensors = qa.memory_path(clip) / "kv.safetensors"
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    again = make().ingest(clip)
    assert not again.stats.get("loaded_from_cache")  # rebuilt, not trusted
    assert make().ingest(clip).stats.get("loaded_from_cache")


def _write(path: Path, data) -> Path:
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


BAD_INPUTS = {
    "zero bytes": (lambda d: _write(d / "zero.mp4", b""), 3, "empty"),
    "random bytes": (lambda d: _write(d / "rand.mp4", os.urandom(4096)), 3, "not a"),
    "text file": (lambda d: _write(d / "notes.txt", "hello\n" * 100), 3, "not a"),
    "directory": (lambda d: d, 3, "directory"),
    "missing": (lambda d: d / "nope.mp4", 3, "no such file"),
    "url": (lambda d: "https://example.com/video.mp4", 3, "URL"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_give_one_line_errors_through_the_cli(name, tmp_path, capsys):
    from vidqa.app.cli import main

    make, code, phrase = BAD_INPUTS[name]
    target = make(tmp_path)
    assert main(["ask", str(target), "What?", "--model", "tiny-random/qwen2_5_vl", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "cache")]) == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vidqa: error:") and phrase.lower() in lines[0].lower()


def test_a_real_process_prints_no_traceback(tmp_path):
    p = _cli(["ask", str(tmp_path / "nope.mp4"), "What?", "--model", "tiny-random/qwen2_5_vl"])
    _, err = p.communicate(timeout=120)
    assert p.returncode == 3 and "Traceback" not in err.decode() and err.decode().count("\n") == 1


def test_bad_questions_and_models_through_the_cli(tmp_path, capsys):
    from vidqa.app.cli import main

    clip = make_video(tmp_path / "c.mp4", 8, fps=4, width=64, height=48)
    common = ["--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--chunk-frames", "4"]
    cases = [
        (["ask", str(clip), "", "--model", "tiny-random/qwen2_5_vl"], 5, "empty"),
        (["ask", str(clip), "x" * 100_000, "--model", "tiny-random/qwen2_5_vl"], 5, "limit"),
        (["ask", str(clip), "q", "--model", "tiny-random/nothing"], 4, "unknown"),
        (["ask", str(clip), "q", "--model", str(tmp_path)], 4, "cannot load"),  # a folder without a model
        (["ask", str(clip), "q", "--model", "tiny-random/qwen2_5_vl", "--reducers", "magic"], 2, "unknown reducer"),
    ]
    for args, code, phrase in cases:
        assert main(args + common) == code, args[:3]
        text = capsys.readouterr().err.strip()
        assert phrase in text.lower() and "\n" not in text


def test_web_app_load_eight_concurrent_sessions(tmp_path, qwen_adapter):
    """8 clients ask about two videos at once: every request answered (queued, one at a time),
    no error, and host memory comes back near its baseline."""
    import socket

    from gradio_client import Client

    from vidqa.app.ui import build_app
    from vidqa.config import VidqaConfig, VideoConfig
    from vidqa.pipeline import VideoQA

    allowed = tmp_path / "videos"
    allowed.mkdir()
    clips = [make_video(allowed / f"v{i}.mp4", 16, fps=4, width=64, height=48) for i in range(2)]
    qa = VideoQA(model="tiny-random/qwen2_5_vl", adapter=qwen_adapter,
                 config=VidqaConfig(video=VideoConfig(chunk_frames=4), cache_dir=str(tmp_path / "cache"),
                                    max_new_tokens=3))
    app = build_app(lambda: qa, allowed_dirs=[allowed])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

    results, errors = [], []

    def session(i):
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
            status = client.predict(None, str(clips[i % 2]), 1.0, 8192, "", "original", api_name="/ingest")
            history, *_ = client.predict(f"Question {i}?", [], api_name="/ask")
            results.append((status, history))
        except Exception as err:  # noqa: BLE001 -- collected and asserted below
            errors.append(repr(err))

    try:
        session(0)  # warm-up: the baseline includes gradio's and the model's steady state
        base = rss_mb()
        results.clear()
        threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        after = rss_mb()
    finally:
        app.close()
    assert not errors, errors
    assert len(results) == 8 and all(s.startswith("Ingested") for s, _ in results)
    assert after - base < 300  # MB: nothing held per request
