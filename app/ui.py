"""The web app (``vidqa ui``): give a video, watch it ingest, chat about it.

Thin: every handler calls :class:`~vidqa.pipeline.VideoQA`; nothing here touches tensors. One
``VideoQA`` serves all sessions (its memories are shared with the CLI through the disk cache), and
the queue runs one job at a time per process (one GPU) so concurrent users wait instead of running
out of memory. Safe defaults: bound to 127.0.0.1, path input limited to allowed folders (resolved,
so neither ``../`` nor symlinks escape), upload size limit, bounded queue, analytics off, and no
request leaves the machine (Gradio ships its fonts and scripts).

Each browser session keeps its own ``VideoMemory`` and settings: a question is answered from the
memory that session ingested, with its own token budget, whatever other sessions ingested since.

API names (for ``gradio_client``): ``/ingest(upload, path, fps, budget, reducers, positions) -> status``,
``/ask(question, history, budget, positions) -> (history, evidence choices, gallery, status)`` (streams;
``budget`` and ``positions`` default to the panel's defaults).
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
  // play() is refused without a user gesture on some browsers; the seek stands either way
  if (video) { video.currentTime = secs; video.play().catch(() => {}); }
  return span;
}
"""


def clock(seconds: float) -> str:
    """``MM:SS`` (or ``H:MM:SS`` from an hour on): the form ``SEEK_JS`` parses back."""
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
        self.served: set[Path] = set()  # path-given videos handed to Gradio as static files

    def engine(self):
        if self.qa is None:
            self.qa = self.qa_factory()
        return self.qa


EVIDENCE_SEPARATOR = "\n\nEvidence: "
NOT_ANSWERS = ("Error:", "Ingest a video first.", "(no answer)")


