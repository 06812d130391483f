"""Model loading: names -> adapters.

A model name is one of

* ``tiny-random/qwen2_5_vl`` or ``tiny-random/llava_onevision`` -- built in memory (tests, smoke runs);
* ``synth-tiny`` -- the bundled model trained on the synthetic world (``assets/models/synth-tiny``);
* a local directory saved with ``save_pretrained``;
* a Hugging Face hub id such as ``Qwen/Qwen2.5-VL-3B-Instruct`` (downloaded by transformers unless
  ``HF_HUB_OFFLINE=1``, in which case only the local HF cache is used).

Every failure becomes one :class:`~vidqa.errors.ModelError` line naming the model and how to pass a
local copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from vidqa.errors import ModelError

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
TINY_PREFIX = "tiny-random/"
BUNDLED = {"synth-tiny": "models/synth-tiny"}

# model_type of a config -> adapter family
FAMILY_OF_MODEL_TYPE = {
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen2_vl": "qwen2_5_vl",
    "llava_onevision": "llava_onevision",
}


def assets_dir() -> Path:
    """The repository's ``assets/`` folder (``VIDQA_ASSETS`` overrides)."""
    env = os.environ.get("VIDQA_ASSETS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "assets"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """bf16 on CUDA (what the checkpoints are trained in), fp32 on CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def adapter_class(family: str):
    if family == "qwen2_5_vl":
        from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter

        return Qwen2_5_VLAdapter
    if family == "llava_onevision":
        from vidqa.vlm.llava_onevision import LlavaOnevisionAdapter

        return LlavaOnevisionAdapter
    raise ModelError(f"no adapter for model family {family!r}; supported: {sorted(set(FAMILY_OF_MODEL_TYPE.values()))}")


def resolve_model_path(name: str) -> str:
    """Maps bundled names to their folder; leaves hub ids and local paths as they are."""
    if name in BUNDLED:
        path = assets_dir() / BUNDLED[name]
        if not (path / "config.json").exists():
            raise ModelError(f"bundled model {name!r} is missing from {path}")
        return str(path)
    return name


def load_adapter(name: str, device: str | None = None, dtype: torch.dtype | None = None,
                 device_map: str | None = None):
    """Loads ``name`` (see module docstring) and wraps it in its family's adapter."""
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    if name.startswith(TINY_PREFIX):
        from vidqa.vlm.tiny import tiny_random

        family = name[len(TINY_PREFIX):]
        model, processor = tiny_random(family)
        return adapter_class(family)(model.to(device=device, dtype=dtype), processor, name)

    path = resolve_model_path(name)
    family = _family_of(path, name)
    model_cls, processor_cls = _hf_classes(family, path)
    local_only = os.path.isdir(path) or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        processor = processor_cls.from_pretrained(path, local_files_only=local_only)
        kwargs = dict(dtype=dtype, local_files_only=local_only)
        if device_map:  # several GPUs: accelerate places the layers
            kwargs["device_map"] = device_map
        model = model_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(_load_failure(name, err)) from err
    if not device_map:
        model = model.to(device)
    adapter = adapter_class(family)(model, processor, name)
    adapter.weights_id = weights_fingerprint(path) if os.path.isdir(path) else \
        str(getattr(model.config, "_commit_hash", None) or "")
    return adapter


SMALL_WEIGHTS = 64 << 20  # weight files up to this size are hashed whole; larger ones by size and mtime


def weights_fingerprint(folder: str | Path) -> str:
    """What identifies the weights in a local model folder, so that memories ingested with other
    weights under the same name (a retrained bundled model, a folder overwritten) are not reused:
    ``config.json`` and each weight file -- its bytes when small (the bundled model: 11 ms, median of 5 here), its
    size and modification time when large (hashing 16 GB at every start would cost more than it
    saves). A hub model is identified by its snapshot's commit instead (``load_adapter``)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.name != "config.json" and f.suffix not in (".safetensors", ".bin"):
            continue
        h.update(f.name.encode())
        stat = f.stat()
        if stat.st_size <= SMALL_WEIGHTS:
            h.update(f.read_bytes())
        else:
            h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _family_of(path: str, name: str) -> str:
    from transformers import AutoConfig

    local_only = os.path.isdir(path) or os.environ.get("HF_HUB_OFFLINE") == "1"
    if not os.path.isdir(path) and ("/" not in name or name.startswith((".", "/", "~"))):
        raise ModelError(
            f"unknown model {name!r}: not a local directory, a hub id (owner/name), 'synth-tiny' "
            f"or tiny-random/<family>"
        )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=local_only)
    except (OSError, ValueError) as err:
        raise ModelError(_load_failure(name, err)) from err
    family = FAMILY_OF_MODEL_TYPE.get(config.model_type)
    if family is None:
        raise ModelError(
            f"model {name!r} is a {config.model_type!r}; vidqa supports {sorted(FAMILY_OF_MODEL_TYPE)}"
        )
    return family


def _hf_classes(family: str, path: str):
    import transformers

    if family == "qwen2_5_vl":
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(path, local_files_only=os.path.isdir(path)).model_type
        if model_type == "qwen2_vl":
            return transformers.Qwen2VLForConditionalGeneration, transformers.AutoProcessor
        return transformers.Qwen2_5_VLForConditionalGeneration, transformers.AutoProcessor
    return transformers.LlavaOnevisionForConditionalGeneration, transformers.AutoProcessor


def _load_failure(name: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = ("HF_HUB_OFFLINE=1 is set and no local copy was found" if offline
            else "it could not be found locally or downloaded")
    return (f"cannot load model {name!r}: {hint} ({first[:160]}); download it elsewhere and pass "
            f"its folder with --model /path/to/model")
