"""Multiple choice by likelihood: the reply is the option whose whole reply the model finds likeliest.

Greedy decoding after MLVU's ``Best Option: (`` picks the letter first and writes the option's text
after it, and nothing ties the two together: the bundled model, asked to count over an hour, replied
``"B) 5"`` when option B was ``6`` and option C was ``5``. Its letter and its text disagreed on 18 of
24 count questions at an hour; the letter alone was right for 10 and one of the two for 15
(``bench/results/quality_synth_tiny_v2_questions.md``). Scoring each option's full reply ``"B) 6"`` (letter,
bracket and text) by its log-likelihood under the model and taking the best is decoding constrained to
the valid replies, each scored as a whole: the cloze and the letter readings of a multiple-choice
question (Robinson et al., 2023, "Leveraging Large Language Models for Multiple Choice Question
Answering") in one score, as evaluation harnesses score options by their likelihood (Brown et al.,
2020, GPT-3's multiple-choice evaluation; Gao et al., lm-evaluation-harness). The replies are scored
one after another on the question's KV cache, which is cut back to its length after each, so that
the memory a reply needs is that of greedy decoding.
"""

from __future__ import annotations

import torch

from vidqa.mcq import letter


def option_reply(index: int, option: str) -> str:
    """The reply that picks option ``index``, in the form MLVU's scorer reads: ``"B) green"``."""
    return f"{letter(index)}) {str(option).strip()}"


def truncate_cache(cache, lengths: list[int]) -> None:
    """Cuts every layer of ``cache`` back to its length in ``lengths`` (per layer: in-LLM pruning
    leaves layers of different lengths)."""
    for layer, n in zip(cache.layers, lengths):
        layer.keys = layer.keys[..., :n, :]
        layer.values = layer.values[..., :n, :]


def reply_log_likelihoods(adapter, first_logits: torch.Tensor, next_position: int, cache,
                          replies: list[str]) -> torch.Tensor:
    """Log-likelihoods ``[len(replies)]`` (float32, summed over each reply's tokens) of each reply
    continuing the prompt whose last logits are ``first_logits`` ``[V]`` and whose KV is ``cache``
    (the reply's first token goes at ``next_position``). ``cache`` is the same length afterwards."""
    lengths = [int(layer.keys.shape[-2]) for layer in cache.layers]
    first = torch.log_softmax(first_logits.float(), dim=-1)
    scores = []
    for reply in replies:
        ids = adapter.tokenize(reply)
        if len(ids) == 0:
            raise ValueError(f"the reply {reply!r} has no tokens")
        score = first[int(ids[0])]
        if len(ids) > 1:
            # the reply's tokens after the first, each predicted from the ones before it
            logits = adapter.forward(adapter.embed_ids(ids[:-1]), adapter.text_positions(len(ids) - 1, next_position),
                                     cache, logits_for="all")
            logp = torch.log_softmax(logits.float(), dim=-1)
            score = score + logp.gather(1, ids[1:].to(logp.device)[:, None]).sum()
            truncate_cache(cache, lengths)
        scores.append(score.cpu())
    return torch.stack(scores)
