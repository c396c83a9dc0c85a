"""Grading one answer: extract the final answer, decide cheaply when possible, else ask math-verify (sympy).

Conventions (graders differ; these are ours). Each bullet's label names a rule that
``tests/test_verify_families.py`` pins with a case or two:

- Extraction: the last ``\\boxed{}`` (adjacent boxes joined by commas, "and" or ``\\quad`` form one list:
  ``\\boxed{(1,3)} and \\boxed{(4,0)}``, ``\\boxed{3} \\quad \\boxed{-1}``, in a response or a reference); in strict
  mode (DAPO's rule, the training default) nothing else.
- Prose: in lenient mode (``strict=False``: evaluation and ``is_correct``) a response without a box is read by
  the fallbacks of ``nft.verify.extract``: "Final answer: ...", "Answer: 64", "#### 64", a closing ``$...$``,
  "So the answer is 17" (or "The answer is #### 17"), a concluding last sentence ("... Hence the probability is
  2/3."), a short bare answer; a single sentence with one "is" keeps what follows it ("The area is [36]." is
  ``36``; "first [12], then [15]." is ``15``), so "x is 5 or x is 6" is no answer.
- References: read by the same rules, whatever the mode: the last box, else the text after "the answer is",
  "result:" and the like ("The answer is 7.0" is ``7.0``), else the whole reference (bare or ``$...$``).
- Formatting: none of these matters: ``$``, ``\\left``/``\\right``, LaTeX spacing, ``\\dfrac``, outer braces, bold
  (``\\mathbf``, ``\\textbf``), final punctuation or backslash (``5,``, ``5\\``), thousands separators
  (``10,\\!080``), leading zeros (AIME's ``025``), subscript braces (``b_{k}`` is ``b_k``), degree signs
  (``90^\\circ`` is ``90``, never ``\\pi/2``), and the spelling of a relation (``>=``, ``\\ge``, ``\\geq``,
  ``\\geqslant``; ``\\gt`` is ``>``; ``!=`` and ``\\ne`` are ``\\neq``).
- Units: a unit or currency after a value, in ``\\text{}``/``\\mbox{}`` or as a bare word of two letters or more
  (``5.4 \\text{ cents}``, ``12.5 kg``, ``3,75 EUR``, ``30 km/h``, ``2,500.75 USD``), or square and cubic metres
  (``1,250.5 m²``, ``m^2``), is ignored, not converted (``100 cm`` does not match ``1``), as in MATH's grading; a
  one-letter word is no unit here (``2 x`` is not ``2``, nor ``5 m`` ``5``, nor ``v t`` ``v``: math-verify would drop
  such a letter as a unit).
- Exact numbers: integers, decimals, ``a/b``, ``\\frac{a}{b}``, ``4.5e33``, ``4.5\\times10^{33}``, ``10^3``
  compare as exact rationals: ``0.75`` matches ``\\frac{3}{4}``; a numeric expression (``3^2``, ``2+3``) is its
  value (through sympy).
- Undefined values: a zero denominator (``0/0``, ``7 0/0``, ``\\frac{5}{0}``, ``x/0``), boxed or not, makes a value
  that equals nothing: not ``0``, not its whole part, not ``\\infty``.
- Mixed numbers: ``2 1/3`` and ``2\\frac{1}{3}`` are ``7/3`` (a whole number before a proper fraction with a
  non-zero denominator, on one line, as math-verify reads it), not ``2 \\cdot 1/3``; ``3`` and ``1/4`` on two lines
  are two numbers, not ``13/4``; ``2 5/3`` is no mixed number.
- Decimal precision: a decimal against a decimal reference must be the same number, trailing zeros aside (``0.490``
  is ``0.49``): one with more digits is not the reference rounded, nor one with fewer (``0.4167`` is not ``0.417``
  and ``0.417`` is not ``0.4167``; ``4.49e33`` is not ``4.5e33``). An exact answer (an integer, a fraction)
  against a decimal reference must round to it at the reference's precision (``\\frac{1}{3}`` is ``0.3333333``).
  OlympiadBench's per-problem ``error`` field is not used.
- Float precision: a decimal for an exact reference must be exact, unless it carries a float's precision, 15
  significant digits or more, and is within one unit of its last digit of the exact value (rounded or truncated:
  ``0.1428571428571428`` is ``1/7``) or within one part in 10^15 of it (float arithmetic: ``0.30000000000000004``
  is ``3/10``); ``0.333``, ``0.3333333`` and ``4.666667`` are not ``1/3`` and ``14/3``.
- Decimal comma: ``3,75`` (one comma, not followed by exactly three digits; ``0,050`` too) is ``3.75`` against a
  reference that is one number; ``2,000`` is two thousand, ``2,000.50`` is ``2000.5``; ``3, 75`` and ``12, 500``
  (a comma then a space) are lists, in a response and in a reference alike (``12, 500`` is not ``12500``), and so
  is any comma in a reference that is not a thousands separator (``1,22``: benchmarks write lists so).
- Percent: ``25\\%`` (or "25 percent", "25 pct", "25 percentage") matches ``25\\%``, ``25`` and ``0.25``; a
  reference ``25`` matches ``25\\%`` but not ``0.25``. The sign is ignored only between numbers written as
  integers or decimals, and after a mixed number it applies to the whole value: ``2 1/2 \\%`` is 2.5%, which
  matches ``0.025`` and ``2.5\\%``, not ``5/2``.
- Lists: a bare list or ``\\{...\\}`` is a set (order free, as math-verify reads it); ``(...)``/``[...]`` are
  ordered tuples or intervals, and their bracket types must agree (``(3,4]`` is not ``(3,4)``). A number is no
  list of two or more. A list with an ellipsis (``\\dots``, ``\\ldots``, ``\\cdots``, ``...``) is an open
  sequence: ``2, 4, 6, \\dots`` is not ``2, 4, 6``, nor the reverse.
- Equations: ``x = 3`` matches ``3`` and ``3`` matches ``x = 3`` (``y = 2x + 1`` and ``2x + 1`` alike); two
  assignments of values to different variables differ (``x = 3`` is not ``y = 3``); other pairs of equations
  match when they have the same solutions (math-verify solves both: ``3x - 6y + 9 = 0`` is ``y = x/2 + 3/2``,
  ``x^2 = 4`` is not ``x = 2``); two equations with the same left-hand side compare their right-hand sides
  (``\\frac{dM}{dt} = 11`` is not ``\\frac{dM}{dt} = 10``, which sympy cannot solve). Against a number, a
  computation without variables is its right-hand side (``23 \\bmod 6 = 5`` is ``5``).
- Multiple choice: a reference letter A-E (``(B)``, ``\\text{(B)}``, ``B``, or with the option's text: ``(A)
  Paris``, ``B Boston``) is matched by the same letter, case-insensitively when alone, also at the head of a
  phrase (``(B) 12``, ``B. the others fail``, ``A, since B fails``), after a concluding word at the end ("It is
  not A, and C fails, so D"), or by the option's text alone (``Boston``); two letters (``A, B``) and anything
  else are wrong.
- Text answers: a reference in ``\\text{}`` (``\\text{Evelyn}``) compares as words, case-insensitively.
- Symbolic: everything else (radicals, pi, expressions, intervals with expressions, matrices, inequalities) is
  decided by math-verify's ``verify`` with its defaults (floats rounded to 6 decimals there), after one shortcut:
  two expressions whose values clearly differ at a generic point are different without ``simplify``. Products
  match in any order, also of subscripted symbols and inside roots and fractions (``\\sqrt{2 R C}`` is
  ``\\sqrt{2 C R}``; ``M_{\\odot}`` is read as a name). math-verify's string fallback (a piece of text it could not
  parse) never counts as a match.

Departures from the reference code (NVlabs/NFT ``verifier.py``: math-verify's ``math_metric``, the reference
wrapped in ``\\boxed{}``, the prediction extracted anywhere in the response by math-verify's LaTeX and expression
patterns): only the final answer is extracted (the last box, or the named fallbacks), never an intermediate
result; plain numbers, choices and text answers follow the rules above, not sympy's; math-verify's string fallback
never counts as a match.

Determinism: a verdict depends on the pair alone, never on the process (``PYTHONHASHSEED``, the workers) or on
the pairs graded before it. Nothing here iterates a set in hash order, the caches hold pure functions of their
key, and sympy's assumption system, which asks facts in a shuffled order and caches their answers on shared
expressions, is made to ask them in a fixed order (its rules disagree only on undefined values, which never reach
it). ``tests/test_verify_determinism.py`` grades the families above in subprocesses under several hash seeds and
orders, in process and in the pool.

Bounds: an extracted answer over ``MAX_ANSWER_CHARS``, or with NUL/control characters or lone surrogates, or
whose evaluation could explode before any timeout can act (a numeric power tower such as ``9^{9^{9^{9}}}``, an
exponent of 100000 or more, a factorial of 100000 or more, nesting deeper than ``MAX_NESTING``) is wrong without
reaching sympy. math-verify runs with its own timeouts off (its SIGALRM would cancel ours) under one
``deadline`` for the whole symbolic step: an interval timer, so only in a main thread. C-level hangs ignore
signals; ``nft.verify.pool`` runs this in worker processes that are killed past their deadline.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import sympy.core.assumptions
from math_verify import LatexExtractionConfig, parse, verify
from sympy import Eq, Expr, Pow, Rational, S, Symbol, UnevaluatedExpr, srepr
from sympy import Number as SympyNumber

from nft.verify.extract import DEFAULT_FALLBACKS, extract_answer, extract_reference
from nft.verify.normalize import (
    Number,
    bracket_partners,
    canonical,
    choice_letter,
    choice_option,
    concluded_choice,
    decimal_comma,
    has_ellipsis,
    parse_number,
    parse_value,
    split_assignment,
    text_answer,
    values_equal,
)

MAX_ANSWER_CHARS = 1000
MAX_NESTING = 30
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_BIG_EXPONENT = re.compile(r"\^\s*\{?\s*[+-]?\d{6}")
_BIG_FACTORIAL = re.compile(r"\d{6}[\s)}]*!|!\s*!\s*!")
_COMMAND = re.compile(r"\\[a-zA-Z]+")
_SCIENTIFIC = re.compile(r"(?<=\d)[eE]([+-]?\d+)(?![a-zA-Z])")
# A one-letter factor after a space (`v t`, `\frac{1}{2}v_0^2 m`): math-verify would drop it as a unit (metres,
# seconds); braced, it stays a symbol.
_LONE_LETTER = re.compile(r"(?<= )([a-zA-Z])(?=$| |[-+*/=,)\]}])")


class _NoTimeoutWarning(logging.Filter):
    """math-verify warns once per process that its timeouts are off; here that is on purpose (see the docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutWarning())

