"""Multiple-choice questions in MLVU's official wording, and a robust reader of the reply.

MLVU (Zhou et al., 2024) asks::

    Question: <question>
    Options:
    (A) <option>
    (B) <option>
    Only give the best option.

and begins the assistant's answer with ``Best Option: (``; the choice is the letter before the first
``)``. Small or untuned models wander, so :func:`parse_choice` also accepts a bare letter, ``(B)``,
``Option B``, ``b.``, and the option's own text.
"""

from __future__ import annotations

import re

MC_ANSWER_PREFIX = "Best Option: ("
MC_INSTRUCTION = "Only give the best option."


def letter(i: int) -> str:
    return chr(ord("A") + i)


def format_mc_question(question: str, options: list[str]) -> str:
    lines = [f"Question: {question.strip()}", "Options:"]
    lines += [f"({letter(i)}) {str(o).strip()}" for i, o in enumerate(options)]
    lines.append(MC_INSTRUCTION)
    return "\n".join(lines)


def parse_choice(text: str, options: list[str]) -> int | None:
    """Index of the chosen option in ``options``, or None when the reply names none.

    ``text`` is what the model generated after :data:`MC_ANSWER_PREFIX` (so usually ``"B) ..."``),
    or a whole free-form reply.
    """
    n = len(options)
    valid = {letter(i) for i in range(n)}
    t = (text or "").strip()
    if not t:
        return None
    # 1. The official form: the letter right before the first ")" -- "B)" or "(B)".
    m = re.match(r"^\(?\s*([A-Za-z])\s*\)", t)
    if m and m.group(1).upper() in valid:
        return ord(m.group(1).upper()) - ord("A")
    # 2. "Best Option: (B", "Option B", "Answer: b.", "B." or a lone letter.
    m = re.search(r"(?:best option|option|answer)\s*[:\-]?\s*\(?\s*([A-Za-z])\b", t, re.IGNORECASE)
    if m and m.group(1).upper() in valid:
        return ord(m.group(1).upper()) - ord("A")
    m = re.match(r"^([A-Za-z])(?:[\s.,:;)]|$)", t)
    if m and m.group(1).upper() in valid:
        return ord(m.group(1).upper()) - ord("A")
    # 3. The option text itself (longest match first, so "red car" beats "red").
    lowered = t.lower()
    for i in sorted(range(n), key=lambda j: -len(str(options[j]))):
        opt = str(options[i]).strip().lower()
        if opt and opt in lowered:
            return i
    return None