def _text(content) -> str:
    """A chat message's text: Gradio 6 gives a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


def chat_turns(messages) -> list[tuple[str, str]]:
    """The (question, answer) pairs of a chat, oldest first, for a follow-up question: evidence
    lines and error replies left out."""
    turns, question = [], None
    for m in messages or []:
        text = _text(m.get("content"))
        if m.get("role") == "user":
            question = text
        elif m.get("role") == "assistant" and question is not None:
            answer = text.split(EVIDENCE_SEPARATOR, 1)[0].strip()
            if answer and not answer.startswith(NOT_ANSWERS):
                turns.append((question, answer))
            question = None
    return turns


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
    """The Blocks app; ``qa_factory()`` returns a ``VideoQA`` (called once, lazily). Start it with
    :func:`serve`, which applies the upload limit and lets the player show videos of the allowed folders."""
    import gradio as gr

    session = Session(qa_factory, AllowedPaths(list(allowed_dirs)))

    def resolve_video(upload, path_text) -> tuple[Path, bool]:
        """The video to ingest and whether it was given by path. A typed path wins: uploading
        clears the path box, while a video shown after a path ingest stays in the player."""
        if path_text and path_text.strip():
            return session.allowed.check(path_text.strip()), True
        if upload:
            return Path(upload), False
        raise VideoError("give a video: upload one or type a path inside the allowed folders")

    def apply_ask_settings(budget, positions):
        """Question-time knobs -> the shared config; called under the lock by every job, so each
        session's own values hold for its job."""
        from vidqa.config import MemoryConfig

        cfg = session.engine().config
        cfg.memory = MemoryConfig(**{**cfg.memory.__dict__, "token_budget": int(budget), "positions": positions})

    def apply_settings(fps, budget, reducers, positions):
        """Settings panel -> the shared config (ingest-time knobs select another saved memory)."""
        from vidqa.config import VideoConfig

        qa = session.engine()
        cfg = qa.config
        cfg.video = VideoConfig(**{**cfg.video.__dict__, "fps": float(fps)})
        apply_ask_settings(budget, positions)
        if (reducers or "") != cfg.reducers:
            from vidqa.tokenreduce import build_chain

            build_chain(reducers or "")  # validate before switching
            cfg.reducers = reducers or ""
            qa._reducers = None

    def ingest(upload, path_text, fps, budget, reducers, positions, progress=gr.Progress()):
        """-> (status, this session's (memory, video path), a path-given video for the player or None)."""
        try:
            video, by_path = resolve_video(upload, path_text)
            start = time.perf_counter()

            def report(done, total, info):
                left = (info["elapsed"] / max(done, 1)) * (total - done)
                progress(done / max(total, 1), desc=f"{done}/{total} frames, {info['tokens_kept']} tokens kept, "
                                                    f"~{left:.0f}s left")

            with session.lock:  # settings and ingest in one hold: no other job switches them between
                apply_settings(fps, budget, reducers, positions)
                memory = session.engine().ingest(video, progress=report)
            took = time.perf_counter() - start
            cached = " (from cache)" if memory.stats.get("loaded_from_cache") else ""
            status = (f"Ingested {video.name}{cached}: {len(memory.blocks)} chunks, "
                      f"{memory.num_visual_tokens} visual tokens kept, {memory.host_bytes / 2**20:.1f} MiB host, "
                      f"GPU {_gpu_mb():.0f} MiB, {took:.1f}s")
            if by_path and video not in session.served:
                # Served in place, not copied (hashing and copying hours of video) into Gradio's cache.
                gr.set_static_paths([video])
                session.served.add(video)
            return status, (memory, video), str(video) if by_path else None
        except VidqaError as err:
            return f"Error: {err}", None, None

    def ask(question, history, ingested, budget, positions):
        """Streams the answer into the chat, then its evidence spans, thumbnails and status."""
        history = list(history or [])
        turns = chat_turns(history)  # the follow-up sees the earlier questions and answers
        if ingested is None:
            history.append({"role": "assistant", "content": "Ingest a video first."})
            yield history, gr.update(choices=[], value=None), [], "No video ingested."
            return
        history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": ""})
        # The question shows at once and the last answer's evidence goes, before retrieval runs.
        yield history, gr.update(choices=[], value=None), [], "Answering..."
        memory, video = ingested
        try:
            with session.lock:
                apply_ask_settings(budget, positions)
                answer = None
                for piece in session.engine().ask_stream(memory, question, history=turns):
                    if isinstance(piece, str):
                        history[-1]["content"] += piece
                        yield history, gr.update(), gr.update(), "Answering..."
                    else:
                        answer = piece
            spans = [f"{clock(a)}-{clock(b)}" for a, b in answer.spans]
            thumbs = _thumbnails(video, answer.spans)
            status = (f"{answer.tokens['visual_attended']} of {answer.tokens['visual_stored']} visual tokens "
                      f"attended; first token {answer.timings['ttft']:.2f}s, total {answer.timings['total']:.2f}s; "
                      f"host {_host_mb():.0f} MiB, GPU {_gpu_mb():.0f} MiB")
            history[-1]["content"] = (answer.text or "(no answer)") + \
                (EVIDENCE_SEPARATOR + ", ".join(spans) if spans else "")
            yield history, gr.update(choices=spans, value=None), thumbs, status
        except VidqaError as err:
            history[-1]["content"] = f"Error: {err}"
            yield history, gr.update(), gr.update(), f"Error: {err}"

    with gr.Blocks(title="vidqa") as app:
        gr.Markdown("# vidqa: ask questions about long videos" + (f" (model: `{model_name}`)" if model_name else ""))
        # This session's (VideoMemory, video path): its questions use it whatever others ingest since.
        # The memory is VideoQA's own object, held by reference, not a copy.
        ingested = gr.State(None)
        to_show = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                player = gr.Video(label="Video", elem_id="vidqa-player", sources=["upload"])
                path = gr.Textbox(label="...or a path inside the allowed folders", max_lines=1,
                                  elem_id="vidqa-path")
                with gr.Accordion("Settings", open=False, elem_id="vidqa-settings"):
                    gr.Textbox(model_name, label="Model", interactive=False,
                               info="one model per process (one GPU): chosen with vidqa ui --model")
                    fps = gr.Number(label="Frames per second", value=1.0, minimum=0.01)
                    budget = gr.Number(label="Visual tokens per question", value=8192, minimum=1, precision=0)
                    reducers = gr.Textbox(label="Reducer chain",
                                          placeholder="temporal:keep_ratio=0.5,tome:keep_ratio=0.5")
                    positions = gr.Radio([("original positions (ReKV)", "original"),
                                          ("compact positions (InfLLM)", "compact")],
                                         value="original", label="Memory method")
                ingest_btn = gr.Button("Ingest", variant="primary")
                status = gr.Markdown("No video ingested.", elem_id="vidqa-status")
            with gr.Column(scale=4):
                chat = gr.Chatbot(label="Chat", height=420, elem_id="vidqa-chat")
                question = gr.Textbox(label="Question", placeholder="What happens after the red car arrives?")
                ask_btn = gr.Button("Ask")
                evidence = gr.Radio(label="Evidence (click to seek)", choices=[], interactive=True,
                                    elem_id="vidqa-evidence")
                gallery = gr.Gallery(label="Retrieved moments", elem_id="vidqa-moments", columns=6, fit_columns=False,
                                     height=150, object_fit="contain", interactive=False)
        # Model jobs share one concurrency group: the queue runs one at a time and shows waiting
        # users their place (the lock alone would leave them "processing").
        ingest_btn.click(ingest, [player, path, fps, budget, reducers, positions], [status, ingested, to_show],
                         api_name="ingest", concurrency_id="model").then(
            lambda shown: shown or gr.update(), to_show, player, api_name=False, queue=False)
        player.upload(lambda: "", None, path, api_name=False, queue=False)
        ask_inputs, ask_outputs = [question, chat, ingested, budget, positions], [chat, evidence, gallery, status]
        ask_btn.click(ask, ask_inputs, ask_outputs, api_name="ask", concurrency_id="model")
        question.submit(ask, ask_inputs, ask_outputs, api_name=False, concurrency_id="model")
        evidence.change(None, evidence, evidence, js=SEEK_JS)
    app.queue(default_concurrency_limit=1, max_size=64)
    app.max_upload_mb = max_upload_mb
    app.allowed_roots = session.allowed.roots
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


def serve(app, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Starts an app of :func:`build_app` with its upload limit. The allowed folders become Gradio
    ``allowed_paths`` so that the player can show a video given by path (the timestamps seek it);
    their files are then readable through the app, as their videos already were by ingest."""
    app.launch(server_name=host, server_port=port, max_file_size=f"{app.max_upload_mb}mb",
               allowed_paths=[str(r) for r in app.allowed_roots], prevent_thread_lock=not block,
               show_error=False, quiet=True)
    return app


def launch(settings, host: str = "127.0.0.1", port: int = 7860, allowed_dirs=(), max_upload_mb: int = 2048,
           block: bool = True):
    from vidqa.pipeline import VideoQA
    from vidqa.vlm import DEFAULT_MODEL

    app = build_app(lambda: VideoQA(model=settings.model, config=settings.config, device=settings.device),
                    allowed_dirs, max_upload_mb, model_name=settings.model or DEFAULT_MODEL)
    return serve(app, host, port, block)