# sympy asks the facts that may settle an assumption (``is_zero``, ``is_finite``, ...) in a shuffled order: a set
# (hash-ordered) shuffled by a generator seeded from the OS at import. Where its rules disagree (``0/0``, ``0 * zoo``)
# the answer then depends on the process and, as answers are cached on shared expressions, on the pairs graded
# before. A verdict must not: the facts are asked in a fixed order instead.
sympy.core.assumptions.shuffle = list.sort


class VerifierTimeout(BaseException):
    """The deadline passed. A BaseException, so that math-verify's and sympy's ``except Exception`` let it through."""


@contextmanager
def deadline(seconds: float):
    """Raise ``VerifierTimeout`` in the block after ``seconds`` (main thread only; elsewhere no limit is set).

    An outer interval timer is restored, less the time spent here, instead of being cancelled."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise VerifierTimeout

    start = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, previous_delay - (time.monotonic() - start)))


def unsafe_reason(text: str) -> str | None:
    """Why ``text`` must not reach sympy (too long, control characters, a power tower, ...), or None if it may."""
    if len(text) > MAX_ANSWER_CHARS:
        return "too long"
    if _CONTROL.search(text):
        return "control character or surrogate"
    if _BIG_EXPONENT.search(text) or _BIG_FACTORIAL.search(text):
        return "huge exponent or factorial"
    depth = deepest = 0
    for char in text:
        depth += (char == "{") - (char == "}")
        deepest = max(deepest, depth)
    if deepest > MAX_NESTING:
        return "nested too deeply"
    return "power tower" if _has_numeric_tower(text) else None


def _has_numeric_tower(text: str) -> bool:
    """An exponent (or a factorial's argument) that holds another exponent or factorial and no variable: such a
    value can have billions of digits. Also a double superscript (``9^9^9``)."""
    partner = bracket_partners(text)
    for i, char in enumerate(text):
        if char == "^":
            j = i + 1
            end = partner.get(j, len(text)) if text[j : j + 1] == "{" else j
            argument = text[j + 1 : end] if end > j else text[j : j + 1]
            if text[end + 1 : end + 2] == "^":
                return True
        elif char == "!" and i > 0 and text[i - 1] in ")}" and i - 1 in partner:
            argument = text[partner[i - 1] + 1 : i - 1]
        else:
            continue
        if ("^" in argument or "!" in argument) and not re.search("[a-zA-Z]", _COMMAND.sub("", argument)):
            return True
    return False


@dataclass(frozen=True)
class Reference:
    """A reference answer read once: its canonical text and whatever cheap reading applies to it."""

    text: str
    variable: str | None  # `x` for `x=3`
    value: object  # a normalize.Number or normalize.Sequence for plain values (of the right-hand side), else None
    choice: str | None
    words: str | None  # a text answer's words; for a choice, its option's words
    symbolic: str  # what math-verify parses: the right-hand side, numbers written exactly


@lru_cache(maxsize=4096)
def read_reference(answer: str) -> Reference | None:
    """The reference ``answer`` (bare, ``$...$``, boxed or in a sentence) read once; None when empty or unsafe."""
    text = canonical(extract_reference(answer))
    if not text or unsafe_reason(text):
        return None
    variable, right = split_assignment(text)
    value = parse_value(right)
    choice, words = choice_option(text) or (None, text_answer(text, True))
    return Reference(text, variable, value, choice, words, _symbolic(right, value))


def _symbolic(text: str, value: object = None) -> str:
    """``text`` as math-verify should read it: an exact number as an integer or ``\\frac``, ``4.5e33`` (which it
    would read as 4.5 * e * 33) as ``4.5\\times10^{33}``, a one-letter factor after a space braced (``v {t}``)."""
    if isinstance(value, Number) and isinstance(value.value, Fraction) and value.ulp is None:
        number = value.value
        body = f"\\frac{{{number.numerator}}}{{{number.denominator}}}" if number.denominator > 1 else str(number)
        return body + ("%" if value.percent else "")
    return _LONE_LETTER.sub(r"{\1}", _SCIENTIFIC.sub(r"\\times10^{\1}", text))


@dataclass(frozen=True)
class Judgement:
    """The cheap step's outcome: a verdict, or None with the two answers that math-verify must compare."""

    verdict: bool | None
    predicted: str = ""
    reference: str = ""
    rejected: bool = False


def fast_judgement(
    response: str, answer: str, strict: bool = False, fallbacks: Sequence[str] = DEFAULT_FALLBACKS
) -> Judgement:
    """Extract and compare without sympy: identical canonical text, plain numbers and lists, choices, text."""
    reference = read_reference(answer)
    if reference is None:
        return Judgement(False, rejected=True)
    found = extract_answer(response, strict, fallbacks)
    if found is None:
        return Judgement(False)
    if len(found) > 4 * MAX_ANSWER_CHARS:  # no need to normalise 100 KB to know it is too long
        return Judgement(False, rejected=True)
    predicted = canonical(found)
    if not predicted:
        return Judgement(False)
    if predicted == reference.text:
        return Judgement(True)
    if unsafe_reason(predicted):
        return Judgement(False, rejected=True)
    if has_ellipsis(predicted) != has_ellipsis(reference.text):  # `2, 4, 6, \dots` is not the list `2, 4, 6`
        return Judgement(False)
    if reference.choice is not None:  # the letter, or else the option's text
        letter = choice_letter(predicted, loose=True) or concluded_choice(predicted)
        words = text_answer(predicted, wrapped_only=False) if letter is None else None
        return Judgement(letter == reference.choice if letter else words is not None and words == reference.words)
    if reference.words is not None:
        return Judgement(text_answer(predicted, wrapped_only=False) == reference.words)
    variable, right = split_assignment(predicted)
    if variable is None and isinstance(reference.value, Number) and "=" not in reference.text:
        right = _computed_value(predicted) or right
    if variable != reference.variable and "=" in predicted and "=" in reference.text:
        # Two equations, not assignments to one variable: same solution set (`3x-6y+9=0`, `y=x/2+3/2`), or, for
        # assignments of values, different (`x = 3` is not `y = 3`). Otherwise the variable is dropped (`x=3` is `3`).
        plain = variable is not None and isinstance(reference.value, Number)
        return Judgement(False) if plain else Judgement(None, _symbolic(predicted), _symbolic(reference.text))
    value = parse_value(right) if reference.value is not None else None
    if isinstance(reference.value, Number) and not isinstance(value, Number) and ", " not in found:
        value = decimal_comma(right) or value  # `3,75` against one number is 3.75; `3, 75` stays a list
    verdict = values_equal(value, reference.value) if value is not None else None
    return Judgement(verdict, _symbolic(right), reference.symbolic)


def _computed_value(text: str) -> str | None:
    """The right-hand side of a computation that ends in a number (``23 \\bmod 6=5``: ``5``), or None. Only for
    a left-hand side without variables: ``2x=10`` is no computation of ``10``."""
    left, equals, right = text.rpartition("=")
    if not equals or re.search("[a-zA-Z]", _COMMAND.sub("", left)) or parse_number(right) is None:
        return None
    return right


@lru_cache(maxsize=1024)
def _parse_reference(text: str) -> list:
    return _parse(text)


def _parse(text: str) -> list:
    # A percent sign must follow the closing `$` for math-verify to read it.
    latex = f"${text[:-1]}$%" if text.endswith("%") else f"${text}$"
    return parse(latex, (LatexExtractionConfig(),), parsing_timeout=None)


def symbolic_verdict(predicted: str, reference: str) -> bool:
    """math-verify's equivalence of two canonical answers (the reference parsed once per process and cached)."""
    # Only what parsed into sympy: math-verify's string fallback can be a truncated piece of the answer, and two
    # identical answers were already matched on their canonical text.
    # An undefined value (a division by zero) equals nothing; sympy's rules disagree about it (see `shuffle` above).
    gold = [item for item in _parse_reference(reference) if not isinstance(item, str) and not _undefined(item)]
    target = [item for item in _parse(predicted) if not isinstance(item, str) and not _undefined(item)]
    if not gold or not target or all(_clearly_different(g, t) for g in gold for t in target):
        return False
    gold, target = _right_hand_sides(gold, target)
    return bool(verify(gold, target, timeout_seconds=None))


def _right_hand_sides(gold: list, target: list) -> tuple[list, list]:
    """Two equations with the same left-hand side (``\\frac{dM}{dt} = ...``) as their right-hand sides: they hold
    together exactly when those are equal. math-verify would solve both for their symbols, and two equations that
    sympy cannot solve (a derivative) give two empty solution lists, which it takes for a match."""
    if len(gold) == len(target) == 1 and all(isinstance(x, Eq) for x in (*gold, *target)):
        if gold[0].lhs == target[0].lhs:
            return [gold[0].rhs], [target[0].rhs]
    return gold, target


def _undefined(expr) -> bool:
    """Whether ``expr`` divides by zero anywhere (``0/0``, ``\\frac{5}{0}``, ``7 \\cdot 0/0``, ``x/0``)."""
    try:
        if expr.has(S.NaN, S.ComplexInfinity):
            return True
        return any(power.base.is_zero and power.exp.is_negative for power in expr.atoms(Pow))
    except Exception:  # noqa: BLE001 - not an expression sympy can walk (a matrix of sets, ...): no claim
        return False


def _clearly_different(gold, target) -> bool:
    """Two expressions (not numbers, symbols, percentages, sets or relations: math-verify reads those its own way)
    whose values differ at a generic point. For them math-verify would go on to ``simplify(gold - target)``, the
    slowest step of grading a wrong answer, which cannot make a nonzero value zero."""
    if not all(isinstance(x, Expr) and not isinstance(x, SympyNumber | Symbol) for x in (gold, target)):
        return False
    if gold.has(UnevaluatedExpr) or target.has(UnevaluatedExpr):
        return False
    # In the order of their names, then of their assumptions: a set of symbols iterates in hash order.
    symbols = sorted(gold.free_symbols | target.free_symbols, key=lambda symbol: (str(symbol), srepr(symbol)))
    point = {symbol: Rational(7 + 3 * i, 11 + 4 * i) for i, symbol in enumerate(symbols)}
    try:
        values = [x.subs(point).evalf(30) for x in (gold, target)]
    except Exception:  # noqa: BLE001 - no claim; math-verify decides
        return False
    if not all(isinstance(value, SympyNumber) for value in values):  # complex, infinite or not numeric: no claim
        return False
    return bool(abs(values[0] - values[1]) > 1e-12 * (1 + abs(values[0]) + abs(values[1])))


def clear_caches() -> None:
    """Forget the references read and parsed so far (benchmarks use it to time cold batches)."""
    read_reference.cache_clear()
    _parse_reference.cache_clear()


@lru_cache(maxsize=1)
def warm_up() -> None:
    """Two symbolic comparisons, an expression and an equation, so that forked workers inherit sympy's and the LaTeX
    parser's warm state: the first comparison in a process costs most of a second, and the first equation (sympy's
    solver) half a second more, enough for a one-shot worker on a loaded machine to time out."""
    symbolic_verdict("x+1", "1+x")
    symbolic_verdict("2y=x+3", "y=x/2+3/2")


def grade(
    response: str,
    answer: str,
    timeout: float = 5.0,
    strict: bool = False,
    fallbacks: Sequence[str] = DEFAULT_FALLBACKS,
) -> bool:
    """Whether ``response`` (a full response or a bare answer) matches the reference ``answer``. Never raises.

    The symbolic step stops after ``timeout`` seconds in a main thread; ``nft.verify.is_correct`` and
    ``MathVerifier`` bound the whole call from any thread."""
    try:
        judgement = fast_judgement(response, answer, strict, fallbacks)
        if judgement.verdict is not None:
            return judgement.verdict
        with deadline(timeout):
            return symbolic_verdict(judgement.predicted, judgement.reference)
    except VerifierTimeout:
        return False
    except Exception:  # noqa: BLE001 - a grader error must cost one answer, never the run
        return False
