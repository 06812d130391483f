"""MLVU's multiple-choice wording and the reply parser (vidqa.mcq)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidqa.mcq import MC_ANSWER_PREFIX, format_mc_question, letter, parse_choice

OPTS = ["red car", "blue car", "red", "green bus"]


def test_official_wording_and_prefix():
    assert format_mc_question(" What is it? ", ["cat", " dog "]) == (
        "Question: What is it?\nOptions:\n(A) cat\n(B) dog\nOnly give the best option.")
    assert MC_ANSWER_PREFIX == "Best Option: ("
    assert letter(0) == "A" and letter(25) == "Z"
    with pytest.raises(ValueError):
        letter(26)


@pytest.mark.parametrize("reply, expected", [
    ("B) blue car", 1),                     # the official continuation of "Best Option: ("
    ("b )", 1),
    ("(C)", 2),
    ("Best Option: (D", 3),
    ("The answer is option a.", 0),
    ("Option B is correct", 1),
    ("The answer is A because the car is red", 0),
    ("I would say (d).", 3),
    ("b.", 1),
    ("D", 3),
    ("(C", 2),
    ("B:", 1),
    ("B. blue car", 1),
    ("b blue car", 1),                      # a letter followed by its own option's text
    ("I think it was the green bus.", 3),
    ("The answer is a red car", 0),         # "a" is the article here; the text decides
    ("it is red.", 2),                      # whole words: "red" inside "red car" is not "red"
    ("A man walks to the green bus", 3),    # a leading "A" that starts a sentence is not a letter
    ("E)", None),                           # official form naming a letter that does not exist
    ("E", None),
    ("", None),
    ("   ", None),
    ("no idea", None),
    ("A man walks", None),
])
def test_parse_variants(reply, expected):
    assert parse_choice(reply, OPTS) == expected


def test_longest_option_text_wins_and_blank_options_never_match():
    assert parse_choice("a red car drove by", ["red", "red car"]) == 1
    assert parse_choice("something", ["", "", "x", "y"]) is None
    assert parse_choice("2->1->3->4", ["1->2->3->4", "2->1->3->4", "4->3->2->1", "3->2->1->4"]) == 1
    assert parse_choice("00:12:30", ["00:02:10", "00:12:30", "01:00:00", "00:05:00"]) == 1


options_st = st.lists(st.text(min_size=1, max_size=12).filter(str.strip), min_size=2, max_size=8, unique=True)


@settings(max_examples=150, deadline=None)
@given(options=options_st, data=st.data())
def test_the_official_reply_is_always_read_back(options, data):
    i = data.draw(st.integers(0, len(options) - 1))
    assert parse_choice(f"{letter(i)}) {options[i]}", options) == i
    assert parse_choice(f"({letter(i).lower()})", options) == i
    prompt = format_mc_question("Which one?", options)
    assert prompt.count("\n(") == len(options) and prompt.endswith("Only give the best option.")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40), options=st.lists(st.text(max_size=8), min_size=0, max_size=30))
def test_any_reply_gives_a_valid_index_or_none(text, options):
    got = parse_choice(text, options)
    assert got is None or (isinstance(got, int) and 0 <= got < min(len(options), 26))
