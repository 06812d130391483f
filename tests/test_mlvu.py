"""The MLVU-format loader on the nine real dev files, their traps, synthetic sets, and fuzzing."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidqa.app.mlvu import load_mlvu, question_id
from vidqa.errors import ConfigError, DataError

MLVU_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "mlvu_dev"
needs_dev = pytest.mark.skipif(not MLVU_DEV.exists(), reason="../shared/mlvu_dev is not beside the checkout")
MC_TASKS = {"plotQA", "findNeedle", "ego", "count", "order", "anomaly_reco", "topic_reasoning"}


@pytest.fixture(scope="module")
def dev():
    return load_mlvu(MLVU_DEV, video_root="/videos")


@needs_dev
def test_all_nine_real_dev_files_load_with_their_counts(dev):
    r = dev.report
    assert r.files == 9 and r.questions == len(dev) == 2593
    assert r.multiple_choice == sum(q.multiple_choice for q in dev) == 2175
    assert r.open_ended == 418
    assert {q.task for q in dev if q.multiple_choice} == MC_TASKS
    assert {q.task for q in dev if not q.multiple_choice} == {"subPlot", "summary"}
    assert r.per_task["plotQA"] == 539 and r.per_task["subPlot"] == 201 and r.per_task["summary"] == 217
    assert all(q.scoring_points for q in dev if q.task == "subPlot")
    assert all(q.candidates is None and q.target_index is None for q in dev if not q.multiple_choice)
    assert len({q.qid for q in dev}) == 2593


@needs_dev
def test_answers_are_option_text_and_the_target_is_the_last_equal_candidate(dev):
    first = dev[0]
    assert first.answer == "Yellow" and first.candidates == ["Yellow", "Red", "Green", "Blue"]
    assert first.target_index == 0
    # MLVU's scorer keeps the last candidate equal to the answer: ['Six', 'Three', 'Three', 'Eight'] -> C
    three = next(q for q in dev if q.candidates == ["Six", "Three", "Three", "Eight"])
    assert three.answer == "Three" and three.target_index == 2
    assert dev.report.duplicate_candidates == sum(q.duplicate_candidates for q in dev) == 16


@needs_dev
def test_answers_not_among_candidates_are_kept_marked_and_counted(dev):
    odd = [q for q in dev if q.multiple_choice and not q.answer_in_candidates]
    assert len(odd) == dev.report.answer_not_in_candidates == 2
    assert all(q.task == "findNeedle" and q.target_index is None for q in odd)
    assert all("drone" in q.answer for q in odd)


@needs_dev
def test_video_is_the_full_path_in_the_task_folder_named_after_the_file(dev):
    assert dev[0].video == "/videos/1_plotQA/movie101_66.mp4" and dev[0].video_name == "movie101_66.mp4"
    needle = next(q for q in dev if q.task == "findNeedle")
    assert needle.video.startswith("/videos/2_needle/")
    # The same file name in several task folders stays several videos.
    by_name: dict[str, set] = {}
    for q in dev:
        by_name.setdefault(q.video_name, set()).add(q.video)
    shared = {n: v for n, v in by_name.items() if len(v) > 1}
    assert len(shared) == 216
    assert shared["movie101_66.mp4"] == {"/videos/1_plotQA/movie101_66.mp4", "/videos/9_summary/movie101_66.mp4"}
    assert dev.report.videos == len({q.video for q in dev})


@needs_dev
def test_durations_are_kept_as_seconds(dev):
    durations = [q.duration for q in dev]
    assert all(isinstance(d, float) for d in durations)
    assert min(durations) == 180.0 and max(durations) == pytest.approx(32550.13)


@needs_dev
def test_question_ids_do_not_depend_on_where_videos_or_files_live(tmp_path, dev):
    elsewhere = load_mlvu(MLVU_DEV, video_root=tmp_path)
    assert [q.qid for q in elsewhere] == [q.qid for q in dev]
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "4_count.json").write_bytes((MLVU_DEV / "4_count.json").read_bytes())
    assert [q.qid for q in load_mlvu(copy / "4_count.json")] == [q.qid for q in dev if q.task == "count"]


@needs_dev
def test_task_filter_and_unknown_task(dev):
    qs = load_mlvu(MLVU_DEV, video_root="/videos", tasks=["count", "order"])
    assert {q.task for q in qs} == {"count", "order"} and len(qs) == 206 + 259
    with pytest.raises(ConfigError, match="unknown task.*nope"):
        load_mlvu(MLVU_DEV, tasks=["nope"])


def _item(**over):
    item = {"video": "v.mp4", "duration": 60, "question": "q?", "candidates": ["a", "b", "c", "d"],
            "answer": "b", "question_type": "count"}
    item.update(over)
    return {k: v for k, v in item.items() if v is not ...}


def test_synthetic_set_resolves_videos_beside_its_json(tmp_path):
    folder = tmp_path / "set one"
    folder.mkdir()
    (folder / "video.mp4").write_bytes(b"")
    (folder / "questions.json").write_text(json.dumps([_item(video="video.mp4"), _item(video="video.mp4",
                                                                                       question="other?")]))
    qs = load_mlvu(folder / "questions.json")
    assert {q.video for q in qs} == {str(folder / "video.mp4")}
    assert qs.report.videos == 1 and qs.report.videos_missing == 0
    # With a video root, MLVU's per-task folder first, then a flat root.
    root = tmp_path / "root"
    (root / "questions").mkdir(parents=True)
    assert load_mlvu(folder / "questions.json", video_root=root)[0].video == str(root / "questions" / "video.mp4")
    (root / "questions").rmdir()
    (root / "video.mp4").write_bytes(b"")
    assert load_mlvu(folder / "questions.json", video_root=root)[0].video == str(root / "video.mp4")


def test_repeated_identical_items_stay_two_questions(tmp_path):
    (tmp_path / "1_x.json").write_text(json.dumps([_item(), _item(), _item(question="other")]))
    qs = load_mlvu(tmp_path / "1_x.json")
    assert len(qs) == 3 and len({q.qid for q in qs}) == 3 and qs.report.repeated_questions == 1
    assert qs[0].qid == question_id("1_x", "v.mp4", "count", "q?", ["a", "b", "c", "d"])


def test_numbers_are_read_as_option_text(tmp_path):
    (tmp_path / "4_count.json").write_text(json.dumps([_item(candidates=[1, 2, 3.5, 4], answer=2)]))
    q = load_mlvu(tmp_path / "4_count.json")[0]
    assert q.candidates == ["1", "2", "3.5", "4"] and q.answer == "2" and q.target_index == 1


@pytest.mark.parametrize("content, reason", [
    (b"", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b'{"a": 1}', "expected a JSON list"),
    (b"[1]", "item 0: expected an object"),
    (b"[" * 100000 + b"]" * 100000, "not usable JSON"),
    (b"[" + b"9" * 5000 + b"]", "not usable JSON"),
    (json.dumps([_item(video=...)]).encode(), "'video' must be a string, got missing"),
    (json.dumps([_item(video="")]).encode(), "'video' is empty"),
    (json.dumps([_item(question=3)]).encode(), "'question' must be a string"),
    (json.dumps([_item(answer=None)]).encode(), "'answer' must be a string or number"),
    (json.dumps([_item(question_type=[])]).encode(), "'question_type' must be a string"),
    (json.dumps([_item(candidates="a b")]).encode(), "'candidates' must be a list of 2 to 26"),
    (json.dumps([_item(candidates=["a"])]).encode(), "'candidates' must be a list of 2 to 26"),
    (json.dumps([_item(candidates=["a", {"b": 1}])]).encode(), "'candidates' must be a string or number"),
    (json.dumps([_item(duration=-1)]).encode(), "'duration' must be a number of seconds"),
    (json.dumps([_item(duration="60")]).encode(), "'duration' must be a number of seconds"),
    (b'[{"video": "v", "question": "q", "answer": "a", "question_type": "t", "duration": NaN}]', "'duration'"),
    (json.dumps([_item(scoring_points=[1])]).encode(), "'scoring_points' must be a list of strings"),
])
def test_malformed_files_raise_one_line_data_errors_naming_file_and_item(tmp_path, content, reason):
    path = tmp_path / "3_bad.json"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_mlvu(path)
    assert reason in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_mlvu(tmp_path / "nope.json")
    with pytest.raises(DataError, match="no .json question files"):
        load_mlvu(tmp_path)
    (tmp_path / "sub.json").mkdir()  # a folder named like a file is not a question file
    with pytest.raises(DataError, match="no .json question files"):
        load_mlvu(tmp_path)


KEYS = ["video", "question", "answer", "candidates", "question_type", "duration", "scoring_points"]
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=3), c, max_size=7), max_leaves=16)
good_item = st.fixed_dictionaries({
    # Long names too: a name over the file system's limit must not escape as OSError.
    "video": st.text(min_size=1, max_size=6) | st.text(alphabet="ab", min_size=256, max_size=300),
    "question": st.text(max_size=8),
    "answer": st.text(max_size=4) | st.integers(), "question_type": st.text(min_size=1, max_size=5)},
    optional={"candidates": st.lists(st.text(max_size=4) | st.integers() | st.none(), max_size=5),
              "duration": st.floats(allow_nan=True) | st.integers() | st.text(max_size=2),
              "scoring_points": st.lists(st.text(max_size=3), max_size=2) | st.text(max_size=3) | st.integers()})


def _only_data_errors(path, root=None):
    try:
        qs = load_mlvu(path, video_root=root)
    except DataError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    for q in qs:  # what loads is usable: strings where strings are promised
        assert isinstance(q.question, str) and isinstance(q.answer, str) and isinstance(q.video, str)
        assert q.candidates is None or (all(isinstance(c, str) for c in q.candidates) and 2 <= len(q.candidates))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values | st.lists(json_values | good_item, max_size=4))
def test_fuzzed_json_raises_only_data_errors(tmp_path_factory, payload):
    path = tmp_path_factory.mktemp("fz") / "1_fuzz.json"
    path.write_text(json.dumps(payload))
    _only_data_errors(path, root=path.parent)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200) | st.builds(lambda a, b, cut: (a + b)[:cut],
                                                 st.just(json.dumps([_item()]).encode()), st.binary(max_size=20),
                                                 st.integers(0, 200)))
def test_fuzzed_bytes_raise_only_data_errors(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fzb") / "2_bytes.json"
    path.write_bytes(blob)
    _only_data_errors(path)
