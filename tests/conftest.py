"""Shared fixtures: tiny random models are built once per session (they take ~1 s each)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Without a GPU, Triton kernels run in its interpreter (set before anything imports triton).
if not os.path.exists("/dev/nvidia0") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def qwen_adapter():
    from vidqa.vlm import load_adapter

    return load_adapter("tiny-random/qwen2_5_vl", device="cpu")


@pytest.fixture(scope="session")
def llava_adapter():
    from vidqa.vlm import load_adapter

    return load_adapter("tiny-random/llava_onevision", device="cpu")


@pytest.fixture(scope="module")
def synth_adapter():
    """A fresh (untrained) synth-tiny architecture with its tokenizer and processor, per module."""
    from vidqa.synth.model import build_model_and_processor
    from vidqa.vlm.qwen2_5_vl import Qwen2_5_VLAdapter

    model, processor = build_model_and_processor(seed=0)
    return Qwen2_5_VLAdapter(model, processor, "synth-tiny")
