from vidqa.mcq import MC_ANSWER_PREFIX, format_mc_question, parse_choice

OPTS = ["red car", "blue car", "red", "green bus"]


def test_official_wording():
    assert format_mc_question("What is it?", ["cat", "dog"]) == (
        "Question: What is it?\nOptions:\n(A) cat\n(B) dog\nOnly give the best option.")
    assert MC_ANSWER_PREFIX == "Best Option: ("


def test_parse_variants():
    assert parse_choice("B) blue car", OPTS) == 1
    assert parse_choice("(C)", OPTS) == 2
    assert parse_choice("Best Option: (D", OPTS) == 3
    assert parse_choice("The answer is option a.", OPTS) == 0
    assert parse_choice("b.", OPTS) == 1
    assert parse_choice("D", OPTS) == 3
    assert parse_choice("I think it was the green bus.", OPTS) == 3
    assert parse_choice("a red car drove by", OPTS) == 0  # longest option text wins over "red"
    assert parse_choice("E)", OPTS) is None
    assert parse_choice("", OPTS) is None
    assert parse_choice("no idea", OPTS) is None
