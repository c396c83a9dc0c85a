"""Answer verification: ``is_correct`` for one answer, ``MathVerifier`` for batches (supervised process pool).

The grading conventions (numbers, percent, units, tolerance, lists, choices, text) are in ``nft.verify.grader``;
answer extraction (boxes, strict mode, fallbacks) in ``nft.verify.extract``.
"""

from collections.abc import Sequence

from nft.verify.extract import DEFAULT_FALLBACKS, extract_answer, last_boxed
from nft.verify.grader import fast_judgement, grade
from nft.verify.pool import MathVerifier, grade_isolated


def is_correct(
    response: str,
    answer: str,
    timeout: float = 5.0,
    strict: bool = False,
    fallbacks: Sequence[str] = DEFAULT_FALLBACKS,
) -> bool:
    """Whether ``response`` (full text with a ``\\boxed{}``, or a bare answer) matches the reference ``answer``.

    Never raises and returns within ``timeout`` seconds, from any thread: what the cheap step cannot decide is
    graded in a short-lived forked process that is killed at the deadline."""
    try:
        judgement = fast_judgement(response, answer, strict, fallbacks)
        if judgement.verdict is not None:
            return judgement.verdict
        return grade_isolated(response, answer, timeout, strict, fallbacks)
    except Exception:  # noqa: BLE001 - the contract: never raises
        return False


__all__ = ["MathVerifier", "extract_answer", "grade", "is_correct", "last_boxed"]
