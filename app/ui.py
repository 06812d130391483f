"""The web app (``vidqa ui``): give a video, watch it ingest, chat about it.

Thin: every handler calls :class:`~vidqa.pipeline.VideoQA`; nothing here touches tensors. One
``VideoQA`` serves all sessions (its memories are shared with the CLI through the disk cache), and
the queue runs one job at a time per process (one GPU) so concurrent users wait instead of running
out of memory. Safe defaults: bound to 127.0.0.1, path input limited to allowed folders (resolved,
so neither ``../`` nor symlinks escape), upload size limit, bounded queue, analytics off.

API names (for ``gradio_client``): ``/ingest(upload, path, fps, budget, reducers, positions) -> status``,
``/ask(question, history) -> (history, evidence choices, gallery, status)`` (streams).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from vidqa.errors import VideoError, VidqaError  # noqa: E402

SEEK_JS = """
(span) => {
  if (!span) return span;
  const parts = span.split("-")[0].trim().split(":").map(Number);
  const secs = parts.reduce((acc, x) => acc * 60 + x, 0);
  const video = document.querySelector("#vidqa-player video");
  if (video) { video.currentTime = secs; video.play(); }
  return span;
}
"""


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class AllowedPaths:
    """Resolves user-typed paths and accepts only files inside the allowed folders."""

    def __init__(self, folders: list[str | Path]):
        self.roots = [Path(f).resolve() for f in folders]

    def check(self, text: str) -> Path:
        if not self.roots:
            raise VideoError("opening files by path is disabled; upload the video instead")
        path = Path(text).expanduser().resolve()  # resolves ../ and symlinks before the check
        if not any(path == r or path.is_relative_to(r) for r in self.roots):
            raise VideoError(f"{text}: outside the allowed folders")
        return path


class Session:
    """Shared engine state: the VideoQA and a lock so one job runs on the model at a time."""

    def __init__(self, qa_factory, allowed: AllowedPaths):
        self.qa_factory = qa_factory
        self.qa = None
        self.allowed = allowed
        self.lock = threading.Lock()

    def engine(self):
        if self.qa is None:
            self.qa = self.qa_factory()
        return self.qa


def _host_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _gpu_mb() -> float:
    try:
        import torch

        return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    except Exception:  # noqa: BLE001 -- a status line never fails the request
        return 0.0


def build_app(qa_factory, allowed_dirs: list[str | Path] = (), max_upload_mb: int = 2048, model_name: str = ""):
    """The Blocks app; ``qa_factory()`` returns a ``VideoQA`` (called once, lazily)."""
    import gradio as gr

    session = Session(qa_factory, AllowedPaths(list(allowed_dirs)))

    def resolve_video(upload, path_text) -> Path:
        if upload:
            return Path(upload)
        if path_text and path_text.strip():
            return session.allowed.check(path_text.strip())
        raise VideoError("give a video: upload one or type a path inside the allowed folders")

    def apply_settings(fps, budget, reducers, positions):
        """Settings panel -> the shared config (ingest-time knobs select another saved memory)."""
        from vidqa.config import MemoryConfig, VideoConfig

        qa = session.engine()
        cfg = qa.config
        cfg.video = VideoConfig(**{**cfg.video.__dict__, "fps": float(fps)})
        cfg.memory = MemoryConfig(**{**cfg.memory.__dict__, "token_budget": int(budget), "positions": positions})
        if (reducers or "") != cfg.reducers:
            from vidqa.tokenreduce import build_chain

            build_chain(reducers or "")  # validate before switching
            cfg.reducers = reducers or ""
            qa._reducers = None

    def ingest(upload, path_text, fps, budget, reducers, positions, progress=gr.Progress()):
        try:
            video = resolve_video(upload, path_text)
            with session.lock:
                apply_settings(fps, budget, reducers, positions)
            start = time.perf_counter()

            def report(done, total, info):
                left = (info["elapsed"] / max(done, 1)) * (total - done)
                progress(done / max(total, 1), desc=f"{done}/{total} frames, {info['tokens_kept']} tokens kept, "
                                                    f"~{left:.0f}s left")

            with session.lock:
                memory = session.engine().ingest(video, progress=report)
            took = time.perf_counter() - start
            cached = " (from cache)" if memory.stats.get("loaded_from_cache") else ""
            status = (f"Ingested {video.name}{cached}: {len(memory.blocks)} chunks, "
                      f"{memory.num_visual_tokens} visual tokens kept, {memory.host_bytes / 2**20:.1f} MiB host, "
                      f"GPU {_gpu_mb():.0f} MiB, {took:.1f}s")
            return status, str(video)
        except VidqaError as err:
            return f"Error: {err}", ""

    def ask(question, history, video_key):
        history = list(history or [])
        if not video_key:
            history.append({"role": "assistant", "content": "Ingest a video first."})
            yield history, gr.update(choices=[], value=None), [], "No video ingested."
            return
        history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": ""})
        try:
            with session.lock:
                qa = session.engine()
                answer = None
                for piece in qa.ask_stream(video_key, question):
                    if isinstance(piece, str):
                        history[-1]["content"] += piece
                        yield history, gr.update(), gr.update(), "Answering..."
                    else:
                        answer = piece
            spans = [f"{clock(a)}-{clock(b)}" for a, b in answer.spans]
            thumbs = _thumbnails(Path(video_key), answer.spans)
            status = (f"{answer.tokens['visual_attended']} of {answer.tokens['visual_stored']} visual tokens "
                      f"attended; first token {answer.timings['ttft']:.2f}s, total {answer.timings['total']:.2f}s; "
                      f"host {_host_mb():.0f} MiB, GPU {_gpu_mb():.0f} MiB")
            history[-1]["content"] = (answer.text or "(no answer)") + \
                ("\n\nEvidence: " + ", ".join(spans) if spans else "")
            yield history, gr.update(choices=spans, value=None), thumbs, status
        except VidqaError as err:
            history[-1]["content"] = f"Error: {err}"
            yield history, gr.update(), gr.update(), f"Error: {err}"

    with gr.Blocks(title="vidqa") as app:
        gr.Markdown("# vidqa: ask questions about long videos" + (f" (model: `{model_name}`)" if model_name else ""))
        video_key = gr.State("")
        with gr.Row():
            with gr.Column(scale=3):
                player = gr.Video(label="Video", elem_id="vidqa-player", sources=["upload"])
                path = gr.Textbox(label="...or a path inside the allowed folders", max_lines=1)
                with gr.Accordion("Settings", open=False):
                    fps = gr.Number(label="Frames per second", value=1.0, minimum=0.01)
                    budget = gr.Number(label="Visual tokens per question", value=8192, minimum=1, precision=0)
                    reducers = gr.Textbox(label="Reducer chain", placeholder="temporal:keep_ratio=0.5,tome:keep_ratio=0.5")
                    positions = gr.Radio(["original", "compact"], value="original", label="Positions of recalled memory")
                ingest_btn = gr.Button("Ingest", variant="primary")
                status = gr.Markdown("No video ingested.")
            with gr.Column(scale=4):
                chat = gr.Chatbot(label="Chat", height=420)
                question = gr.Textbox(label="Question", placeholder="What happens after the red car arrives?")
                ask_btn = gr.Button("Ask")
                evidence = gr.Radio(label="Evidence (click to seek)", choices=[], interactive=True)
                gallery = gr.Gallery(label="Retrieved moments", columns=6, height=140)
        ingest_btn.click(ingest, [player, path, fps, budget, reducers, positions], [status, video_key],
                         api_name="ingest")
        ask_btn.click(ask, [question, chat, video_key], [chat, evidence, gallery, status], api_name="ask")
        question.submit(ask, [question, chat, video_key], [chat, evidence, gallery, status], api_name=False)
        evidence.change(None, evidence, evidence, js=SEEK_JS)
    app.queue(default_concurrency_limit=1, max_size=64)
    app.max_upload_mb = max_upload_mb
    return app


def _thumbnails(video: Path, spans, per_span: int = 2):
    """(frame, caption) pairs in the middle of each evidence span, at most 12."""
    from vidqa.video import read_frames

    times = [a + (b - a) * (i + 1) / (per_span + 1) for a, b in spans for i in range(per_span)][:12]
    if not times:
        return []
    try:
        got = read_frames(video, times=times, max_pixels=160 * 90, timeout_s=20)
    except VidqaError:
        return []
    return [(frame, clock(t)) for frame, t in zip(got.frames, got.times)]


def launch(settings, host: str = "127.0.0.1", port: int = 7860, allowed_dirs=(), max_upload_mb: int = 2048,
           block: bool = True):
    from vidqa.pipeline import VideoQA

    app = build_app(lambda: VideoQA(model=settings.model, config=settings.config, device=settings.device),
                    allowed_dirs, max_upload_mb, model_name=settings.model or "")
    app.launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb}mb",
               prevent_thread_lock=not block, show_error=False, quiet=True)
    return app
