"""llm_fused: the decoder's fused forward computes what transformers' decoder does, and steps aside
wherever it must (hooks, autograd, transformers' own attention)."""

import copy

import pytest
import torch
from transformers import DynamicCache

from vidqa.vlm.llm_fused import fuse_language_model, is_fusable

from kernel_counts import count_kernel_calls


def _count_kernel_calls(monkeypatch) -> dict:
    from vidqa.vlm import llm_fused

    return count_kernel_calls(monkeypatch, llm_fused)


def _stock_copy(adapter):
    """A copy of ``adapter`` whose decoder keeps transformers' forward."""
    stock = copy.copy(adapter)
    stock.model = copy.deepcopy(adapter.model)
    stock.language_model.__dict__.pop("forward", None)
    stock._llm_fused = True  # VLMAdapter.forward must not install the fused forward on it
    return stock


def _prompt_and_step(adapter, seed=0):
    """Logits of a 23-token prefill at shifted M-RoPE/1-D positions, then of one decoded token over
    the cache it filled; with the cache's keys."""
    g = torch.Generator().manual_seed(seed)
    d = adapter.text_config.hidden_size
    embeds = torch.randn(23, d, generator=g)
    pos = adapter.text_positions(23, 5)
    pos[1:, 8:16] = pos[1:, 8:16] - 3  # visual-like positions: the axes differ
    cache = DynamicCache()
    first = adapter.forward(embeds, pos, cache, logits_for="all")
    step = adapter.forward(torch.randn(1, d, generator=g), adapter.text_positions(1, 40), cache)
    return first, step, torch.stack([layer.keys for layer in cache.layers])


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_fused_decoder_equals_stock_and_runs_one_kernel_per_step(family, qwen_adapter, llava_adapter, monkeypatch):
    adapter = qwen_adapter if family == "qwen" else llava_adapter
    stock = _stock_copy(adapter)
    ref_first, ref_step, ref_keys = _prompt_and_step(stock)
    counts = _count_kernel_calls(monkeypatch)
    assert counts == {"add_rms_norm": 0, "rotary_qk": 0, "silu_mul": 0}  # the stock path used none
    first, step, keys = _prompt_and_step(adapter)
    layers = adapter.num_layers
    assert adapter.language_model.__dict__.get("forward") is not None
    # two forwards: per layer two norms, one rotary, one gate; one final norm each
    assert counts == {"add_rms_norm": 2 * (2 * layers + 1), "rotary_qk": 2 * layers, "silu_mul": 2 * layers}
    torch.testing.assert_close(first, ref_first, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step, ref_step, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(keys, ref_keys, rtol=1e-6, atol=1e-6)


def test_layers_of_different_cache_lengths_attend_bottom_right(qwen_adapter):
    """In-LLM pruning leaves deeper layers fewer cached entries: each layer masks with its own length."""
    from vidqa.memory.cache import cache_from

    stock = _stock_copy(qwen_adapter)
    attn = qwen_adapter.attention_modules()[0]
    layers, hkv, dh = qwen_adapter.num_layers, attn.k_proj.out_features // attn.head_dim, attn.head_dim
    g = torch.Generator().manual_seed(1)
    keys = [torch.randn(hkv, 30 - 7 * i, dh, generator=g) for i in range(layers)]
    values = [torch.randn_like(k) for k in keys]
    embeds = torch.randn(4, qwen_adapter.text_config.hidden_size, generator=g)
    pos = qwen_adapter.text_positions(4, 31)
    got = qwen_adapter.forward(embeds, pos, cache_from(keys, values), logits_for="all")
    ref = stock.forward(embeds, pos, cache_from(keys, values), logits_for="all")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_hooks_autograd_and_transformers_attention_keep_the_stock_forward(qwen_adapter, monkeypatch):
    adapter = qwen_adapter
    adapter.forward(adapter.embed_ids(torch.tensor([1, 2])), adapter.text_positions(2, 0), DynamicCache())
    counts = _count_kernel_calls(monkeypatch)
    embeds = adapter.embed_ids(torch.tensor([3, 4, 5]))
    pos = adapter.text_positions(3, 0)
    # retrieval's query capture hooks every attention module: the stock layers must run for it
    with adapter.capture_queries() as queries:
        adapter.forward(embeds, pos, DynamicCache(), logits_for="hidden")
    assert all(q is not None for q in queries)
    assert counts["rotary_qk"] == 0
    # transformers' own attention (a native generate on the same model): stock
    lm = adapter.language_model
    with torch.no_grad():
        lm(inputs_embeds=embeds[None], position_ids=pos[:, None], past_key_values=DynamicCache(), use_cache=True)
    assert counts["rotary_qk"] == 0
    # autograd (training): stock, and gradients reach the weights
    from vidqa.memory.attention import bottom_right_attention

    with bottom_right_attention(adapter):
        out = lm(inputs_embeds=embeds[None].detach(), position_ids=pos[:, None], use_cache=False)
    out.last_hidden_state.sum().backward()
    assert counts["rotary_qk"] == 0
    assert lm.layers[0].mlp.up_proj.weight.grad is not None
    adapter.model.zero_grad(set_to_none=True)
    # and the fused path is back once nothing stands in its way
    adapter.forward(embeds, pos, DynamicCache())
    assert counts["rotary_qk"] == adapter.num_layers


def test_fuse_is_idempotent_and_declines_other_decoders(qwen_adapter):
    lm = qwen_adapter.language_model
    assert fuse_language_model(lm) and fuse_language_model(lm)
    bound = lm.__dict__["forward"]
    fuse_language_model(lm)
    assert lm.__dict__["forward"] is bound
    odd = copy.deepcopy(lm)
    odd.config.hidden_act = "gelu"
    assert not is_fusable(odd)
    odd = copy.deepcopy(lm)
    del odd.layers[0].post_attention_layernorm
    assert not is_fusable(odd)
