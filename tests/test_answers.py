"""Boxed-answer extraction and math-verify grading on real GSM8K and MATH500 gold answers."""

import json
import threading
from pathlib import Path

import pytest

from specs_local import answers
from specs_local.answers import extract_boxed, grade, grade_many

# /work/shared/data here; ../shared/data from the repo root in a CI clone: the same path.
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _by_id(name: str) -> dict[str, dict]:
    with open(DATA / f"{name}.jsonl", encoding="utf-8") as lines:
        return {row["id"]: row for row in map(json.loads, lines)}


GSM8K = _by_id("gsm8k")
MATH500 = _by_id("math500")


# ---------------------------------------------------------------- extract_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so the answer is $\boxed{42}$.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"first \boxed{1}, then \boxed{2}, finally \boxed{x^{2}}", "x^{2}"),
        (r"$\boxed 5$.", "5"),
        (r"\fbox{x+1}", "x+1"),
        (r"\boxed {7}", "7"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{ 18 }", "18"),
    ],
)
def test_extract_boxed_finds_the_last_box(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 42.",
        "",
        r"\boxed{\frac{1}{2}",  # truncated generation
        r"\boxed{1} and then \boxed{2",  # the last box never closes
        r"\boxedanswer{3}",  # another command, not a box
    ],
)
def test_extract_boxed_gives_none_without_a_whole_box(text):
    assert extract_boxed(text) is None


def test_extract_boxed_finds_the_gold_in_math500_solutions():
    """MATH500 reference solutions box their gold answer; extraction must find it."""
    agree = sum(grade(extract_boxed(row["solution"]), row["answer"]) for row in list(MATH500.values())[:40])
    assert agree == 40


# ---------------------------------------------------------------- grade

MATH500_CASES = [  # (id, prediction, correct?)
    ("test/precalculus/807.json", r"(3, \frac{\pi}{2})", True),
    ("test/algebra/2584.json", "14/3", True),
    ("test/algebra/1349.json", r"\text{Evelyn}", True),
    ("test/precalculus/927.json", "90", True),
    ("test/algebra/2036.json", r"\sqrt{117}", True),
    ("test/precalculus/990.json", "6-5i", True),
    ("test/algebra/2193.json", "5", True),
    ("test/intermediate_algebra/1388.json", "-2, 1", True),
    ("test/prealgebra/1558.json", r"\frac{5}{4}", True),
    ("test/intermediate_algebra/1217.json", "-1 + x - x^2 + x^3 - x^4 + x^5", True),
    ("test/precalculus/1105.json", r"-\pi/6", True),
    ("test/precalculus/807.json", r"(3, \pi)", False),
    ("test/algebra/2584.json", r"\frac{3}{14}", False),
    ("test/algebra/1349.json", r"\text{Bob}", False),
    ("test/algebra/2036.json", r"3\sqrt{3}", False),
    ("test/precalculus/990.json", "6+5i", False),
    ("test/algebra/2193.json", "x=6", False),
    ("test/intermediate_algebra/1388.json", "1, 2", False),
    ("test/prealgebra/1558.json", "1.5", False),
    ("test/intermediate_algebra/1217.json", "x^5 + x^4 + x^3 + x^2 + x + 1", False),
    ("test/precalculus/1105.json", r"-\frac{\pi}{3}", False),
]

GSM8K_CASES = [  # (id, gold field, prediction, correct?)
    ("gsm8k/test/0", "answer", "18", True),
    ("gsm8k/test/0", "answer", "18.00", True),
    ("gsm8k/test/0", "answer", r"\$18", True),
    ("gsm8k/test/0", "answer", "$18.00", True),
    ("gsm8k/test/146", "answer_raw", "2125", True),  # gold "2,125"
    ("gsm8k/test/146", "answer", "2,125", True),
    ("gsm8k/test/611", "answer", "1,450,000", True),
    ("gsm8k/test/489", "answer", "-10", True),
    ("gsm8k/test/0", "answer", "19", False),
    ("gsm8k/test/0", "answer", "18.5", False),
    ("gsm8k/test/611", "answer", "1,450,001", False),
    ("gsm8k/test/611", "answer_raw", "145000", False),  # gold "1,450,000"
    ("gsm8k/test/489", "answer", "10", False),
    ("gsm8k/test/0", "answer", None, False),  # no boxed answer at all
    ("gsm8k/test/0", "answer", "", False),
]


@pytest.mark.parametrize("problem_id, pred, correct", MATH500_CASES)
def test_grade_math500(problem_id, pred, correct):
    assert grade(pred, MATH500[problem_id]["answer"]) is correct


@pytest.mark.parametrize("problem_id, field, pred, correct", GSM8K_CASES)
def test_grade_gsm8k(problem_id, field, pred, correct):
    assert grade(pred, GSM8K[problem_id][field]) is correct


def test_grade_gsm8k_golds_keep_their_comma_forms_equal():
    rows = [row for row in GSM8K.values() if row["answer"] != row["answer_raw"]]
    assert len(rows) >= 10
    assert all(grade(row["answer_raw"], row["answer"]) for row in rows)


def test_grade_never_raises_on_garbage():
    assert grade(r"\frac{", "18") is False
    assert grade("}}}{{{", r"\frac{1}{2}") is False
    assert grade("18", r"\left(") is False


def test_grade_refuses_to_run_off_the_main_thread():
    """SIGALRM timeouts only work on the main thread; a thread must get a clear error, not False."""
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_catch(lambda: grade("18", "18"))))
    worker.start()
    worker.join()
    assert isinstance(errors[0], RuntimeError)


def _catch(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test inspects whatever was raised
        return error
    return None


def test_grade_many_in_place_and_in_processes_agree(monkeypatch):
    cases = [(pred, MATH500[pid]["answer"]) for pid, pred, _ in MATH500_CASES]
    expected = [correct for _, _, correct in MATH500_CASES]
    assert len(cases) < answers.POOL_THRESHOLD
    assert grade_many(cases) == expected  # few pairs: main thread
    # A lower threshold sends the same pairs through the real process pool, in seconds.
    monkeypatch.setattr(answers, "POOL_THRESHOLD", 8)
    assert grade_many(cases, processes=2) == expected
