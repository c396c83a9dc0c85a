"""The verifier contract: ``is_correct`` and the pooled ``MathVerifier.score``."""

from __future__ import annotations

import pytest

from nft.verify import MathVerifier, is_correct, last_boxed


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [
        ("12+34=46 \\boxed{46}", "46", True),
        ("12+34=46 \\boxed{47}", "46", False),
        ("so \\boxed{\\frac{3}{4}}.", "3/4", True),
        ("\\boxed{0.75}", "\\frac{3}{4}", True),
        ("\\boxed{025}", "25", True),
        ("first \\boxed{1} then \\boxed{2}", "2", True),
        ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", True),
        ("\\boxed{x^2+2x+1}", "(x+1)^2", True),
        ("\\boxed{1,000}", "1000", True),
        ("no box, the answer is 5", "6", False),
        ("", "5", False),
    ],
)
def test_is_correct(response, answer, expected):
    assert is_correct(response, answer) is expected


def test_last_boxed_handles_nesting_and_absence():
    assert last_boxed("a \\boxed{\\frac{1}{\\sqrt{2}}} b") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("nothing") is None


def test_batched_score_matches_single_answers_and_counts():
    verifier = MathVerifier(num_workers=2, timeout=5, strict=True)
    responses = ["\\boxed{46}", "\\boxed{\\frac{1}{2}}", "46", "\\boxed{x+1}", "\\boxed{2}"]
    answers = ["46", "0.5", "46", "1+x", "3"]
    assert verifier.score(responses, answers) == [1.0, 1.0, 0.0, 1.0, 0.0]  # strict: "46" has no box
    assert verifier.counters["answers"] == 5 and verifier.counters["fast_path"] >= 3
    verifier.close()
