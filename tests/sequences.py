"""The one-shot reference sequence the adapters and the memory are tested against."""

import torch


def one_shot_sequence(adapter, chunks, question: str):
    """Embeds ``[L, D]`` and positions ``[P, L]`` of prompt prefix, every chunk (opening text, visual
    tokens, closing text and any closing embeddings) and the question, laid out by ``adapter`` --
    what streaming ingest + recall must reproduce. ``chunks``: unreduced ``VisualTokens``."""
    embeds, positions, pos = [], [], 0

    def add(e, n=None):
        nonlocal pos
        n = e.shape[0] if n is None else n
        embeds.append(e)
        positions.append(adapter.text_positions(n, pos))
        pos += n

    def text(t):
        add(adapter.embed_ids(adapter.tokenize(t)))

    text(adapter.prompt_prefix())
    for tokens in chunks:
        layout = adapter.chunk_layout(tokens)
        text(adapter.chunk_open(layout.t0))
        embeds.append(tokens.embeds)
        positions.append(adapter.visual_positions(tokens, layout, pos))
        pos += layout.extent
        text(adapter.chunk_close())
        extra = adapter.chunk_close_embeds()
        if extra is not None:
            add(extra)
    text(adapter.prompt_question(question))
    return torch.cat(embeds), torch.cat(positions, dim=1)
