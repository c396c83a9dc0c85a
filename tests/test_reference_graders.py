"""The reference code's graders (nft.verify.reference) against transcriptions of the functions they stand for, written
here from reading them: verl's ``math_dapo.compute_score(..., strict_box_verify=True)`` (the last 300 characters, of
those the last 100, the last ``\\boxed{`` and its matching brace, string equality, +1 / -1) and NVlabs/NFT
``verifier.math_verify_compute_score`` (math-verify, the reference boxed and read as LaTeX, the response read as an
expression or LaTeX, right above 0.5, an exception is wrong). The table pins each one's verdicts beside our default
grader's on the cases that separate them."""

from __future__ import annotations

import random

import pytest

from nft.verify import MathVerifier
from nft.verify.reference import GRADERS, dapo_exact, math_verify_boxed_gold

PARAGRAPH = " We can double-check this by substituting it back into the original equation: every condition holds."

# (case, response, reference answer, (dapo_exact, math_verify_boxed_gold, ours)), ours = the default strict verifier
TABLE = [
    ("box, right", "So the answer is \\boxed{17}.", "17", (1, 1, 1)),
    ("leading zero", "The answer is \\boxed{017}.", "17", (0, 1, 1)),
    ("unit in the box", "The length is \\boxed{17\\text{ cm}}.", "17", (0, 1, 1)),
    ("thousands comma", "So \\boxed{1,000}.", "1000", (0, 1, 1)),
    ("space in the box", "So \\boxed{ 17}.", "17", (0, 1, 1)),
    ("right box, then a paragraph", "So \\boxed{17}." + PARAGRAPH, "17", (0, 1, 1)),
    ("no box, a sentence", "Adding them up, the answer is 17.", "17", (0, 1, 0)),
    ("no box, an equation", "Solving, we find $x = 5$.", "5", (0, 1, 0)),
    ("dfrac for frac", "Thus \\boxed{\\dfrac{14}{3}}.", "\\frac{14}{3}", (0, 1, 1)),
    ("decimal for a fraction", "Thus \\boxed{0.5}.", "\\frac{1}{2}", (0, 1, 1)),
    ("same LaTeX", "Thus \\boxed{\\frac{14}{3}}.", "\\frac{14}{3}", (1, 1, 1)),
    ("wrong box", "So the answer is \\boxed{16}.", "17", (0, 0, 0)),
    ("two boxes, the last right", "First \\boxed{4}, and finally \\boxed{17}.", "17", (1, 0, 1)),
    ("unclosed box", "So the answer is \\boxed{17", "17", (0, 0, 0)),
]


def transcribed_strict_box(solution: str, ground_truth: str) -> float:
    """verl math_dapo.compute_score(solution, ground_truth, strict_box_verify=True)["score"], step by step."""
    solution = solution[-300:]  # compute_score: "limit solution length for efficiency"
    pred = solution[-100:]  # is_correct_strict_box without pause tokens
    idx = pred.rfind("\\boxed{")  # last_boxed_only_string
    boxed = None
    if idx >= 0:
        depth, right = 0, None
        for i in range(idx, len(pred)):  # from the backslash, counting every brace
            if pred[i] == "{":
                depth += 1
            if pred[i] == "}":
                depth -= 1
                if depth == 0:
                    right = i
                    break
        boxed = pred[idx : right + 1] if right is not None else None
    extracted = boxed[len("\\boxed{") : -1] if boxed is not None else None  # remove_boxed
    return 1.0 if extracted == ground_truth else -1.0


def transcribed_math_verify(model_output: str, ground_truth: str) -> float:
    """NVlabs/NFT verifier.math_verify_compute_score(model_output, ground_truth)["score"]."""
    from math_verify.metric import math_metric
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    verify_func = math_metric(
        gold_extraction_target=(LatexExtractionConfig(),),
        pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()),
    )
    ret_score = 0.0
    try:
        ret_score, _ = verify_func(["\\boxed{" + ground_truth + "}"], [model_output])
    except Exception:  # noqa: BLE001 - the reference prints it
        pass
    return 1.0 if ret_score > 0.5 else -1.0


TRANSCRIPTIONS = {"dapo_exact": transcribed_strict_box, "math_verify_boxed_gold": transcribed_math_verify}


@pytest.mark.parametrize("name", sorted(GRADERS))
def test_each_grader_gives_the_transcribed_references_verdict_on_the_table(name):
    column = sorted(GRADERS).index(name)
    for case, response, answer, expected in TABLE:
        reference = TRANSCRIPTIONS[name](response, answer)
        assert GRADERS[name](response, answer) == (reference == 1.0), case
        assert int(reference == 1.0) == expected[column], case  # the table is the reference's


def test_the_table_separates_each_grader_from_ours():
    dapo, mv, ours = ([expected[i] for *_, expected in TABLE] for i in range(3))
    assert any(o > d for d, o in zip(dapo, ours, strict=True))  # the strict-box string grader refuses what we accept
    assert any(m > o for m, o in zip(mv, ours, strict=True))  # math-verify accepts answers without a box
    assert any(m < o for m, o in zip(mv, ours, strict=True))  # ... and reads two boxes as a set ({4, 17})
    verdicts = MathVerifier(num_workers=1).score([r for _, r, _, _ in TABLE], [a for _, _, a, _ in TABLE])
    assert [int(v) for v in verdicts] == ours


def test_the_strict_box_window_matches_the_transcription_around_its_edges():
    rng = random.Random(0)
    filler = "abc {x} } { 12 \\boxed{9} "
    for _ in range(400):
        padding = "".join(rng.choice(filler) for _ in range(rng.randrange(0, 140)))
        head = "".join(rng.choice(filler) for _ in range(rng.randrange(0, 300)))
        answer = rng.choice(["17", "9", "{1}", "x"])
        box = rng.choice(["\\boxed{17}", "\\boxed{{1}}", "\\boxed{x}", "\\boxed{1{7}", "\\boxed{"])
        response = head + box + padding
        assert dapo_exact(response, answer) == (transcribed_strict_box(response, answer) == 1.0), response


@pytest.mark.parametrize("name", sorted(GRADERS))
def test_a_grader_by_name_scores_in_the_pool_as_the_reference_rewards_on_our_scale(name):
    """The reference rewards +1 / -1 and trains on (reward + 1) / 2 (its correct_mask); ours is that 1 / 0."""
    verifier = MathVerifier(num_workers=1, grader=name)
    try:
        scores = verifier.score([r for _, r, _, _ in TABLE], [a for _, _, a, _ in TABLE])
    finally:
        verifier.close()
    expected = [(TRANSCRIPTIONS[name](r, a) + 1.0) / 2.0 for _, r, a, _ in TABLE]
    assert scores == expected
    assert verifier.counters["fast_path"] == 0  # our grader's shortcuts never decide for a reference grader


def test_an_unknown_grader_is_refused_by_name():
    with pytest.raises(ValueError, match="verifier.grader must be 'default' or one of"):
        MathVerifier(grader="dapo")


def test_math_verify_boxed_gold_needs_no_box_on_the_benchmarks_it_scores():
    assert math_verify_boxed_gold("The answer is $\\frac{14}{3}$.", "\\frac{14}{3}")
    assert not dapo_exact("The answer is $\\frac{14}{3}$.", "\\frac{14}{3}")
