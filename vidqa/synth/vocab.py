"""The closed vocabulary of the synthetic world: every name a question or caption can use.

Kept small and visually distinct so that a tiny vision model trained from scratch can perceive it
(the bundled model's tokenizer is built over these words).
"""

SCENES = {  # name -> (colour A, colour B, texture)
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

# Regular objects come and go often; rare shapes are the "needles", each shown exactly once.
COMMON_SHAPES = ["circle", "square"]
RARE_SHAPES = ["triangle", "diamond", "cross"]
SHAPES = COMMON_SHAPES + RARE_SHAPES
SIZES = {"small": 0.10, "large": 0.20}  # radius as a fraction of the frame's shorter side

CARD_WORDS = ["apple", "river", "tiger", "piano", "rocket", "garden", "castle", "violin",
              "seven", "twelve", "forty", "ninety", "cloud", "bridge", "candle", "dragon"]

ANOMALIES = {
    "upside_down": "the picture turned upside down",
    "inverted": "the colours were inverted",
    "blackout": "the screen went dark",
    "mirror": "the picture was mirrored left to right",
}
