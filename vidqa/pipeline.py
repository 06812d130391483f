"""`VideoQA`: the one public entry point; the CLI, the web app and batch evaluation call it.

    qa = VideoQA(model="Qwen/Qwen2.5-VL-3B-Instruct")
    memory = qa.ingest("talk.mp4")                 # once per video; saved to the cache folder
    answer = qa.ask(memory, "When does the speaker show the chart?")
    answer = qa.ask("talk.mp4", "Which colour is the car?", options=["red", "blue", "green", "grey"])

Ingest is question-agnostic (decode -> encode -> agnostic reducers -> streaming prefill), so its
result is reused by every question and shared through the on-disk cache. Everything that
depends on the question (retrieval, question-aware reduction, KV compression) happens in ``ask``.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidqa.config import VidqaConfig
from vidqa.errors import CacheError, QuestionError, ResourceError, VideoError
from vidqa.memory import StreamingIngest, VideoMemory, recall
from vidqa.memory.persist import load_memory, save_memory

MAX_QUESTION_CHARS = 8000
MAX_HISTORY_CHARS = 16000  # earlier turns shown with a follow-up question; older ones are dropped first
MAX_OPTIONS = 26
# Memories kept in the process (the most recently used; older ones reload from the on-disk cache):
# an hour of 7B video holds ~13 GB of KV on the host, and its retrieval keys live on the GPU.
MEMORIES_IN_PROCESS = 2


def recent_turns(history) -> list[tuple[str, str]]:
    """The most recent ``(question, answer)`` pairs of ``history`` within :data:`MAX_HISTORY_CHARS`,
    oldest first; a malformed history is a :class:`QuestionError`."""
    if not history:
        return []
    turns = []
    for turn in history:
        if not (isinstance(turn, (tuple, list)) and len(turn) == 2 and all(isinstance(x, str) for x in turn)):
            raise QuestionError("history must be a list of (question, answer) pairs of strings")
        turns.append((turn[0].strip(), turn[1].strip()))
    kept, used = [], 0
    for q, a in reversed(turns):
        used += len(q) + len(a)
        if used > MAX_HISTORY_CHARS:
            break
        kept.append((q, a))
    return kept[::-1]


@dataclass
class Answer:
    """An answer with its evidence: ``spans`` are the (start, end) seconds of the video the model
    was given; ``choice_index`` indexes ``options`` when they were given and the reply parsed."""

    text: str
    choice_index: int | None = None
    choice: str | None = None
    spans: list[tuple[float, float]] = field(default_factory=list)
    tokens: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    blocks: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "choice_index": self.choice_index, "choice": self.choice,
                "spans": [list(s) for s in self.spans], "tokens": self.tokens, "timings": self.timings}


ProgressFn = Callable[[int, int, dict], None]


def video_fingerprint(path: Path) -> str:
    """A content key of the file: sha256 of its size and three 1 MiB samples (start, middle, end).

    Hashing hours of video would cost more than decoding it; the samples change whenever the file
    is re-encoded, cut or replaced, which is what a cache key needs.
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in (0, max(0, size // 2 - (1 << 19)), max(0, size - (1 << 20))):
            f.seek(offset)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    env = os.environ.get("VIDQA_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vidqa"


class VideoQA:
    """Question answering over long videos with one loaded model (see module docstring)."""

    def __init__(self, model: str | None = None, config: VidqaConfig | None = None,
                 device: str | None = None, adapter=None):
        from vidqa.vlm import DEFAULT_MODEL, load_adapter

        self.config = config or VidqaConfig()
        self.model_name = model or DEFAULT_MODEL
        self.adapter = adapter or load_adapter(self.model_name, device=device)
        self.cache_dir = Path(self.config.cache_dir) if self.config.cache_dir else default_cache_dir()
        # in-process, most recently used last: (path, settings) -> memory
        self._memories: OrderedDict[tuple[str, str], VideoMemory] = OrderedDict()
        self._reducers = None

    # ------------------------------------------------------------------ ingest
    def _chains(self):
        """``(agnostic chain, budget)`` from ``config.reducers``: the chain ingest runs and the
        question-aware budget reducer ``ask`` applies over the memory (each ``None`` when absent).
        Checked here, so a budget ``ask`` cannot apply fails before any ingest."""
        if self._reducers is None:
            if self.config.reducers:
                from vidqa.memory.budget import ask_budget
                from vidqa.tokenreduce import build_chain

                agnostic, aware = build_chain(self.config.reducers).split()
                self._reducers = (agnostic, ask_budget(aware))
            else:
                self._reducers = (None, None)
        return self._reducers

    def memory_path(self, video: Path, fingerprint: str | None = None) -> Path:
        # the name and the weights: a model retrained under the same name must not reuse old memories
        weights = getattr(self.adapter, "weights_id", "")
        model_key = hashlib.sha256(f"{self.model_name}\0{weights}".encode()).hexdigest()[:12]
        fingerprint = fingerprint or video_fingerprint(video)
        return self.cache_dir / f"{fingerprint}-{model_key}-{self.config.ingest_key()}"

    def ingest(self, video: str | Path, progress: ProgressFn | None = None,
               use_cache: bool = True) -> VideoMemory:
        """Builds (or loads from the cache) the memory of ``video``."""
        from vidqa.video import open_video

        info = open_video(video)  # raises VideoError with a one-line reason (URLs, missing, ...)
        path = Path(video)
        key = (str(path.resolve()), self.config.ingest_key())
        if use_cache and key in self._memories:
            self._memories.move_to_end(key)
            return self._memories[key]
        fingerprint = video_fingerprint(path)  # read once: the cache key and the memory's record
        target = self.memory_path(path, fingerprint)
        expect = {"model": self.model_name, "config_key": self.config.ingest_key()}
        if use_cache and target.exists():
            try:
                memory = load_memory(target, expect)
                memory.stats["loaded_from_cache"] = True
                return self._keep(key, memory)
            except CacheError:
                pass  # damaged or stale: rebuilt below, never trusted
        memory = self._ingest(path, info, progress, fingerprint)
        if use_cache:
            save_memory(memory, target)
        return self._keep(key, memory)

    def _keep(self, key: tuple[str, str], memory: VideoMemory) -> VideoMemory:
        """Keeps ``memory`` in the process, dropping the least recently used beyond ``MEMORIES_IN_PROCESS``."""
        self._memories[key] = memory
        self._memories.move_to_end(key)
        while len(self._memories) > MEMORIES_IN_PROCESS:
            self._memories.popitem(last=False)
        return memory

    def _ingest(self, path: Path, info, progress: ProgressFn | None, fingerprint: str) -> VideoMemory:
        from vidqa.encode_groups import encode_group, groups
        from vidqa.video import iter_chunks, sample_times

        vc = self.config.video
        adapter = self.adapter
        agnostic, _ = self._chains()
        stream = agnostic.stream() if agnostic is not None else None
        total = len(sample_times(info, fps=vc.fps, num_frames=vc.num_frames, max_frames=vc.max_frames))
        step = 1.0 / vc.fps if vc.num_frames is None else info.duration / max(1, total)
        t_start = time.perf_counter()
        timings = {"decode": 0.0, "encode": 0.0, "reduce": 0.0, "prefill": 0.0}
        ingest = StreamingIngest(adapter, self.config.memory)
        counts = {"tokens_in": 0, "tokens_kept": 0}

        def process(frames, times, first_index: int, reducer, tokens=None):
            """Encode (unless ``tokens`` are given), reduce and prefill one chunk; out of GPU memory,
            retry it as two halves."""
            saved = copy.deepcopy(reducer)  # a retry must see the reducer state of before
            try:
                t0 = time.perf_counter()
                if tokens is None:
                    tokens = adapter.encode(frames, times, first_index=first_index)
                layout = adapter.chunk_layout(tokens)
                t1 = time.perf_counter()
                kept = reducer(tokens) if reducer is not None else tokens
                t2 = time.perf_counter()
                ingest.add_chunk(kept, layout, t_end=float(times[-1]) + step)
                timings["encode"] += t1 - t0
                timings["reduce"] += t2 - t1
                timings["prefill"] += time.perf_counter() - t2
                counts["tokens_in"] += len(tokens)
                counts["tokens_kept"] += len(kept)
                return reducer
            except torch.cuda.OutOfMemoryError as err:
                tokens = kept = None
                torch.cuda.empty_cache()
                if len(frames) <= 2:
                    raise ResourceError(
                        "out of GPU memory even for a 2-frame chunk; lower --max-pixels or use --device cpu"
                    ) from err
                half = len(frames) // 2 // 2 * 2 or 2
                reducer = process(frames[:half], times[:half], first_index, saved)
                return process(frames[half:], times[half:], first_index + half, reducer)

        def process_group(group, reducer):
            """One vision-tower call for the group's chunks (encode_groups.py), then each chunk on its
            own; out of GPU memory in the joint call, every chunk is encoded by itself."""
            encoded = [None] * len(group)
            if len(group) > 1:
                t0 = time.perf_counter()
                try:
                    encoded = encode_group(adapter, group)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                timings["encode"] += time.perf_counter() - t0
            nonlocal done
            for i, chunk in enumerate(group):
                tokens, encoded[i] = encoded[i], None  # released once prefilled
                reducer = process(chunk.frames, chunk.times, int(chunk.indices[0]), reducer, tokens)
                done += len(chunk.times)
                if progress is not None:
                    progress(done, total, {**counts, "elapsed": time.perf_counter() - t_start})
            return reducer

        done = 0
        t_mark = time.perf_counter()
        try:
            chunks = iter_chunks(path, fps=vc.fps, num_frames=vc.num_frames, max_frames=vc.max_frames,
                                 chunk_frames=vc.chunk_frames, max_pixels=vc.max_pixels,
                                 decoder=vc.decoder, decode_workers=vc.decode_workers, info=info)
            for group in groups(chunks, vc.encode_chunks):
                timings["decode"] += time.perf_counter() - t_mark
                stream = process_group(group, stream)
                t_mark = time.perf_counter()
        finally:
            ingest.close()  # the last blocks reach the host (or the thread's error is raised) here
        tokens_in, tokens_kept = counts["tokens_in"], counts["tokens_kept"]
        if not ingest.blocks:
            raise VideoError(f"{path}: no frames could be decoded")
        timings["total"] = time.perf_counter() - t_start
        video = {"path": str(path), "fingerprint": fingerprint, "duration": info.duration,
                 "frames": done, "fps": vc.fps}
        stats = {"timings": timings, "visual_tokens_in": tokens_in, "visual_tokens_kept": tokens_kept}
        return ingest.finish(self.model_name, video, self.config.ingest_key(), stats)

    # ------------------------------------------------------------------ ask
    def ask(self, video_or_memory, question: str, options: list[str] | None = None,
            max_new_tokens: int | None = None, stream: Callable[[str], None] | None = None,
            progress: ProgressFn | None = None, history: list[tuple[str, str]] | None = None) -> Answer:
        """Answers ``question``; with ``options`` it is asked as multiple choice in MLVU's wording
        and ``Answer.choice_index`` holds the parsed option. ``stream`` receives text pieces.
        ``history``: earlier ``(question, answer)`` turns about the same video, oldest first, which the
        model sees before the question (the most recent that fit in :data:`MAX_HISTORY_CHARS`)."""
        answer = None
        for piece in self.ask_stream(video_or_memory, question, options, max_new_tokens, progress, history):
            if isinstance(piece, Answer):
                answer = piece
            elif stream is not None:
                stream(piece)
        return answer

    def ask_stream(self, video_or_memory, question: str, options: list[str] | None = None,
                   max_new_tokens: int | None = None, progress: ProgressFn | None = None,
                   history: list[tuple[str, str]] | None = None) -> Iterator[str | Answer]:
        """Yields text pieces as they are generated, then the final :class:`Answer` (see :meth:`ask`)."""
        prompt, prefix = self._question_text(question, options)
        turns = recent_turns(history)
        t0 = time.perf_counter()
        if isinstance(video_or_memory, VideoMemory):
            memory = video_or_memory
        else:
            memory = self.ingest(video_or_memory, progress=progress)
        t_ingest = time.perf_counter() - t0
        adapter, mc = self.adapter, self.config.memory
        t1 = time.perf_counter()
        q_ids = adapter.tokenize(adapter.prompt_conversation(turns, prompt, prefix))
        q_embeds = adapter.embed_ids(q_ids)
        _, budget = self._chains()
        context = None
        if budget is not None:
            # grids are scored against the question itself, not the chat template around it
            context = {"question": prompt, "question_embeds": adapter.embed_ids(adapter.tokenize(prompt)),
                       "video": memory.video.get("fingerprint")}
        ctx = recall(adapter, memory, q_embeds, mc, budget=budget, context=context)
        ids: list[int] = []
        emitted = ""
        limit = max_new_tokens or self.config.max_new_tokens
        # forward attends with each layer's own cache length, so uneven caches (ctx.uneven) need nothing more
        logits = adapter.forward(q_embeds, adapter.text_positions(len(q_ids), ctx.next_position), ctx.cache)
        ttft = time.perf_counter() - t1
        choice_index = None
        if options and self.config.choice == "likelihood":
            from vidqa.option_scoring import option_reply, reply_log_likelihoods

            replies = [option_reply(i, o) for i, o in enumerate(options)]
            scores = reply_log_likelihoods(adapter, logits, ctx.next_position + len(q_ids), ctx.cache, replies)
            choice_index = int(torch.argmax(scores))
            ttft = time.perf_counter() - t1  # the whole reply comes at once, after every option is scored
            text = replies[choice_index]
            ids = adapter.tokenize(text).tolist()
            yield text
        else:
            for token in adapter.generate(logits, ctx.next_position + len(q_ids), ctx.cache, limit):
                ids.append(token)
                text = adapter.decode_ids(ids)
                if len(text) > len(emitted) and not text.endswith("\ufffd"):
                    yield text[len(emitted):]
                    emitted = text
            text = adapter.decode_ids(ids)
            if len(text) > len(emitted):
                yield text[len(emitted):]
            if options:
                from vidqa.mcq import parse_choice

                choice_index = parse_choice(text, options)
        yield Answer(
            text=text, choice_index=choice_index,
            choice=chr(ord("A") + choice_index) if choice_index is not None else None,
            spans=ctx.spans,
            tokens={"visual_stored": memory.num_visual_tokens, "visual_attended": ctx.visual_attended,
                    "prompt": int(ctx.cache.layers[0].keys.shape[2]), "question": len(q_ids),
                    "generated": len(ids)},
            timings={"ingest": round(t_ingest, 4), "ttft": round(ttft, 4),
                     "total": round(time.perf_counter() - t0, 4)},
            blocks=list(ctx.blocks),
        )

    def _question_text(self, question: str, options: list[str] | None) -> tuple[str, str]:
        if not isinstance(question, str) or not question.strip():
            raise QuestionError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise QuestionError(f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}")
        if options is None:
            return question.strip(), ""
        if not 2 <= len(options) <= MAX_OPTIONS or not all(isinstance(o, str) and o.strip() for o in options):
            raise QuestionError(f"multiple choice needs 2 to {MAX_OPTIONS} non-empty options")
        from vidqa.mcq import MC_ANSWER_PREFIX, format_mc_question

        return format_mc_question(question.strip(), options), MC_ANSWER_PREFIX
