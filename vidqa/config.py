"""Configuration dataclasses: one place for every knob, validated where it is set.

Precedence (applied by the CLI): defaults < config file (YAML/TOML) < environment (``VIDQA_*``)
< flags. ``VidqaConfig.ingest_key()`` is the part that decides what a saved memory contains: a
question-time knob never invalidates a memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from vidqa.errors import ConfigError


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class VideoConfig:
    """How frames are sampled. ``chunk_frames`` must be even (Qwen's 2-frame temporal patches)."""

    fps: float = 1.0
    num_frames: int | None = None
    max_frames: int = 14400  # 4 hours at 1 fps
    chunk_frames: int = 16
    max_pixels: int | None = None  # None: the adapter's processor default
    decoder: str = "auto"
    decode_workers: int | None = None  # decoders for sparse sampling; None: min(4, cores)
    # Chunks per vision-tower call (vidqa/encode_groups.py); exact, so not part of the ingest key.
    encode_chunks: int = 2

    def __post_init__(self):
        _check(self.fps > 0, f"fps must be positive, got {self.fps}")
        _check(self.num_frames is None or self.num_frames > 0, "num_frames must be positive")
        _check(self.max_frames > 0, f"max_frames must be positive, got {self.max_frames}")
        _check(self.chunk_frames >= 2 and self.chunk_frames % 2 == 0,
               f"chunk_frames must be an even number >= 2, got {self.chunk_frames}")
        _check(self.max_pixels is None or self.max_pixels >= 64, "max_pixels too small")
        _check(self.decoder in ("auto", "pyav", "decord"),
               f"decoder must be one of auto, pyav, decord; got {self.decoder!r}")
        _check(self.decode_workers is None or (isinstance(self.decode_workers, int)
                                               and not isinstance(self.decode_workers, bool) and self.decode_workers >= 1),
               f"decode_workers must be a positive integer, got {self.decode_workers!r}")
        _check(isinstance(self.encode_chunks, int) and not isinstance(self.encode_chunks, bool)
               and self.encode_chunks >= 1, f"encode_chunks must be a positive integer, got {self.encode_chunks!r}")


RETRIEVAL_SCORES = ("mass", "mean")


@dataclass
class MemoryConfig:
    """Streaming memory (ingest) and recall (per question).

    Ingest: each chunk attends to the sink prompt, ``recurrent_tokens`` summary tokens of older
    chunks and the last ``window_chunks`` chunks. Blocks (one per chunk) go to host memory, stored
    at ``kv_bits`` (16 = the model's dtype, 8/4 = group-wise quantized).

    Ask: blocks are scored against the question and the best kept within ``token_budget`` visual
    tokens (``recent_blocks`` newest and ``first_blocks`` oldest always in); then ``compress_ratio``
    of the retrieved visual KV is kept per layer (LOOK-M), the rest merged into kept entries. A
    ``budget`` reducer in ``VidqaConfig.reducers`` replaces the block choice (its total, at most
    ``token_budget``, is shared between the grids of the whole video by relevance, QuoTA).
    ``positions``: ``original`` keeps each block's ingest positions (ReKV); ``compact`` re-rotates the
    retrieved blocks so that they sit next to each other (InfLLM).
    ``retrieval``: how blocks are scored (:mod:`vidqa.memory.retrieve`): ``mass``, the attention the
    question's queries would pay each block's representatives (every grid's mean key and its
    ``distinct_keys`` most distinct keys, kept at ingest); ``mean``, the mean scaled dot product
    against each grid's mean key (ReKV). Either is computed from the queries of the last
    ``retrieval_window`` tokens of the question's prompt (0, the default: every token), e.g. 1 for
    the position that predicts the answer alone, as SnapKV (Li et al., 2024) reads what generation
    will attend to from the end of the prompt. Measured with the bundled model on six held-out hours
    (``bench/quality.py``, ``bench/retrieval_ranks.py``): from the answer position every counted
    appearance was in view for 17 of 24 count questions (every token: 2 of 24), yet the model counted
    no better and whole-video questions lost (anomaly 58% against 100%): M-Avg 49.0 against 56.1.
    ``answer_weight`` w blends the two: (1 - w) times a block's share of the window's attention mass
    plus w times its share of the answer position's (:func:`vidqa.memory.retrieve.blend_shares`). At
    w = 0.5, over twelve held-out hours on the H200, every counted appearance was in view for 58% of
    the count questions (default: 12%), count accuracy stayed where it was (42% against 44%), and
    M-Avg fell from 56.5 to 54.6 (``bench/results/quality_synth_tiny_h200.md``): the default is 0.
    """

    window_chunks: int = 2
    recurrent_tokens: int = 2  # per chunk leaving the window
    recurrent_capacity: int = 128
    kv_bits: int = 16
    group_size: int = 32
    token_budget: int = 8192
    recent_blocks: int = 1
    first_blocks: int = 0
    compress_ratio: float = 1.0
    observation_window: int = 8
    positions: str = "original"
    # In-LLM pruning (PyramidDrop): "8:0.5,16:0.25" keeps 50% of the retrieved visual entries from
    # layer 8 on and 25% from layer 16 on, the ones the question attends to most. Empty: off.
    layer_keep: str = ""
    retrieval: str = "mass"
    retrieval_window: int = 0  # last prompt tokens whose queries score the blocks; 0: all of them
    # Weight of the answer position's attention share in the block score (mass only): the score is
    # (1 - w) * the window's share + w * the answer position's share (memory.retrieve.blend_shares).
    answer_weight: float = 0.0
    distinct_keys: int = 2  # per grid, kept at ingest for retrieval

    def __post_init__(self):
        _check(self.window_chunks >= 0, "window_chunks must be >= 0")
        _check(self.retrieval in RETRIEVAL_SCORES, f"retrieval must be one of {RETRIEVAL_SCORES}, got {self.retrieval!r}")
        _check(isinstance(self.retrieval_window, int) and not isinstance(self.retrieval_window, bool)
               and self.retrieval_window >= 0, f"retrieval_window must be an integer >= 0, got {self.retrieval_window!r}")
        _check(isinstance(self.answer_weight, (int, float)) and not isinstance(self.answer_weight, bool)
               and 0.0 <= self.answer_weight <= 1.0, f"answer_weight must be in [0, 1], got {self.answer_weight!r}")
        _check(self.answer_weight == 0 or self.retrieval == "mass",
               f"answer_weight blends attention shares: it needs retrieval 'mass', not {self.retrieval!r}")
        _check(isinstance(self.distinct_keys, int) and 0 <= self.distinct_keys <= 64,
               f"distinct_keys must be an integer in [0, 64], got {self.distinct_keys!r}")
        _check(self.recurrent_tokens >= 0 and self.recurrent_capacity >= 0,
               "recurrent memory sizes must be >= 0")
        _check(self.kv_bits in (4, 8, 16), f"kv_bits must be 4, 8 or 16, got {self.kv_bits}")
        _check(self.group_size > 0, "group_size must be positive")
        _check(self.token_budget > 0, f"token_budget must be positive, got {self.token_budget}")
        _check(self.recent_blocks >= 0 and self.first_blocks >= 0, "block counts must be >= 0")
        _check(0 < self.compress_ratio <= 1, f"compress_ratio must be in (0, 1], got {self.compress_ratio}")
        _check(self.observation_window > 0, "observation_window must be positive")
        _check(self.positions in ("original", "compact"),
               f"positions must be 'original' or 'compact', got {self.positions!r}")
        self.layer_schedule()

    def layer_schedule(self) -> list[tuple[int, float]]:
        """``layer_keep`` parsed: ascending (first layer, keep ratio) pairs."""
        out = []
        for part in filter(None, (p.strip() for p in self.layer_keep.split(","))):
            try:
                layer, ratio = part.split(":")
                out.append((int(layer), float(ratio)))
            except ValueError as err:
                raise ConfigError(f"layer_keep entry {part!r} must be LAYER:RATIO, e.g. 8:0.5") from err
        _check(all(l >= 0 and 0 < r <= 1 for l, r in out), "layer_keep needs layers >= 0 and ratios in (0, 1]")
        _check([l for l, _ in out] == sorted({l for l, _ in out}), "layer_keep layers must increase")
        return out


INGEST_MEMORY_FIELDS = ("window_chunks", "recurrent_tokens", "recurrent_capacity", "kv_bits", "group_size",
                        "distinct_keys")


CHOICE_MODES = ("generate", "likelihood")


@dataclass
class VidqaConfig:
    """Everything a run needs besides the model name. ``reducers``: a chain spec such as
    ``"temporal:keep_ratio=0.5,tome:keep_ratio=0.5"`` (empty: no reduction)."""

    video: VideoConfig = field(default_factory=VideoConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    reducers: str = ""
    max_new_tokens: int = 64
    cache_dir: str | None = None  # None: ~/.cache/vidqa (VIDQA_CACHE_DIR overrides)
    # How a multiple-choice question is answered: "generate" (greedy reply, its letter parsed) or
    # "likelihood" (the option whose whole reply "B) text" is likeliest; vidqa/option_scoring.py).
    choice: str = "generate"

    def __post_init__(self):
        _check(self.max_new_tokens > 0, "max_new_tokens must be positive")
        _check(self.choice in CHOICE_MODES, f"choice must be one of {', '.join(CHOICE_MODES)}; got {self.choice!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VidqaConfig":
        data = dict(data)
        unknown = set(data) - {f.name for f in fields(cls)}
        _check(not unknown, f"unknown config keys: {sorted(unknown)}")
        video = _sub(VideoConfig, data.pop("video", {}) or {}, "video")
        memory = _sub(MemoryConfig, data.pop("memory", {}) or {}, "memory")
        return cls(video=video, memory=memory, **data)

    def ingest_key(self) -> str:
        """Hash of the settings that change what ingest stores (not question-time knobs)."""
        from vidqa.tokenreduce.base import agnostic_spec  # imports torch: on first use, not with the config

        agnostic = {
            "video": asdict(self.video),
            "memory": {k: getattr(self.memory, k) for k in INGEST_MEMORY_FIELDS},
            # only the reducers ingest runs: the question-aware budget is applied in ask
            "reducers": agnostic_spec(self.reducers),
        }
        agnostic["video"].pop("decoder")  # every backend returns the same frames,
        agnostic["video"].pop("decode_workers")  # and so does any number of parallel decoders
        agnostic["video"].pop("encode_chunks")  # and the tower encodes each chunk alike however grouped
        blob = json.dumps(agnostic, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _sub(cls, data: dict, name: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section {name!r} must be a mapping")
    unknown = set(data) - {f.name for f in fields(cls)}
    _check(not unknown, f"unknown keys in config section {name!r}: {sorted(unknown)}")
    return cls(**data)
