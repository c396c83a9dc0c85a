"""The reference code's graders (NVlabs/NFT), selectable by name: ``verifier.grader=NAME``, or per benchmark
(``benchmarks.NAME.grader``). Our grader (``default``: ``nft.verify.grader``) stays the default everywhere else.

NVlabs/NFT's ``main_nft.py`` replaces verl's reward dispatch with its ``verifier.py``'s, which picks the grader by
the data file's ``data_source``:

- ``dapo_exact``: the DAPO training file (``dapo-math-17k_10boxed``) and the AIME25/AMC23 files
  (``*_dapo_boxed``) go to verl's ``math_dapo.compute_score(..., strict_box_verify=True)``. Of the response it keeps
  the last 300 characters, then of those the last 100; in them it finds the last ``\\boxed{`` and its matching
  brace (no box, or a box cut off by the end of the text: wrong), and the box's content must equal the reference
  *as a string*: no normalisation on either side in strict mode (``\\boxed{017}``, ``\\boxed{17\\text{ cm}}``,
  ``\\boxed{1,000}`` and ``\\boxed{ 17}`` are all wrong for ``17``; a right box followed by more than about 100
  characters is wrong, since it has left the window).
- ``math_verify_boxed_gold``: MATH500, Minerva and OlympiadBench go to math-verify's ``math_metric`` with the
  reference wrapped as ``\\boxed{reference}`` and read as LaTeX, and the response read by both the expression and
  the LaTeX extractors (no box needed: math-verify's own patterns pick the answer anywhere, and several boxes are
  read together as one set, so ``\\boxed{4} ... \\boxed{17}`` is not ``17``); a score over 0.5 is right.
  Exceptions count as wrong, as in the reference.

The reference scores +1 (right) / -1 (wrong); these graders return ``True`` / ``False`` and ``MathVerifier`` turns
that into 1 / 0, our reward scale. Nothing the paper's recipes train with depends on the difference: NFT and RFT
read correctness as a bit, GRPO/DAPO advantages are invariant to an affine change of the rewards (the group mean is
subtracted and the std divided out), DAPO's overlong penalty is halved to keep its ratio to the right-wrong gap
(``nft.data.rewards``), and dynamic sampling filters on accuracy, as the reference's ``filter_groups.metric=acc``.

Departures, each with its reason:
- ``strict`` and ``fallbacks`` of ``MathVerifier`` are ignored: these graders carry their own extraction rules.
- The response is the text our decoder gives (special tokens removed), as verl's reward managers decode it.
- ``math_verify_boxed_gold`` runs math-verify as installed here (its version, not the reference's unpinned one),
  with its own parse and verify timeouts inside our per-answer worker deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

DAPO_TAIL_CHARS = 300  # math_dapo.compute_score keeps the last 300 characters "for efficiency" ...
DAPO_BOX_WINDOW = 100  # ... and strict_box_verify looks for the box in the last 100 of those
BOX = "\\boxed{"


def dapo_exact(response: str, answer: str) -> bool:
    """verl's ``math_dapo.compute_score(response, answer, strict_box_verify=True)`` as a verdict (see the module)."""
    window = response[-DAPO_TAIL_CHARS:][-DAPO_BOX_WINDOW:]
    start = window.rfind(BOX)
    if start < 0:
        return False
    depth = 0
    for end in range(start + len(BOX) - 1, len(window)):
        if window[end] == "{":
            depth += 1
        elif window[end] == "}":
            depth -= 1
            if depth == 0:
                return window[start + len(BOX) : end] == answer
    return False  # the box is not closed within the window


def math_verify_boxed_gold(response: str, answer: str) -> bool:
    """NVlabs/NFT ``verifier.math_verify_compute_score(response, answer)`` as a verdict (see the module)."""
    from math_verify.metric import math_metric
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    score = math_metric(
        gold_extraction_target=(LatexExtractionConfig(),),
        pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()),
    )
    try:
        value, _ = score([BOX + answer + "}"], [response])
    except Exception:  # noqa: BLE001 - the reference prints the error and scores the answer wrong
        return False
    return value > 0.5


GRADERS: dict[str, Callable[[str, str], bool]] = {
    "dapo_exact": dapo_exact,
    "math_verify_boxed_gold": math_verify_boxed_gold,
}


def grade_fn(name: str) -> Callable:
    """The grader ``name`` in ``MathVerifier``'s form, ``(response, answer, timeout, strict) -> bool`` (a partial of a
    module function, so that a verifier holding it can be pickled)."""
    if name not in GRADERS:
        raise ValueError(f"verifier.grader must be 'default' or one of {sorted(GRADERS)}, got {name!r}")
    return partial(_grade, name)


def _grade(name: str, response: str, answer: str, timeout: float, strict: bool) -> bool:
    return GRADERS[name](response, answer)
