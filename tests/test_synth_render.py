"""Rendering promises: a pure function of (timeline, t) that shows the script, fast enough to train on."""

import dataclasses
import time

import numpy as np
import pytest

from vidqa.errors import ConfigError
from vidqa.synth import make_timeline, render_frame, vocab
from vidqa.synth.render import card_box, object_centre
from vidqa.synth.textures import background
from vidqa.synth.world import Anomaly, Appearance, Card, Scene, Timeline


def _world(**kw):
    """A hand-written script: one scene, one object crossing, one card, one anomaly."""
    base = dict(seed=3, duration=60.0, scenes=[Scene("forest", 0, 30, "stripes"), Scene("snow", 30, 60, "dots")],
                objects=[Appearance("circle", "red", "large", 10, 20, 0.1, 0.7, 0.9, 0.7)],
                cards=[Card("tiger", 22, 26)], anomalies=[Anomaly("inverted", 50, 53)])
    base.update(kw)
    return Timeline(**base)


def _nearest_colour(pixel):
    return min(vocab.COLOURS, key=lambda c: np.abs(np.array(vocab.COLOURS[c]) - pixel.astype(int)).sum())


def test_pure_function_of_time_with_deterministic_noise():
    tl = make_timeline(5, 300)
    a = render_frame(tl, 10.0, 112, 112)
    assert a.dtype == np.uint8 and a.shape == (112, 112, 3)
    assert np.array_equal(render_frame(tl, 10.0, 112, 112), a)
    assert np.array_equal(render_frame(make_timeline(5, 300), 10.0, 112, 112), a)  # a fresh, equal timeline
    # Same script, other seed: the noise differs, and only by the noise amplitude.
    other = render_frame(dataclasses.replace(tl, seed=6), 10.0, 112, 112)
    diff = np.abs(other.astype(int) - a.astype(int))
    assert diff.max() <= 2 * tl.noise and diff.mean() > 1


def test_consecutive_frames_similar_but_not_identical():
    tl = make_timeline(5, 300)
    for t in (10.0, 100.0, 200.0):
        if tl.scene_at(t) is not tl.scene_at(t + 1) or tl.anomaly_at(t) or tl.anomaly_at(t + 1):
            continue
        a, b = render_frame(tl, t, 224, 126).astype(int), render_frame(tl, t + 1, 224, 126).astype(int)
        assert 0.5 < np.abs(a - b).mean() < 40


def test_backgrounds_are_textured_and_distinct():
    means = {}
    for name, (_, _, kind) in vocab.SCENES.items():
        bg = background(Scene(name, 0, 10, kind), 0.0, (0.8, 0.0), 112, 112)
        assert bg.shape == (112, 112, 3) and bg.std(axis=(0, 1)).max() > 10  # not flat
        means[name] = bg.mean(axis=(0, 1))
    names = list(means)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(means[a] - means[b]).max() > 15, (a, b)
    # The camera pan moves the texture.
    s = Scene("city", 0, 10, "checker")
    assert not np.array_equal(background(s, 0.0, (0.8, 0.0), 112, 112), background(s, 20.0, (0.8, 0.0), 112, 112))


@pytest.mark.parametrize("shape", vocab.SHAPES)
@pytest.mark.parametrize("colour", vocab.COLOURS)
def test_object_pixels_have_the_object_colour(shape, colour):
    tl = _world(objects=[Appearance(shape, colour, "small", 10, 20, 0.1, 0.7, 0.9, 0.5)])
    for t in (11.0, 15.0, 19.0):
        frame = render_frame(tl, t, 112, 112)
        x, y = object_centre(tl.objects[0], t, 112, 112)
        assert _nearest_colour(frame[y, x]) == colour
        # The object's own colour, not the background's: without the object the pixel is elsewhere.
        bare = render_frame(_world(objects=[]), t, 112, 112)
        assert np.abs(frame[y, x].astype(int) - vocab.COLOURS[colour]).max() <= 2 * tl.noise + 2
        assert np.abs(bare[y, x].astype(int) - vocab.COLOURS[colour]).max() > 2 * tl.noise + 2


def test_object_moves_along_its_path_and_leaves():
    tl = _world()
    o = tl.objects[0]
    xs = []
    for t in (10.5, 15.0, 19.5):
        frame = render_frame(tl, t, 224, 126)
        red = (np.abs(frame.astype(int) - vocab.COLOURS["red"]).sum(axis=2) < 60)
        assert red.sum() > 0.6 * np.pi * (vocab.SIZES["large"] * 126) ** 2
        xs.append(np.nonzero(red)[1].mean() / 224)
        assert abs(xs[-1] - o.centre(t)[0]) < 0.03
    assert xs == sorted(xs)  # left to right
    red_after = (np.abs(render_frame(tl, 21.0, 224, 126).astype(int) - vocab.COLOURS["red"]).sum(axis=2) < 60)
    assert red_after.sum() < 20


def test_card_shows_bold_text_in_its_band():
    tl = _world()
    top, left, bottom, right = card_box(224, 126)
    on, off = render_frame(tl, 24.0, 224, 126), render_frame(tl, 27.0, 224, 126)
    band = on[top:bottom, left:right].astype(int).mean(axis=2)
    white, black = (band > 200).mean(), (band < 60).mean()
    assert white > 0.5 and black > 0.08  # a white card with a lot of ink
    assert (off[top:bottom, left:right].astype(int).mean(axis=2) > 200).mean() < 0.3
    # Different words look different.
    other = render_frame(_world(cards=[Card("piano", 22, 26)]), 24.0, 224, 126)
    assert np.abs(other.astype(int) - on.astype(int))[top:bottom].mean() > 10


@pytest.mark.parametrize("kind", vocab.ANOMALIES)
def test_anomalies_change_the_whole_frame(kind):
    plain = _world(anomalies=[], cards=[Card("tiger", 49, 54)])
    odd = _world(anomalies=[Anomaly(kind, 50, 53)], cards=[Card("tiger", 49, 54)])
    a, b = render_frame(plain, 51.0, 112, 112).astype(int), render_frame(odd, 51.0, 112, 112).astype(int)
    if kind == "upside_down":
        assert np.array_equal(b, a[::-1])
    elif kind == "inverted":
        assert np.array_equal(b, 255 - a)
    elif kind == "blackout":
        assert b.max() <= 26
    else:
        assert abs(b.mean() - 127) < 10 and np.abs(b - a).mean() > 40
    assert np.array_equal(render_frame(odd, 54.0, 112, 112), render_frame(plain, 54.0, 112, 112))


def test_render_rejects_tiny_frames():
    with pytest.raises(ConfigError):
        render_frame(_world(), 1.0, 4, 4)


def _frames_per_cpu_second(tl, width, height, n):
    best = 0.0
    for _ in range(3):
        t0 = time.process_time()
        for i in range(n):
            render_frame(tl, 3.7 * i, width, height)
        best = max(best, n / max(time.process_time() - t0, 1e-9))
    return best


def test_render_speed():
    """>= 200 frames/s at 112x112 and >= 30 at 448x448 on one core (CPU time, not wall time)."""
    tl = make_timeline(8, 3 * 3600)
    assert _frames_per_cpu_second(tl, 112, 112, 100) >= 200
    assert _frames_per_cpu_second(tl, 448, 448, 20) >= 30
