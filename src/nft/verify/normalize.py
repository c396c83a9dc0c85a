"""Cheap, exact readings of an answer string: canonical text, plain numbers and lists, choices, text answers.

They decide most comparisons without sympy (the fast path of ``nft.verify.grader``), and make plain numbers compare
by the conventions in the grader's docstring rather than by sympy's float rounding. Everything here is bounded:
no regex with nested unbounded quantifiers, exponents of at most ``MAX_EXPONENT``, nesting of at most
``MAX_DEPTH``; the grader caps the answer length before calling in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPONENT = 400  # 10^400 is far beyond any answer; a bigger exponent is not read as a plain number
MAX_DEPTH = 3  # lists of lists of lists
FLOAT_DIGITS = 15  # a decimal with this many significant digits is a float's value: it may stand for a fraction

_UNICODE = str.maketrans(
    {"\u2212": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u03c0": "\\pi ", "\u00b0": ""}
    | {"\u2265": "\\geq ", "\u2264": "\\leq ", "\u20ac": "", "\u00a3": "", "\u00a5": ""}  # >= <= euro pound yen
    | {"\u00b2": "^2", "\u00b3": "^3"}  # squared, cubed
)
_DELIMITERS = re.compile(r"\\[()\[\]]|\\?\$")
_SPACING = re.compile(r"\\[,;:!]|(?<!\\)\\(?=\s)|\\q?quad(?![a-zA-Z])|\\(?:display|text)style(?![a-zA-Z])|~")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])\.?")
_FRAC_VARIANTS = re.compile(r"\\[dtc]frac(?![a-zA-Z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree(?![a-zA-Z])")
_PERCENT_WORD = r"(?:per ?cent(?:age)?s?|pct)"
_PERCENT = re.compile(
    rf"\\?%|\\(?:text|mbox|mathrm)\{{\s*{_PERCENT_WORD}\s*\}}|(?<=[\d}}])\s*{_PERCENT_WORD}(?![a-zA-Z])"
)
_RELATIONS = (  # one spelling per relation: `\geq`, `\leq`, `\neq`, `>`, `<`
    (re.compile(r">=|\\geq?(?:slant)?(?![a-zA-Z])"), r"\\geq "),
    (re.compile(r"<=|\\leq?(?:slant)?(?![a-zA-Z])"), r"\\leq "),
    (re.compile(r"!=|\\neq?(?![a-zA-Z])"), r"\\neq "),
    (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"),
)
_SUBSCRIPT = re.compile(r"_\{([a-zA-Z0-9])\}")  # `b_{k}` is `b_k`
_SUBSCRIPT_COMMAND = re.compile(r"_\{\\([a-zA-Z]+)\}")  # `M_{\odot}` is `M_{odot}`, a name the LaTeX parser reads
# A unit in text after a value: `5.4 \text{ cents}`, `15\mbox{ cm}^2`, `\frac{270}7\text{ degrees}`.
_TEXT_UNIT = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mbox|mathrm|textrm|textnormal)\s*\{\s*[a-zA-Z][a-zA-Z ./]*\}(?:\^\{?\d\}?)?$"
)
# A unit or currency as a bare word after a number: `12.5 kg`, `3,75 EUR`, `60 degrees`, `30 km/h`, `1250.5 m^2` (one
# letter is a variable, `2 x`, except square and cubic metres; `pi` is a number).
_WORD_UNIT = re.compile(r"(?<=\d) (?!pi$)(?:[a-zA-Z]{2,}|[a-zA-Z]+(?:/[a-zA-Z]+)+|m(?=\^\{?[23]\}?$))(?:\^\{?\d\}?)?$")
_BOLD = re.compile(r"\\(?:mathbf|textbf|boldsymbol|bm)\s*\{")
_COMMAND_SPACE = re.compile(r"(\\[a-zA-Z]+) +(?![a-zA-Z])")  # LaTeX ignores spaces after a control word
# Spaces that separate nothing; the one in `12, 500` stays (two numbers, where `12,500` is one).
_INNER_SPACE = re.compile(r"(?<![a-zA-Z0-9,]) +|(?<=,) +(?!\d)| +(?![a-zA-Z0-9])")
_LINE_BETWEEN_NUMBERS = re.compile(r"(?<=\d)[ \t]*\n\s*(?=[-+]?\d)")  # `3\n1/4`: two numbers, not a mixed one
_ELLIPSIS = re.compile(r"\\[lc]?dots(?![a-zA-Z])|\.\.\.|\u2026")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{")

_DIGITS = r"(?:[1-9]\d{0,2}(?:,\d{3})+|[1-9]\d{0,2}(?: \d{3})+|\d+)"  # thousands separated by commas or spaces, or none
_DECIMAL = rf"(?:{_DIGITS}(?:\.\d*)?|\.\d+)"
_EXPONENT = r"(?:[eE](?P<e>[+-]?\d+)|\\(?:times|cdot) ?10\^\{?(?P<p>[+-]?\d+)\}?)"
_NUMBER = re.compile(rf"(?P<sign>[+-]?)(?P<m>{_DECIMAL}){_EXPONENT}?")
_POWER_OF_TEN = re.compile(r"(?P<sign>[+-]?)10\^\{?(?P<p>[+-]?\d+)\}?")
_FRACTION = re.compile(
    r"(?P<sign>[+-]?)\\frac(?:\{(?P<a>[^{}]+)\}|(?P<a1>\d))(?:\{(?P<b>[^{}]+)\}|(?P<b1>\d))"
    r"|(?P<a2>[^/]+)/(?P<b2>[^/]+)"
)
_MIXED = re.compile(  # `2 1/3`, `2\frac{1}{3}`, `2\frac13`: a whole number and a fraction (proper, checked later)
    r"(?P<sign>[+-]?)(?P<whole>\d+)"
    r"(?: (?P<a>\d+)/(?P<b>\d+)|\\frac(?:\{(?P<a1>\d+)\}\{(?P<b1>\d+)\}|(?P<a2>\d)(?P<b2>\d)))"
)
_DECIMAL_COMMA = re.compile(r"[+-]?(?:0,\d+|\d+,(?:\d{1,2}|\d{4,}))%?")
_INFINITY = {"\\infty": 1, "+\\infty": 1, "-\\infty": -1}
_CHOICE = re.compile(r"\(?([A-Ea-e])\)?")
_CHOICE_PREFIX = re.compile(r"(?:\\(?:text|textbf|mathrm|mathbf)\{)?\(([A-Ea-e])\)(?!\}?[-+*/^=])")
# `B.the others fail`, `A,since B fails`, `B Boston` (canonical text): a capital letter, then a mark or the option's
# capitalised text, and no second letter after it (`A,B` is two choices).
_CHOICE_LEAD = re.compile(r"\(?([A-E])(?:[.,:)](?![-+*/^=\d])| (?=[A-Z]))(?!\(?[A-E](?![a-zA-Z]))")
# The letter a sentence concludes with, after naming and rejecting others: "It is not A, and C fails, so D".
_CHOICE_CONCLUDED = re.compile(
    r"(?:^|[\s,;.])(?i:so|thus|therefore|hence|the answer is|answer:?)(?: (?i:option|choice))?"
    r"(?:,? |,|(?=\())\(?([A-E])\)?$"
)
_CHOICE_WORD = re.compile(r"^(?:option|choice) ?", re.IGNORECASE)
_CHOICE_MARK = re.compile(r"\(?[A-Ea-e]\)?[.,:]? ?")  # what precedes the option's text
_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9 ,'-]*")
_ASSIGNMENT = re.compile(r"([a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?|\\[a-zA-Z]+)=([^=<>]+)")


def canonical(answer: str) -> str:
    """The answer with what never changes its value removed: math delimiters, ``\\left``/``\\right``, LaTeX
    spacing, degree signs, a unit after a value (in ``\\text{}`` or a bare word), redundant spaces, final punctuation
    or backslash, outer braces and bold. ``\\dfrac`` becomes ``\\frac``, ``b_{k}`` ``b_k``, ``>=`` and ``\\ge``
    ``\\geq`` (``<=`` and ``\\le`` ``\\leq``, ``\\gt`` ``>``), an ellipsis ``\\dots``; a percent sign (or word) stays,
    as a bare ``%``, and so does the space in ``12, 500`` (a list, where ``12,500`` is a number); two numbers on two
    lines become a list (``3\\n1/4`` is not the mixed number ``3 1/4``)."""
    text = _LINE_BETWEEN_NUMBERS.sub(", ", answer.translate(_UNICODE)).replace("\n", " ").replace("\t", " ")
    for pattern, replacement in (
        (_DELIMITERS, ""),
        (_SPACING, ""),
        (_SIZING, ""),
        (_FRAC_VARIANTS, r"\\frac"),
        (_DEGREES, ""),
        (_ELLIPSIS, r"\\dots "),
        (_PERCENT, "%"),
        (_SUBSCRIPT, r"_\1"),
        (_SUBSCRIPT_COMMAND, r"_{\1}"),
        *_RELATIONS,
    ):
        text = pattern.sub(replacement, text)
    text = _INNER_SPACE.sub("", _COMMAND_SPACE.sub(r"\1", " ".join(text.split()))).rstrip(" .,;\\")
    text = _TEXT_UNIT.sub("", _WORD_UNIT.sub("", text))
    partners, start, end = bracket_partners(text), 0, len(text) - 1
    while start < end:  # outer braces and bold around the whole answer
        bold = _BOLD.match(text, start, end)
        if text[start] == "{" and partners.get(start) == end:
            start, end = start + 1, end - 1
        elif bold and partners.get(bold.end() - 1) == end:
            start, end = bold.end(), end - 1
        else:
            break
    return text[start : end + 1]


def bracket_partners(text: str) -> dict[int, int]:
    """The index of each matched bracket's partner, both ways, any of ``()[]{}`` (one pass: a bracket matcher
    called in a loop would be quadratic, and the input is adversarial)."""
    partners, stack = {}, []
    for i, char in enumerate(text):
        if char in "([{":
            stack.append(i)
        elif char in ")]}" and stack:
            opening = stack.pop()
            partners[opening], partners[i] = i, opening
    return partners


@dataclass(frozen=True)
class Number:
    """A plain number: its value (a float only for +-infinity, and NaN for an undefined ``0/0`` or ``5/0``); for a
    decimal, the unit of its last written digit (``ulp``, 0.01 for ``0.49``) and its significant digits; whether
    written with ``%``, and as a fraction or mixed number (``ratio``)."""

    value: Fraction | float
    ulp: Fraction | None = None  # None: exact (an integer or a fraction)
    digits: int = 0
    percent: bool = False
    ratio: bool = False

    @property
    def undefined(self) -> bool:
        return self.value != self.value  # NaN


UNDEFINED = float("nan")  # a zero denominator: a value that equals nothing, not even itself


@dataclass(frozen=True)
class Sequence:
    """A list of plain values; ``kind`` is its bracket pair (``()``, ``(]``, ...) or ``set`` (``\\{..\\}``, bare)."""

    kind: str
    items: tuple


def parse_number(text: str) -> Number | None:
    """``text`` (canonical) as a plain number, or None. Reads integers (leading zeros, thousands separators),
    decimals, scientific notation (``4.5e33``, ``4.5\\times10^{33}``, ``10^{-5}``), fractions of those
    (``\\frac{3}{4}``, ``-1./3``), mixed numbers (``2 1/3``, ``2\\frac{1}{3}``), ``\\infty`` and a final ``%``."""
    percent = text.endswith("%")
    text = text.removesuffix("%")
    if text in _INFINITY:
        return Number(_INFINITY[text] * float("inf"), percent=percent)
    plain = _plain_number(text)
    if plain is not None:
        return Number(*plain, percent=percent)
    mixed = _MIXED.fullmatch(text)
    if mixed is not None:
        numerator, denominator = (int(mixed[k] or mixed[k + "1"] or mixed[k + "2"]) for k in "ab")
        if denominator == 0:
            return Number(UNDEFINED, percent=percent, ratio=True)
        if not 0 < numerator < denominator:  # `2 5/3` or `7 0/3` is no mixed number
            return None
        value = int(mixed["whole"]) + Fraction(numerator, denominator)
        return Number(-value if mixed["sign"] == "-" else value, percent=percent, ratio=True)
    match = _FRACTION.fullmatch(text)
    if match is None:
        return None
    numerator = _plain_number(match["a"] or match["a1"] or match["a2"])
    denominator = _plain_number(match["b"] or match["b1"] or match["b2"])
    if numerator is None or denominator is None:
        return None
    if denominator[0] == 0:
        return Number(UNDEFINED, percent=percent, ratio=True)
    value = numerator[0] / denominator[0]  # a ratio is exact, even of decimals (Minerva's `-1./3`)
    return Number(-value if match["sign"] == "-" else value, percent=percent, ratio=True)


def _plain_number(text: str) -> tuple[Fraction, Fraction | None, int] | None:
    """An integer, decimal or scientific number as (value, ulp or None if exact, significant digits)."""
    match = _NUMBER.fullmatch(text) or _POWER_OF_TEN.fullmatch(text)
    if match is None:
        return None
    groups = match.groupdict()
    exponent = groups.get("e") or groups.get("p") or "0"
    if len(exponent) > 4 or abs(int(exponent)) > MAX_EXPONENT:
        return None
    mantissa = (groups.get("m") or "1").replace(",", "").replace(" ", "")
    scale = Fraction(10) ** int(exponent)
    value = Fraction(mantissa) * scale
    ulp = None
    if "." in mantissa or groups.get("e") is not None:
        ulp = scale / 10 ** len(mantissa.partition(".")[2])
    digits = len(mantissa.replace(".", "").lstrip("0"))
    return (-value if groups["sign"] == "-" else value), ulp, digits


def parse_value(text: str, depth: int = 0) -> Number | Sequence | None:
    """A plain number, or a list of plain values (tuple, interval, set or bare comma list); None otherwise."""
    number = parse_number(text)
    if number is not None or depth >= MAX_DEPTH:
        return number
    kind, inner = _container(text)
    parts = _split_top_level(inner)
    if kind == "set" and len(parts) < 2 and not text.startswith("\\{"):
        return None
    items = tuple(parse_value(part, depth + 1) for part in parts)
    return None if None in items else Sequence(kind, items)


def _container(text: str) -> tuple[str, str]:
    """(bracket pair or ``set``, the text inside) for a bracketed list; (``set``, text) for a bare one."""
    partners = bracket_partners(text)
    if text.startswith("\\{") and text.endswith("\\}") and partners.get(1) == len(text) - 1:
        return "set", text[2:-2]
    if len(text) >= 2 and text[0] in "([" and text[-1] in ")]" and partners.get(0) == len(text) - 1:
        return text[0] + text[-1], text[1:-1]
    return "set", text


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and braces."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def decimal_comma(text: str) -> Number | None:
    """``3,75`` (or ``0,050``) as the decimal 3.75: one comma, not followed by exactly three digits (``2,000`` is two
    thousand); None otherwise. Only the grader knows when this reading applies (against a single number)."""
    return parse_number(text.replace(",", ".")) if _DECIMAL_COMMA.fullmatch(text) else None


def numbers_equal(predicted: Number, gold: Number) -> bool:
    """Same value, to the precision of a decimal reference; ``%`` on one side only may mean /100, or be ignored
    when both are written as plain numbers (not as fractions). An undefined value equals nothing."""
    if predicted.undefined or gold.undefined:
        return False
    candidates = [
        (predicted.value * factor, predicted.ulp and predicted.ulp * factor) for factor in _scales(predicted, gold)
    ]
    return any(_close(value, ulp, predicted.digits, gold) for value, ulp in candidates)


def _scales(predicted: Number, gold: Number) -> list[Fraction]:
    """The factors by which ``predicted`` may be read against ``gold``: 25% is 0.25, and "25" answers a question
    asking for a percentage as well as "25%" does; but ``2 1/2 %`` (2.5%) is not ``5/2``."""
    if predicted.percent == gold.percent or not isinstance(predicted.value, Fraction):
        return [Fraction(1)]
    scaled = Fraction(1, 100) if predicted.percent else Fraction(100)
    return [scaled] if predicted.ratio or gold.ratio else [Fraction(1), scaled]


def _close(value: Fraction | float, ulp: Fraction | None, digits: int, gold: Number) -> bool:
    """Equal. A decimal against a decimal reference must be the same number (``0.490`` is ``0.49``; ``0.4896`` and
    ``0.5`` are not, whichever is the reference); an exact answer against a decimal reference must round to it
    (``1/3`` is ``0.3333``). Against an exact reference, a decimal must be exact, or have ``FLOAT_DIGITS`` or more
    significant digits (a float's value) and be within one unit of its last digit (rounded or truncated:
    ``0.1428571428571428`` is ``1/7``) or one part in 10^15 (float arithmetic: ``0.30000000000000004`` is
    ``3/10``); ``0.333333`` is not ``1/3``."""
    if not isinstance(value, Fraction) or not isinstance(gold.value, Fraction):
        return value == gold.value
    if value == gold.value or (ulp is not None and gold.ulp is not None):
        return value == gold.value
    if gold.ulp is not None:
        return 2 * abs(value - gold.value) <= gold.ulp
    if digits < FLOAT_DIGITS:
        return False
    return abs(value - gold.value) < ulp or abs(value - gold.value) * 10**FLOAT_DIGITS <= abs(gold.value)


def values_equal(predicted: Number | Sequence, gold: Number | Sequence) -> bool | None:
    """True/False when two plain values compare without sympy; None when sympy must decide."""
    if isinstance(predicted, Number) and isinstance(gold, Number):
        return numbers_equal(predicted, gold)
    if isinstance(predicted, Number) != isinstance(gold, Number):  # one number is no list of two (`12500`, `12, 500`)
        items = gold.items if isinstance(gold, Sequence) else predicted.items
        return False if len(items) > 1 else None
    if not (isinstance(predicted, Sequence) and isinstance(gold, Sequence)):
        return None
    if predicted.kind != gold.kind:  # two different bracket pairs are different objects; a set vs a tuple is not clear
        return False if "set" not in (predicted.kind, gold.kind) else None
    if gold.kind != "set":
        if len(predicted.items) != len(gold.items):
            return False
        verdicts = [values_equal(p, g) for p, g in zip(predicted.items, gold.items, strict=True)]
        return None if None in verdicts else all(verdicts)
    table = [[values_equal(p, g) for g in gold.items] for p in predicted.items]
    if any(None in row for row in table):
        return None
    return all(any(row) for row in table) and all(any(column) for column in zip(*table, strict=True))


def unwrap_text(text: str) -> str:
    """``\\text{...}`` (or ``\\textbf``, ``\\mathrm``, ...) around the whole answer removed, repeatedly."""
    partners, start, end = bracket_partners(text), 0, len(text)
    while (match := _TEXT_WRAPPER.match(text, start, end)) and partners.get(match.end() - 1) == end - 1:
        start, end = match.end(), end - 1
    return text[start:end].strip()


def choice_letter(text: str, loose: bool = False) -> str | None:
    """A multiple-choice letter A-E written ``B``, ``(B)`` or ``\\text{(B)}``; ``loose`` also reads ``option B``
    and the letter before the option's text or a reason: ``(B) 12``, ``B Boston``, ``B. the others fail``, ``A,
    since B fails`` (but not before an operator, ``(B)+1``, a digit, ``A.5``, or a second letter, ``A, B``)."""
    inner = unwrap_text(text)
    if loose:  # `option B`, `choice (B)`
        inner = _CHOICE_WORD.sub("", inner, count=1)
    loose_match = (_CHOICE_PREFIX.match(inner) or _CHOICE_LEAD.match(inner)) if loose else None
    match = _CHOICE.fullmatch(inner) or loose_match
    return match.group(1).upper() if match else None


def concluded_choice(text: str) -> str | None:
    """The letter after a final "so", "thus", "therefore" or "hence" (``It is not A,and C fails,so D``), or None."""
    match = _CHOICE_CONCLUDED.search(text[-200:])
    return match.group(1) if match else None


def choice_option(text: str) -> tuple[str, str | None] | None:
    """A reference choice, (letter, the option's words or None): ``E``, ``(A) Paris``, ``B Boston``."""
    letter = choice_letter(text, loose=True)
    if letter is None:
        return None
    option = _CHOICE_MARK.sub("", unwrap_text(text), count=1)
    return letter, text_answer(option, wrapped_only=False) if option else None


def text_answer(text: str, wrapped_only: bool) -> str | None:
    """The words of a text answer (``\\text{Evelyn}``), lower-cased; bare words count unless ``wrapped_only``."""
    inner = unwrap_text(text)
    if (wrapped_only and inner == text) or len(inner) < 2 or not _WORDS.fullmatch(inner):
        return None
    return " ".join(inner.lower().split())


def split_assignment(text: str) -> tuple[str | None, str]:
    """``x=3`` as (``x``, ``3``); anything else as (None, text)."""
    match = _ASSIGNMENT.fullmatch(text)
    return (match.group(1), match.group(2)) if match else (None, text)


def has_ellipsis(text: str) -> bool:
    """Whether ``text`` holds an ellipsis (``\\dots``, ``\\ldots``, ``\\cdots``, ``...``): an open sequence, which is
    never the finite list without it."""
    return _ELLIPSIS.search(text) is not None
