"""The per-token labels of the synthetic trainer's dense loss: what each merged cell shows, in the
order the processor lays visual tokens out, and a probe that learns from them."""

import numpy as np
import torch

from vidqa.synth import vocab
from vidqa.synth.timeline import make_timeline
from vidqa.synth.token_labels import CLASSES, IGNORE, token_labels
from vidqa.synth.train import TokenProbe, patchify, to_model_frames
from vidqa.synth.train_data import DENSE, TOKEN_GRID, make_clip


def _object_frames(tl):
    """(grid, object, frame time) for every frame an object shows in, away from anomalies."""
    for t in range(int(tl.duration)):
        if tl.anomaly_at(float(t)) is None and tl.anomaly_at(float(t // 2 * 2 + (1 - t % 2))) is None:
            for o in tl.objects_at(float(t)):
                yield t // 2, o, float(t)


def test_labels_mark_the_object_at_its_centre_cell_and_the_card_band():
    tl = make_timeline(3, 48, **DENSE)
    labels = token_labels(tl, np.arange(48.0), *TOKEN_GRID)
    assert labels.shape == (24, 4, 8, 3)
    seen = 0
    for g, o, t in _object_frames(tl):
        fx, fy = o.centre(t)
        cell = labels[g, int(fy * 4), int(fx * 8)]
        assert vocab.SHAPES[cell[0] - 1] == o.shape and list(vocab.COLOURS)[cell[1] - 1] == o.colour
        seen += 1
    assert seen > 10
    for g in range(24):
        if labels[g, 0, 0, 0] == IGNORE:
            assert any(tl.anomaly_at(float(t)) for t in (2 * g, 2 * g + 1))
            continue
        card = tl.card_at(2.0 * g) or tl.card_at(2.0 * g + 1)
        word = labels[g, 0, 1:7, 2]
        assert (word == (vocab.CARD_WORDS.index(card.word) + 1 if card else 0)).all()
        assert (labels[g, 1:, :, 2] == 0).all() and (labels[g, :, [0, 7], 2] == 0).all()
        assert labels[g, ..., :2].max() < max(CLASSES["shape"], CLASSES["colour"])


def test_labelled_cells_are_the_processors_tokens_that_show_the_object():
    """Cell (row, col) of grid g is visual token g*32 + row*8 + col in the processor's patch order:
    the four patches of that token hold pixels of the object's colour."""
    frames, _, _, labels = make_clip(11, 2, 0.0)
    from vidqa.synth.model import build_model_and_processor

    _, processor = build_model_and_processor()
    vp = processor.video_processor
    patches = patchify(to_model_frames(torch.from_numpy(frames[None])), processor)  # [N, 3*2*14*14]
    pixels = patches.view(-1, 4, 3, 2, 14, 14)  # merged token, patch in merge, channel, frame, row, col
    mean, std = torch.tensor(vp.image_mean).view(1, 3, 1, 1, 1), torch.tensor(vp.image_std).view(1, 3, 1, 1, 1)
    rgb = ((pixels * std + mean) / vp.rescale_factor).permute(0, 1, 3, 4, 5, 2)  # [tokens, 4, 2, 14, 14, 3]
    checked = 0
    for g, r, c in zip(*np.nonzero(labels[..., 1] > 0)):
        colour = torch.tensor(vocab.COLOURS[list(vocab.COLOURS)[labels[g, r, c, 1] - 1]], dtype=torch.float32)
        token = rgb[g * 32 + r * 8 + c]
        assert bool(((token - colour).abs().max(dim=-1).values < 40).any()), (g, r, c)
        checked += 1
    assert checked > 5


def test_probe_learns_the_labels_of_fixed_tokens():
    """A few AdamW steps on fixed random tokens whose labels are a function of them lower the loss;
    ignored cells do not count; accuracy is only reported when asked."""
    g = torch.Generator().manual_seed(0)
    visual = torch.randn(2, 32, 16, generator=g)
    labels = torch.stack([(visual[..., k] > 0).long() * (k + 1) for k in range(3)], dim=-1).view(2, 1, 4, 8, 3)
    labels[1] = IGNORE
    probe = TokenProbe(16)
    opt = torch.optim.AdamW(probe.parameters(), lr=0.05)
    first, acc = probe(visual, labels)
    assert acc == {}
    for _ in range(60):
        loss, _ = probe(visual, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, acc = probe(visual, labels, accuracy=True)
    assert float(last.detach()) < 0.3 * float(first.detach()) and min(acc.values()) > 0.9
