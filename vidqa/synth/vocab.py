"""The closed vocabulary of the synthetic world: every word a question, answer or caption can use.

Kept small and visually distinct so that a tiny vision model trained from scratch can perceive it
at 112x112 (the bundled model's tokenizer is built over these words, see ``all_words``):

* six scenes, each a pair of far-apart colours and its own texture;
* eight saturated colours, far apart in RGB;
* two *common* shapes that come and go all the time, three *rare* shapes (the needles), each shown
  once per video, two sizes (radius 10% or 20% of the frame's shorter side);
* sixteen card words (nouns and number words), drawn big and bold on white cards;
* four anomalies that are visible in a single frame.
"""

SCENES = {  # name -> (colour A, colour B, texture kind); the texture kinds are drawn in textures.py
    "beach": ((236, 214, 160), (90, 170, 220), "waves"),
    "forest": ((34, 110, 50), (90, 60, 30), "stripes"),
    "city": ((120, 120, 130), (200, 200, 210), "checker"),
    "desert": ((220, 170, 90), (180, 120, 60), "dunes"),
    "snow": ((235, 240, 250), (170, 190, 220), "dots"),
    "night": ((20, 20, 60), (80, 80, 140), "dots"),
}

COLOURS = {
    "red": (225, 30, 30), "green": (30, 200, 60), "blue": (40, 70, 230), "yellow": (245, 225, 30),
    "purple": (150, 40, 200), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (10, 10, 10),
}

# Common objects come and go often; each rare shape (a "needle") is shown once per video.
COMMON_SHAPES = ["circle", "square"]
RARE_SHAPES = ["triangle", "diamond", "cross"]
SHAPES = COMMON_SHAPES + RARE_SHAPES
SIZES = {"small": 0.10, "large": 0.20}  # radius as a fraction of the frame's shorter side

CARD_WORDS = ["apple", "river", "tiger", "piano", "rocket", "garden", "castle", "violin",
              "seven", "twelve", "forty", "ninety", "cloud", "bridge", "candle", "dragon"]

# Each kind changes the whole frame, so one frame shows it (an upside-down picture always has a
# card on screen, which makes the flip visible on symmetric textures).
ANOMALIES = {
    "upside_down": "the picture turned upside down",
    "inverted": "the colours were inverted",
    "blackout": "the screen went dark",
    "static": "the screen filled with static",
}

# Words that `describe` adds around the vocabulary above.
CAPTION_WORDS = ["a", "scene", "then", "moves", "from", "left", "to", "right", "card", "shows", "the", "word"]


def all_words() -> list[str]:
    """Every word the world's names, anomaly sentences and captions use, sorted and unique."""
    words = set(SCENES) | set(COLOURS) | set(SHAPES) | set(SIZES) | set(CARD_WORDS) | set(CAPTION_WORDS)
    for sentence in ANOMALIES.values():
        words.update(sentence.split())
    return sorted(words)
