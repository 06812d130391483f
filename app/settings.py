"""Resolving settings for the front doors: defaults < config file < environment < flags.

A config file is YAML (``.yaml``/``.yml``) or TOML (``.toml``) with the shape of
:class:`~vidqa.config.VidqaConfig` plus ``model`` and ``device``::

    model: Qwen/Qwen2.5-VL-7B-Instruct
    video: {fps: 0.5, max_frames: 3600}
    memory: {token_budget: 6144, kv_bits: 8}
    reducers: "temporal:keep_ratio=0.5"

Environment variables: ``VIDQA_CONFIG`` (the file), ``VIDQA_MODEL``, ``VIDQA_DEVICE``,
``VIDQA_FPS``, ``VIDQA_MAX_FRAMES``, ``VIDQA_REDUCERS``, ``VIDQA_TOKEN_BUDGET``, ``VIDQA_KV_BITS``,
``VIDQA_DECODER``, ``VIDQA_CACHE_DIR``, ``VIDQA_CHOICE``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from vidqa.config import VidqaConfig
from vidqa.errors import ConfigError

# env var -> (section or None, key, type)
ENV_SETTINGS = {
    "VIDQA_MODEL": (None, "model", str),
    "VIDQA_DEVICE": (None, "device", str),
    "VIDQA_FPS": ("video", "fps", float),
    "VIDQA_MAX_FRAMES": ("video", "max_frames", int),
    "VIDQA_DECODER": ("video", "decoder", str),
    "VIDQA_DECODE_WORKERS": ("video", "decode_workers", int),
    "VIDQA_REDUCERS": (None, "reducers", str),
    "VIDQA_TOKEN_BUDGET": ("memory", "token_budget", int),
    "VIDQA_KV_BITS": ("memory", "kv_bits", int),
    "VIDQA_CACHE_DIR": (None, "cache_dir", str),
    "VIDQA_CHOICE": (None, "choice", str),
}

# flag dest -> (section or None, key)
FLAG_SETTINGS = {
    "model": (None, "model"), "device": (None, "device"), "fps": ("video", "fps"),
    "max_frames": ("video", "max_frames"), "num_frames": ("video", "num_frames"),
    "chunk_frames": ("video", "chunk_frames"), "max_pixels": ("video", "max_pixels"),
    "decoder": ("video", "decoder"), "decode_workers": ("video", "decode_workers"), "reducers": (None, "reducers"),
    "token_budget": ("memory", "token_budget"), "window_chunks": ("memory", "window_chunks"),
    "kv_bits": ("memory", "kv_bits"), "compress_ratio": ("memory", "compress_ratio"),
    "positions": ("memory", "positions"), "layer_keep": ("memory", "layer_keep"),
    "retrieval": ("memory", "retrieval"), "retrieval_window": ("memory", "retrieval_window"),
    "answer_weight": ("memory", "answer_weight"),
    "max_new_tokens": (None, "max_new_tokens"),
    "choice": (None, "choice"),
    "cache_dir": (None, "cache_dir"),
}


@dataclass
class Settings:
    model: str | None
    device: str | None
    config: VidqaConfig


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as err:  # parser errors of both libraries, reported as one line
        raise ConfigError(f"config file {path} is not valid: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    return data


def _put(data: dict, section, key, value) -> None:
    if section is None:
        data[key] = value
    else:
        data.setdefault(section, {})[key] = value


def resolve(flags: dict | None = None, environ: dict | None = None) -> Settings:
    """Merges the four layers; ``flags`` maps FLAG_SETTINGS names to values (None = not given)."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    data: dict = {}
    config_file = flags.get("config") or environ.get("VIDQA_CONFIG")
    if config_file:
        data = read_config_file(config_file)
    for var, (section, key, kind) in ENV_SETTINGS.items():
        if environ.get(var):
            try:
                _put(data, section, key, kind(environ[var]))
            except ValueError as err:
                raise ConfigError(f"environment variable {var}={environ[var]!r} is not a valid {kind.__name__}") from err
    for dest, (section, key) in FLAG_SETTINGS.items():
        if flags.get(dest) is not None:
            _put(data, section, key, flags[dest])
    model, device = data.pop("model", None), data.pop("device", None)
    return Settings(model=model, device=device, config=VidqaConfig.from_dict(data))
