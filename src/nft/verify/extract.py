"""Finding the final answer in a model response.

The answer is the content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (braces matched; ``\\boxed 5`` also
works); boxes written next to it and joined only by a comma, "and"/"or", LaTeX spacing (``\\quad``) or math
delimiters (``\\boxed{1}, \\boxed{-2}``, ``\\boxed{x=1} \\quad \\boxed{y=2}``) are read together as a list. In strict
mode (DAPO's rule) a response without a box has no answer. Otherwise the fallbacks are tried in the order given:

- ``final_answer``: the text after the last "final answer is" / "final answer:" (Minerva's and Qwen's style);
- ``answer_line``: the last line that starts with "Answer:" or "Result:" (DAPO's prompt asks for this line), or
  with ``####`` (GSM8K's);
- ``last_dollar``: a ``$...$`` (or ``\\(...\\)``, ``\\[...\\]``) that ends the response;
- ``answer_phrase``: the sentence after the last "the answer is" (also "result", "option", "choice"; "is", "was",
  "would be", ":"): "So the answer is 17", "the right option is E"; or the math before a later "is the answer"
  ("Thus $x \\leq 2$ is our answer");
- ``last_sentence``: what follows the one "is"/"are"/"equals"/"was" of the last sentence, when that sentence opens
  with "so", "thus", "therefore", "hence" or "finally": the unboxed end of a worked solution ("... Hence the
  probability is 2/3.");
- ``bare``: the whole response, when it is short (at most ``MAX_BARE_CHARS``): a bare answer such as ``3/4``.

What a fallback finds is tidied: markdown emphasis, a leading ``####`` ("The answer is #### 42") and final
punctuation go, a single sentence with one "is"/"are"/"equals"/"was" ("the smallest $k$ is 12") keeps what follows
it, ``[36]`` (one value in square brackets) is ``36``, and of several bracketed values the last, when it ends the
text ("first [12], then [15]." is ``15``). References are read by the same rules (``extract_reference``): the last
box, else the phrase fallbacks (``REFERENCE_FALLBACKS``), else the whole reference as written.

Every step is linear in the length of the response, so a 100 KB response costs milliseconds whatever its content.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

BOX_COMMANDS = ("\\boxed", "\\fbox")
MAX_BARE_CHARS = 200
MAX_JOINED_BOXES = 8
# What may sit between two boxes that form one list answer: separators, LaTeX spacing (`\quad`) and math delimiters.
_GAP = r"(?:\s|\\q?quad(?![a-zA-Z])|\\[,;:! ]|~)*+"  # possessive: a gap never gives back what it took
_BOX_JOINER = re.compile(rf"{_GAP}\$*{_GAP}(?:,|;|\band\b|\bor\b|\\text\{{\s*(?:and|or)\s*\}})?{_GAP}\$*{_GAP},?{_GAP}")
_FINAL_ANSWER = re.compile(r"final answer\s*(?:is|:)\s*:?", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^[ \t*#]*(?:answer|result)[ \t*]*:|^[ \t]*####", re.IGNORECASE | re.MULTILINE)
_ANSWER_PHRASE = re.compile(
    r"\b(?:answer|result|option|choice)\s+(?:is|was|would be|should be|will be)\s*:?|\b(?:answer|result)\s*:",
    re.IGNORECASE,
)
# "... $X$ is the answer" (MATH's solutions: "Therefore, $\boxed{14{,}916}$ is our answer")
_ANSWER_AFTER = re.compile(r"\$([^$]{1,200})\$\s*is\s+(?:the|our)\s+(?:final\s+)?(?:answer|solution|result)\b", re.I)
_COPULA = re.compile(r"\s(?:is|are|equals|was)\s", re.IGNORECASE)
_INNER_SENTENCE_END = re.compile(r"[.!?]\s")
_ONE_BRACKETED = re.compile(r"\[([^\[\],]+)\]")
_ANSWER_MARK = re.compile(r"^#{2,}\s*")  # GSM8K's `####` after a phrase: "The answer is #### 42"
# The last sentence of a worked solution that concludes: "... Hence the probability is 2/3."
_CONCLUSION = re.compile(r"(?:so|thus|therefore|hence|finally|in conclusion)\b,?\s", re.IGNORECASE)
# A period ends a sentence when whitespace or the end follows it (not a decimal point).
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n|\sI hope")
_MATH_DELIMITERS = (("$$", "$$"), ("\\]", "\\["), ("\\)", "\\("), ("$", "$"))  # closing, opening; `$$` before `$`


def _match_brace(text: str, open_at: int, stop: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_at``, searching before ``stop``; None if unclosed."""
    depth = 0
    for j in range(open_at, stop):
        char = text[j]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def _box_before(text: str, stop: int) -> tuple[int, int, str] | None:
    """The last complete box that starts before ``stop``: (start, end, content), end exclusive."""
    start = max(text.rfind(command, 0, stop) for command in BOX_COMMANDS)
    if start < 0:
        return None
    command = "\\boxed" if text.startswith("\\boxed", start) else "\\fbox"
    i = start + len(command)
    while i < stop and text[i] in " \t":
        i += 1
    if i < stop and text[i] == "{":
        close = _match_brace(text, i, stop)
        return None if close is None else (start, close + 1, text[i + 1 : close])
    if i > start + len(command):  # `\boxed 5`: the token after the command
        token = re.match(r"[^\s$]+", text[i:stop])
        return (start, i + token.end(), token.group()) if token else None
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``/``\\fbox{...}``, with adjacent boxes joined by commas; None if none."""
    box = _box_before(text, len(text))
    if box is None:
        return None
    parts = [box[2]]
    start = box[0]
    while len(parts) < MAX_JOINED_BOXES:
        earlier = _box_before(text, start)
        # The length check keeps the joiner regex off long gaps (its optional parts would backtrack there).
        if earlier is None or start - earlier[1] > 40 or not _BOX_JOINER.fullmatch(text, earlier[1], start):
            break
        parts.append(earlier[2])
        start = earlier[0]
    return ",".join(reversed(parts))


def _sentence_after(pattern: re.Pattern, text: str) -> str | None:
    """The sentence after the last match of ``pattern``; None if it does not occur."""
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].lstrip()
    end = _SENTENCE_END.search(rest)
    return rest[: end.start()] if end else rest


def _after_final_answer(text: str) -> str | None:
    return _sentence_after(_FINAL_ANSWER, text)


def _answer_phrase(text: str) -> str | None:
    """The sentence after the last "the answer is", or the math before a later "is the answer"."""
    after = list(_ANSWER_AFTER.finditer(text))
    before = list(_ANSWER_PHRASE.finditer(text))
    if after and (not before or after[-1].start() > before[-1].start()):
        return after[-1].group(1)
    return _sentence_after(_ANSWER_PHRASE, text)


def _answer_line(text: str) -> str | None:
    matches = list(_ANSWER_LINE.finditer(text))
    if not matches:
        return None
    return text[matches[-1].end() :].split("\n", 1)[0].strip(" \t*")


def _last_dollar(text: str) -> str | None:
    """The math span that ends the response: ``$...$``, ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]``."""
    text = text.rstrip(" \t\n.")
    for closing, opening in _MATH_DELIMITERS:
        if text.endswith(closing):
            end = len(text) - len(closing)
            start = text.rfind(opening, 0, end)
            return None if start < 0 else text[start + len(opening) : end]
    return None


def _bare(text: str) -> str | None:
    return text if len(text.strip()) <= MAX_BARE_CHARS else None


def _last_sentence(text: str) -> str | None:
    """What follows the one copula of the last sentence when that sentence opens with "so", "thus", "therefore",
    "hence" or "finally" ("Hence the probability is 2/3."); None otherwise."""
    body = text.rstrip(" \t\n.")
    ends = list(_SENTENCE_END.finditer(body))
    sentence = body[ends[-1].end() :].strip() if ends else body.strip()
    copulas = list(_COPULA.finditer(sentence))
    if not _CONCLUSION.match(sentence) or len(copulas) != 1:
        return None
    return sentence[copulas[0].end() :]


FALLBACKS: dict[str, Callable[[str], str | None]] = {
    "final_answer": _after_final_answer,
    "answer_line": _answer_line,
    "last_dollar": _last_dollar,
    "answer_phrase": _answer_phrase,
    "last_sentence": _last_sentence,
    "bare": _bare,
}
DEFAULT_FALLBACKS = ("final_answer", "answer_line", "last_dollar", "answer_phrase", "last_sentence", "bare")
# A reference is bare or `$...$`-wrapped by contract: only a box or a phrase can mark a part of it as the answer.
REFERENCE_FALLBACKS = ("final_answer", "answer_line", "answer_phrase")


def _tidy(found: str) -> str:
    """A fallback's find without markdown emphasis, a leading ``####`` and final punctuation; a single sentence with
    one copula ("the smallest $k$ is 12") reduced to what follows it; one value in square brackets unwrapped, or the
    last of several that ends the text ("first [12], then [15]")."""
    text = _ANSWER_MARK.sub("", found.replace("**", "").strip()).rstrip(".,;:").strip()
    copulas = list(_COPULA.finditer(text))
    if len(copulas) == 1 and not _INNER_SENTENCE_END.search(text):
        text = text[copulas[0].end() :].strip()
    bracketed = list(_ONE_BRACKETED.finditer(text))
    if bracketed and bracketed[-1].end() == len(text) and (len(bracketed) > 1 or bracketed[0].start() == 0):
        return bracketed[-1].group(1).strip()
    return text


def check_fallbacks(fallbacks: Sequence[str]) -> tuple[str, ...]:
    """The fallback names as a tuple; a ValueError names any unknown one."""
    unknown = [name for name in fallbacks if name not in FALLBACKS]
    if unknown:
        raise ValueError(f"verifier.fallbacks: unknown {unknown}; choose from {sorted(FALLBACKS)}")
    return tuple(fallbacks)


def extract_answer(response: str, strict: bool = False, fallbacks: Sequence[str] = DEFAULT_FALLBACKS) -> str | None:
    """The final answer in ``response``: the last box, else (unless ``strict``) the first fallback that finds one."""
    boxed = last_boxed(response)
    if boxed is not None or strict:
        return boxed
    for name in fallbacks:
        found = FALLBACKS[name](response)
        if found is not None and (tidied := _tidy(found)):
            return tidied
    return None


def extract_reference(answer: str) -> str:
    """The final answer in a reference: its last box, else the text a phrase marks ("The answer is 7.0",
    "result: 0.33"), else the whole reference."""
    return extract_answer(answer, fallbacks=REFERENCE_FALLBACKS) or answer
