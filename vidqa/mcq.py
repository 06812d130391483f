"""Multiple-choice questions in MLVU's official wording, and a robust reader of the reply.

Model-agnostic: :class:`~vidqa.pipeline.VideoQA` builds every multiple-choice prompt here and
parses every reply here, whichever model family answers. MLVU (Zhou et al., 2024, "MLVU: A
Comprehensive Benchmark for Multi-Task Long Video Understanding"; ``JUNJIE99/MLVU``) asks::

    Question: <question>
    Options:
    (A) <option>
    (B) <option>
    Only give the best option.

and begins the assistant's answer with ``Best Option: (``, so the reply is usually ``"B) ..."``:
the official scorer takes the text before the first ``)`` as the letter. Small or untuned
models wander, so :func:`parse_choice` also accepts, in this order of trust: the official
form, ``(B)`` / ``Option B`` / ``Answer: B`` anywhere, a reply that is only a letter (``b.``,
``B:``, ``B. text``), and finally the text of one option (whole words, longest first). A leading
capital followed by a word (``"A man walks"``) is not taken for a letter.
"""

from __future__ import annotations

import re

MC_ANSWER_PREFIX = "Best Option: ("
MC_INSTRUCTION = "Only give the best option."
MAX_LETTERS = 26

_OFFICIAL = re.compile(r"^\(?\s*([A-Za-z])\s*\)")
_NAMED = re.compile(r"(?:\bbest\s+option|\boption|\banswer(?:\s+is)?)\s*[:\-]?\s*\(?\s*([A-Za-z])\b(?!['’])(\s*\S?)",
                    re.IGNORECASE)
_PARENTHESISED = re.compile(r"\(\s*([A-Za-z])\s*\)")
_LONE = re.compile(r"^\(?\s*([A-Za-z])\s*(?:[.,:;)]\s*)?$")
_LETTER_THEN_PUNCT = re.compile(r"^([A-Z])\s*[.:]\s+\S")


def letter(i: int) -> str:
    """``0 -> "A"``, ``1 -> "B"``, ... (at most 26 options)."""
    if not 0 <= i < MAX_LETTERS:
        raise ValueError(f"option index {i} is outside A-Z")
    return chr(ord("A") + i)


def format_mc_question(question: str, options: list[str]) -> str:
    """The question and lettered options in MLVU's wording (the answer prefix is separate)."""
    lines = [f"Question: {str(question).strip()}", "Options:"]
    lines += [f"({letter(i)}) {str(o).strip()}" for i, o in enumerate(options)]
    lines.append(MC_INSTRUCTION)
    return "\n".join(lines)


def parse_choice(text: str, options: list[str]) -> int | None:
    """Index of the chosen option in ``options``, or None when the reply names none.

    ``text`` is what the model generated after :data:`MC_ANSWER_PREFIX` (usually ``"B) ..."``)
    or a whole free-form reply. Never raises on any string.
    """
    n = min(len(options), MAX_LETTERS)
    t = (text or "").strip()
    if not t or n == 0:
        return None

    def index(ch: str) -> int | None:
        i = ord(ch.upper()) - ord("A")
        return i if 0 <= i < n else None

    # 1. MLVU's own reading: the letter right before the first ")" ("B)", "(B)", "b )").
    m = _OFFICIAL.match(t)
    if m:
        return index(m.group(1))
    # 2. A letter that is named as such: "Best Option: (C", "option a.", "The answer is B", "(b)".
    for m in _NAMED.finditer(t):
        if index(m.group(1)) is not None and _stands_alone(m.group(1), m.group(2)):
            return index(m.group(1))
    m = _PARENTHESISED.search(t)
    if m and index(m.group(1)) is not None:
        return index(m.group(1))
    # 3. Nothing but a letter ("D", "b.", "(C", "B:"), or "B. blue car".
    for pattern in (_LONE, _LETTER_THEN_PUNCT):
        m = pattern.match(t)
        if m:
            return index(m.group(1))
    # 4. The text of an option (whole words); the longest match wins so that "red car" beats "red".
    #    This also reads "B blue car", and never takes the article in "A man walks" for a letter.
    lowered = _squash(t)
    best, best_len = None, 0
    for i in range(n):
        opt = _squash(options[i])
        if opt and len(opt) > best_len and re.search(rf"(?<!\w){re.escape(opt)}(?!\w)", lowered):
            best, best_len = i, len(opt)
    return best


def _stands_alone(ch: str, after: str) -> bool:
    """Whether a letter after "answer"/"option" is a choice and not a word: "is B", "is B because",
    "is b." and "is (c)" are; "is a dog" is not (a lower-case letter followed by a word)."""
    follow = after.strip()
    return ch.isupper() or not follow or not follow[0].isalnum()


def _squash(s) -> str:
    return " ".join(str(s).lower().split())
