"""The verifier's bounds: adversarial input, fuzzing, hung/crashed/greedy workers, threads, timers, bad config."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nft.bench.verifier import ADVERSARIAL
from nft.verify import MathVerifier, is_correct
from nft.verify.extract import check_fallbacks, extract_answer, last_boxed
from nft.verify.grader import deadline, grade

SLACK = 1.0  # seconds beyond a timeout that process start-up and a loaded machine may add


def _faulty_grade(response: str, answer: str, timeout: float, strict: bool) -> bool:
    """A grading function with faults on demand, as the workers would meet them."""
    if "HANG" in response:
        time.sleep(600)
    if "C-LEVEL" in response:  # a big-integer power: C code that no signal interrupts
        pow(9, 9**9)
    if "CRASH" in response:
        os._exit(3)
    if "RAISE" in response:
        raise ValueError("a bug in a custom grader")
    if "GREEDY" in response:
        return len(bytearray(4 << 30)) > 0  # 4 GiB, over the worker's memory cap
    return grade(response, answer, timeout, strict)


def test_adversarial_outputs_are_wrong_quickly_in_process_and_in_the_pool():
    for response in ADVERSARIAL:
        start = time.monotonic()
        assert is_correct(response, "5", timeout=5) is False
        assert time.monotonic() - start < 1.0, response[:40]
    verifier = MathVerifier(num_workers=2, timeout=5)
    try:
        start = time.monotonic()
        assert verifier.score(list(ADVERSARIAL), ["5"] * len(ADVERSARIAL)) == [0.0] * len(ADVERSARIAL)
        assert time.monotonic() - start < 2.0
        assert verifier.counters["rejected"] >= len(ADVERSARIAL) - 1  # an unclosed box is just no answer
    finally:
        verifier.close()


def test_a_hung_worker_is_killed_and_replaced_and_the_batch_goes_on():
    verifier = MathVerifier(num_workers=2, timeout=1.0, grade_fn=_faulty_grade)
    responses = ["\\boxed{1}", "HANG", "\\boxed{x+1}", "C-LEVEL", "\\boxed{3}", "\\boxed{4}"]
    answers = ["1", "2", "1+x", "4", "3", "5"]
    try:
        start = time.monotonic()
        assert verifier.score(responses, answers) == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
        # The two hangs ran in parallel on the two workers; each was killed at its own deadline.
        assert time.monotonic() - start < 2 * (1.0 + SLACK)
        assert verifier.counters["timeouts"] == 2 and verifier.counters["errors"] == 0
        assert verifier.score(["\\boxed{x^2}"], ["x*x"]) == [1.0]  # the replacements work
    finally:
        verifier.close()


def test_crashes_and_grader_errors_cost_only_their_answers():
    verifier = MathVerifier(num_workers=2, timeout=5, grade_fn=_faulty_grade)
    responses = ["CRASH", "\\boxed{2}", "RAISE", "\\boxed{\\frac{1}{2}}", "CRASH", "\\boxed{7}"]
    try:
        assert verifier.score(responses, ["1", "2", "3", "0.5", "5", "6"]) == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        assert verifier.counters["errors"] == 3 and verifier.counters["timeouts"] == 0
    finally:
        verifier.close()


def test_a_worker_cannot_take_more_memory_than_its_cap():
    verifier = MathVerifier(num_workers=1, timeout=5, grade_fn=_faulty_grade, memory_mb=256)
    try:
        assert verifier.score(["GREEDY", "\\boxed{2}"], ["1", "2"]) == [0.0, 1.0]
        assert verifier.counters["errors"] == 1
    finally:
        verifier.close()


def test_is_correct_is_bounded_and_works_from_a_thread():
    results = {}

    def check():
        results["right"] = is_correct("\\boxed{x^2+2x+1}", "(x+1)^2")
        start = time.monotonic()
        results["slow"] = is_correct("\\boxed{(x+1)^{1000}}", "5", timeout=1.0)  # sympy expands for long
        results["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=check)
    thread.start()
    thread.join(30)
    assert results == {"right": True, "slow": False, "seconds": pytest.approx(0.5, abs=SLACK)}


def test_the_deadline_restores_an_outer_timer():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.6)
        assert grade("\\boxed{(x+1)^{1000}}", "5", timeout=0.2) is False  # its own deadline fires first
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # math-verify alone would have cancelled it
        time.sleep(0.6)
        assert fired == [True]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with deadline(0.2):  # and nothing is left armed after a block that ends in time
        pass
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


_LATEX_PIECES = st.sampled_from(
    [
        "\\boxed{",
        "\\fbox{",
        "{",
        "}",
        "^",
        "!",
        "9",
        "10",
        "\\frac",
        "\\sqrt",
        "$",
        "\\text{",
        "x",
        "=",
        ",",
        "(",
        ")",
        "[",
        "]",
        "\\infty",
        "\\pi",
        "%",
        "e",
        ".",
        "-",
        " ",
        "\\left(",
        "\\right)",
        "\\\\",
        "\x00",
        "\ud800",
        "\\cup",
        "\\begin{pmatrix}",
        "\\end{pmatrix}",
        "&",
        "Answer:",
        "final answer is",
        "\n",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    response=st.one_of(st.text(max_size=300), st.lists(_LATEX_PIECES, max_size=60).map("".join)),
    answer=st.sampled_from(["5", "\\frac{3}{4}", "(1, 2]", "x^2+1", "\\text{(B)}", "4.5e33", "1,-2", "$8 \\%$"]),
)
def test_random_and_adversarial_strings_never_raise_and_respect_the_timeout(response, answer):
    start = time.monotonic()
    assert is_correct(response, answer, timeout=2.0) in (True, False)
    assert time.monotonic() - start < 2.0 + SLACK


def test_extraction_reads_boxes_and_fallbacks():
    assert last_boxed("a \\boxed{\\frac{1}{\\sqrt{2}}} b") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("\\boxed{1}, \\boxed{2} and \\boxed{3}") == "1,2,3"
    assert last_boxed("\\boxed{\\boxed{7}}") == "7"
    assert last_boxed("\\boxed{unclosed") is None and last_boxed("nothing") is None
    response = "Answer: 3\nThe final answer is 4. I hope it is correct. So $5$"
    assert extract_answer(response, strict=True) is None
    assert extract_answer(response, fallbacks=["final_answer", "answer_line"]) == "4"
    assert extract_answer(response, fallbacks=["answer_line"]) == "3"
    assert extract_answer(response, fallbacks=["last_dollar"]) == "5"
    assert extract_answer("x" * 300, fallbacks=["bare"]) is None  # long prose is not a bare answer
    with pytest.raises(ValueError, match="verifier.fallbacks.*'boxed'"):
        check_fallbacks(["boxed"])
    with pytest.raises(ValueError, match="verifier.fallbacks"):
        MathVerifier(fallbacks=["nope"])


def test_scoring_a_100kb_response_is_fast():
    response = "reasoning " * 10_000 + "\\boxed{42}"
    start = time.monotonic()
    assert is_correct(response, "42") and not is_correct(response, "41")
    assert time.monotonic() - start < 0.5
