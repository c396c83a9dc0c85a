"""Hand-written grading cases in the answer styles of the six benchmarks, including false cases a lax grader accepts.

Each case is (response, reference answer, expected verdict) in the default, non-strict mode; the conventions they
pin down are written in ``nft.verify.grader``'s docstring.
"""

from __future__ import annotations

import pytest

from nft.verify import MathVerifier
from nft.verify.grader import grade

AIME_AMC = [  # integers, AIME's leading zeros, AMC's whole numbers
    ("so the answer is \\boxed{25}.", "025", True),
    ("\\boxed{025}", "25", True),
    ("\\boxed{073}", "073", True),
    ("\\boxed{73}", "073", True),
    ("\\boxed{74}", "073", False),
    ("\\boxed{25.0}", "025", True),
    ("\\boxed{24.99}", "025", False),
    ("\\boxed{-1}", "-1", True),
    ("\\boxed{1}", "-1", False),
    ("\\boxed{3159}", "3159", True),
    ("\\boxed{3,159}", "3159", True),
    ("\\boxed{3159.}", "3159", True),
    ("\\boxed{\\textbf{(C) }36}", "36", False),  # an AMC letter is not the value
    ("\\boxed{$204$}", "204", True),
    ("\\boxed{ 204 }", "204", True),
    ("\\boxed{204\\text{ ways}}", "204", True),
    ("\\boxed{2\\,04}", "204", True),
    ("\\boxed{2 04}", "204", False),
    ("The answer is 204", "204", True),  # a final answer in prose (lenient mode only; issue 16)
    ("\\boxed{0}", "0", True),
    ("\\boxed{00}", "0", True),
    ("\\boxed{10}", "0", False),
    ("\\boxed{1/1}", "1", True),
    ("\\boxed{-0}", "0", True),
    ("\\boxed{+7}", "7", True),
]

MATH500 = [  # LaTeX answers
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3,\\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3,\\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(\\frac{\\pi}{2}, 3)}", "\\left( 3, \\frac{\\pi}{2} \\right)", False),
    ("\\boxed{-q+p}", "p - q", True),
    ("\\boxed{q-p}", "p - q", False),
    ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}", True),
    ("\\boxed{14/3}", "\\frac{14}{3}", True),
    ("\\boxed{\\frac{28}{6}}", "\\frac{14}{3}", True),
    ("\\boxed{4.67}", "\\frac{14}{3}", False),
    ("\\boxed{4.666667}", "\\frac{14}{3}", False),  # a decimal for an exact fraction must be exact
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", True),
    ("\\boxed{evelyn}", "\\text{Evelyn}", True),
    ("\\boxed{\\textbf{Evelyn}}", "\\text{Evelyn}", True),
    ("\\boxed{Nevely}", "\\text{Evelyn}", False),
    ("\\boxed{\\text{Navin}}", "\\text{Evelyn}", False),
    ("\\boxed{90}", "90^\\circ", True),
    ("\\boxed{90^{\\circ}}", "90^\\circ", True),
    ("\\boxed{90\u00b0}", "90^\\circ", True),
    ("\\boxed{\\frac{\\pi}{2}}", "90^\\circ", False),  # degrees are not converted to radians
    ("\\boxed{3\\sqrt{13}}", "3\\sqrt{13}", True),
    ("\\boxed{\\sqrt{117}}", "3\\sqrt{13}", True),
    ("\\boxed{3\\sqrt{12}}", "3\\sqrt{13}", False),
    ("\\boxed{6-5i}", "6 - 5i", True),
    ("\\boxed{-5i+6}", "6 - 5i", True),
    ("\\boxed{6+5i}", "6 - 5i", False),
    ("\\boxed{\\pi}", "\\pi", True),
    ("\\boxed{3.14}", "\\pi", False),
    ("\\boxed{x=5}", "x=5", True),
    ("\\boxed{5}", "x=5", True),
    ("\\boxed{x = 6}", "x=5", False),
    ("\\boxed{y=5}", "x=5", False),
    ("\\boxed{1,-2}", "1,-2", True),
    ("\\boxed{-2, 1}", "1,-2", True),
    ("\\boxed{1} and \\boxed{-2}", "1,-2", True),
    ("\\boxed{1}", "1,-2", False),
    ("\\boxed{1,2}", "1,-2", False),
    ("\\boxed{11\\sqrt{2}}", "11\\sqrt2", True),
    ("\\boxed{\\sqrt{242}}", "11\\sqrt2", True),
    ("\\boxed{3, 5, 7}", "3, 5, 7", True),
    ("\\boxed{7,5,3}", "3, 5, 7", True),
    ("\\boxed{3,5}", "3, 5, 7", False),
    ("\\boxed{(6,31,-1)}", "(6,31,-1)", True),
    ("\\boxed{(31,6,-1)}", "(6,31,-1)", False),  # a tuple is ordered
    (
        "\\boxed{\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\\\ \\frac53 \\end{pmatrix}}",
        "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
        True,
    ),
    (
        "\\boxed{\\begin{pmatrix} 1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}}",
        "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
        False,
    ),
    ("\\boxed{\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}}", "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", True),
    ("\\boxed{(3,4]}", "(3,4]", True),
    ("\\boxed{(3,4)}", "(3,4]", False),
    ("\\boxed{[3,4]}", "(3,4]", False),
    ("\\boxed{(2, \\infty)}", "(2,\\infty)", True),
    ("\\boxed{[2,\\infty)}", "(2,\\infty)", False),
    ("\\boxed{10080}", "10,\\!080", True),
    ("\\boxed{10,080}", "10,\\!080", True),
    ("\\boxed{10{,}080}", "10,\\!080", True),
    ("\\boxed{10,081}", "10,\\!080", False),
    ("\\boxed{\\$32,348}", "\\$32,\\!348", True),
    ("\\boxed{32348}", "\\$32,\\!348", True),
    ("\\boxed{\\$32,348.00}", "\\$32,\\!348", True),
    ("\\boxed{C}", "\\text{(C)}", True),
    ("\\boxed{(C)}", "\\text{(C)}", True),
    ("\\boxed{\\textbf{(C) } 4}", "\\text{(C)}", True),
    ("\\boxed{c}", "\\text{(C)}", True),
    ("\\boxed{D}", "\\text{(C)}", False),
    ("\\boxed{(C)+1}", "\\text{(C)}", False),
    ("\\boxed{864}", "864 \\mbox{ inches}^2", True),
    ("\\boxed{864 \\text{ square inches}}", "864 \\mbox{ inches}^2", True),
    ("\\boxed{865}", "864 \\mbox{ inches}^2", False),
    ("\\boxed{5.4}", "5.4 \\text{ cents}", True),
    ("\\boxed{5.40 \\text{ cents}}", "5.4 \\text{ cents}", True),
    ("\\boxed{\\frac{270}{7}}", "\\frac{270}7\\text{ degrees}", True),
    ("\\boxed{(0,9) \\cup (9,36)}", "(0,9) \\cup (9,36)", True),
    ("\\boxed{(0,36)}", "(0,9) \\cup (9,36)", False),
    ("\\boxed{[-2,7]}", "x \\in [-2,7]", True),
    ("\\boxed{(-2,7)}", "x \\in [-2,7]", False),
    ("\\boxed{-2, 1 + \\sqrt{5}, 1 - \\sqrt{5}}", "\\{1\\pm\\sqrt{5},-2\\}", True),
    ("\\boxed{\\{-2, 1+\\sqrt{5}\\}}", "\\{1\\pm\\sqrt{5},-2\\}", False),
    ("\\boxed{0.15}", "0.15", True),
    ("\\boxed{\\frac{3}{20}}", "0.15", True),
    ("\\boxed{15\\%}", "0.15", True),
    ("\\boxed{0.16}", "0.15", False),
    ("\\boxed{\\frac54}", "1.25", True),
    ("\\boxed{0.35625}", ".35625", True),
    ("\\boxed{0.35626}", ".35625", False),  # a relative tolerance of 1e-4 would accept it
    ("\\boxed{x^5-x^4+x^3-x^2+x-1}", "x^5 - x^4 + x^3 - x^2 + x - 1", True),
    ("\\boxed{-1+x-x^2+x^3-x^4+x^5}", "x^5 - x^4 + x^3 - x^2 + x - 1", True),
    ("\\boxed{x^5-x^4+x^3-x^2+x+1}", "x^5 - x^4 + x^3 - x^2 + x - 1", False),
    ("\\boxed{\\frac{3}{56}}", "\\frac{3}{56}", True),
    ("\\boxed{0.0536}", "\\frac{3}{56}", False),
    ("\\boxed{-\\frac{\\pi}{6}}", "-\\frac{\\pi}{6}", True),
    ("\\boxed{\\frac{\\pi}{6}}", "-\\frac{\\pi}{6}", False),
    ("\\boxed{2x+1}", "y=2x+1", True),
    ("\\boxed{y = 1 + 2x}", "y=2x+1", True),
    ("\\boxed{2x+2}", "y=2x+1", False),
]

OLYMPIAD = [  # intervals, expressions, multiple answers, tuples
    ("\\boxed{\\frac{1}{2n+2}}", "$\\frac{1}{2 n+2}$", True),
    ("\\boxed{\\frac{1}{2(n+1)}}", "$\\frac{1}{2 n+2}$", True),
    ("\\boxed{\\frac{1}{2n+1}}", "$\\frac{1}{2 n+2}$", False),
    ("\\boxed{2^{1009}}", "$2^{1009}$", True),
    ("\\boxed{2^{1008}}", "$2^{1009}$", False),
    ("\\boxed{2(n-1)}", "$2n-2$", True),
    ("\\boxed{2n-1}", "$2n-2$", False),
    ("\\boxed{(1,8,19), (2,7,13), (4,5,7)}", "$(1,8,19), (2,7,13), (4,5,7)$", True),
    ("\\boxed{(4,5,7),(1,8,19),(2,7,13)}", "$(1,8,19), (2,7,13), (4,5,7)$", True),
    ("\\boxed{(8,1,19), (2,7,13), (4,5,7)}", "$(1,8,19), (2,7,13), (4,5,7)$", False),
    ("\\boxed{(1,8,19), (2,7,13)}", "$(1,8,19), (2,7,13), (4,5,7)$", False),
    ("\\boxed{69, 84}", "$69$,$84$", True),
    ("\\boxed{84 \\text{ and } 69}", "$69$,$84$", True),
    ("\\boxed{69}", "$69$,$84$", False),
    ("\\boxed{f(x)=2x}", "$f(x)=2 x$", True),
    ("\\boxed{f(x)=x}", "$f(x)=2 x$", False),
    ("\\boxed{k\\ge 2}", "$k \\geqslant 2$", True),
    ("\\boxed{k \\geq 3}", "$k \\geqslant 2$", False),
    ("\\boxed{\\frac{n(n+1)(2n+1)}{6}}", "$\\frac{n(n+1)(2 n+1)}{6}$", True),
    ("\\boxed{\\frac{2n^3+3n^2+n}{6}}", "$\\frac{n(n+1)(2 n+1)}{6}$", True),
    ("\\boxed{\\frac{n(n+1)}{2}}", "$\\frac{n(n+1)(2 n+1)}{6}$", False),
    ("\\boxed{n^2+1}", "$n^{2}+1$", True),
    ("\\boxed{n^2-1}", "$n^{2}+1$", False),
    ("\\boxed{(-\\infty,0)\\cup\\{1\\}}", "$(-\\infty, 0) \\cup\\{1\\}$.", True),
    ("\\boxed{(-\\infty,0)}", "$(-\\infty, 0) \\cup\\{1\\}$.", False),
    ("\\boxed{62.5\\%}", "62.5%", True),
    ("\\boxed{62.5}", "62.5%", True),
    ("\\boxed{0.625}", "62.5%", True),
    ("\\boxed{6.25\\%}", "62.5%", False),
    ("\\boxed{0.625\\%}", "62.5%", False),
    ("\\boxed{8\\%}", "$8 \\%$", True),
    ("\\boxed{0.08}", "$8 \\%$", True),
    ("\\boxed{\\frac{25}{2}}", "$\\frac{25}{2}$", True),
    ("\\boxed{12.5}", "$\\frac{25}{2}$", True),
    ("\\boxed{12.4}", "$\\frac{25}{2}$", False),
    ("\\boxed{[\\frac{1}{2}, 8]}", "$[\\frac{1}{2}, 8]$", True),
    ("\\boxed{[0.5,8]}", "$[\\frac{1}{2}, 8]$", True),
    ("\\boxed{(\\frac{1}{2}, 8)}", "$[\\frac{1}{2}, 8]$", False),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "$\\frac{\\sqrt{3}}{2}$", True),
    ("\\boxed{\\frac{1}{2}\\sqrt{3}}", "$\\frac{\\sqrt{3}}{2}$", True),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "$\\frac{\\sqrt{3}}{2}$", False),
    ("\\boxed{N = n + 1}", "$N=n$", False),
    ("\\boxed{-2,0,2}", "$-2,0,2$", True),
    ("\\boxed{2,0,-2}", "$-2,0,2$", True),
    ("\\boxed{-2,2}", "$-2,0,2$", False),
]

MINERVA = [  # scientific notation, units, decimals given to some precision
    ("\\boxed{4.5 \\times 10^{33}}", "4.5e33", True),
    ("\\boxed{4.5e33}", "4.5e33", True),
    ("\\boxed{4.49 \\times 10^{33}}", "4.5e33", False),  # more digits than the reference: not it rounded
    ("\\boxed{4.5 \\times 10^{33} \\text{ erg}}", "4.5e33", True),
    ("\\boxed{5 \\times 10^{33}}", "4.5e33", False),
    ("\\boxed{4.5 \\times 10^{32}}", "4.5e33", False),
    ("\\boxed{45 \\times 10^{32}}", "4.5e33", True),
    ("\\boxed{0.49}", "0.49", True),
    ("\\boxed{0.490}", "0.49", True),
    ("\\boxed{0.4896}", "0.49", False),
    ("\\boxed{0.5}", "0.49", False),  # too coarse: the reference has two significant digits
    ("\\boxed{0.48}", "0.49", False),
    ("\\boxed{41.8}", "41.8", True),
    ("\\boxed{42}", "41.8", False),
    ("\\boxed{41.83}", "41.8", False),
    ("\\boxed{41.9}", "41.8", False),
    ("\\boxed{2.7778 \\times 10^{-6}}", "2.7778e-6", True),
    ("\\boxed{2.778 \\times 10^{-6}}", "2.7778e-6", False),  # fewer digits
    ("\\boxed{3 \\times 10^{-6}}", "2.7778e-6", False),  # math-verify's 6-decimal rounding would accept this
    ("\\boxed{2.7779\\times10^{-6}}", "2.7778e-6", False),
    ("\\boxed{10^{-5}}", "1e-5", True),
    ("\\boxed{0.00001}", "1e-5", True),
    ("\\boxed{10^{-4}}", "1e-5", False),
    ("\\boxed{3 \\times 10^{6}}", "3e6", True),
    ("\\boxed{3000000}", "3e6", True),
    ("\\boxed{-\\frac{1}{3}}", "-1./3", True),
    ("\\boxed{-0.3333}", "-1./3", False),
    ("\\boxed{\\frac{1}{3}}", "-1./3", False),
    ("\\boxed{1.6 \\text{ m}}", "1.6", True),
    ("\\boxed{1.7}", "1.6", False),
    ("\\boxed{0.006}", "0.006", True),
    ("\\boxed{6 \\times 10^{-3}}", "0.006", True),
    ("\\boxed{0.007}", "0.006", False),
    ("\\boxed{15625}", "15625", True),
    ("\\boxed{1.5625 \\times 10^{4}}", "15625", True),
    ("\\boxed{15600}", "15625", False),
    ("\\boxed{\\frac{a M^{1/3}}{G M^{2/3}+b}}", "\\frac{a M^{1 / 3}}{G M^{2 / 3}+b}", True),
    ("\\boxed{\\frac{a M^{1/3}}{G M^{2/3}-b}}", "\\frac{a M^{1 / 3}}{G M^{2 / 3}+b}", False),
    ("\\boxed{\\sqrt{4 \\pi G \\rho_{0} r_{0}^{2}}}", "\\sqrt{4 \\pi G \\rho_{0} r_{0}^{2}}", True),
    ("\\boxed{\\sqrt{4 \\pi G r_0^2 \\rho_0}}", "\\sqrt{4 \\pi G \\rho_{0} r_{0}^{2}}", True),
    ("\\boxed{\\sqrt{2 \\pi G \\rho_{0} r_{0}^{2}}}", "\\sqrt{4 \\pi G \\rho_{0} r_{0}^{2}}", False),
    ("\\boxed{\\lambda_{\\text{red}}/\\sqrt{3}}", "\\lambda_{\\text {red}} / \\sqrt{2}", False),
    ("\\boxed{\\left(\\frac{t^{2}}{2}-t+C\\right) e^{-t}}", "\\left(\\frac{t^{2}}{2}-t+C\\right) e^{-t}", True),
    ("\\boxed{\\left(\\frac{t^{2}}{2}+t+C\\right) e^{-t}}", "\\left(\\frac{t^{2}}{2}-t+C\\right) e^{-t}", False),
]

EXTRACTION = [  # where the answer is found (non-strict mode)
    ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "0.75", True),
    ("Final Answer: The final answer is $12$. I hope it is correct.", "12", True),
    ("Final Answer: The final answer is $12$. I hope it is correct.", "13", False),
    ("so the final answer is 3.5.", "3.5", True),
    ("Let me compute.\nAnswer: 42", "42", True),
    ("**Answer:** 42", "42", True),
    ("Answer: 41\nWait, no.\nAnswer: 42", "42", True),
    ("Thus we get $x = 5$", "5", True),
    ("Thus we get $x = 5$.", "5", True),
    ("We have $\\frac12$ of it, so $\\frac{1}{3}$", "\\frac{1}{3}", True),
    ("We have $\\frac12$ of it, so $\\frac{1}{3}$", "\\frac{1}{2}", False),
    ("3/4", "\\frac{3}{4}", True),
    ("(1, 2]", "(1, 2]", True),
    ("\\fbox{7}", "7", True),
    ("\\boxed 7", "7", True),
    ("first \\boxed{1}, then on reflection \\boxed{2}", "2", True),
    ("first \\boxed{1}, then on reflection \\boxed{2}", "1", False),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}", True),
    ("\\boxed{1} is what we get for the first part. For the second we find \\boxed{-2}", "1,-2", False),
    ("the answer is \\boxed{5", "5", False),  # truncated
    ("\\boxed{}", "5", False),
    ("", "5", False),
    ("12+34=46 \\boxed{46}", "\\boxed{46}", True),
    ("12+34=46 \\boxed{46}", "$46$", True),
]

CASES = AIME_AMC + MATH500 + OLYMPIAD + MINERVA + EXTRACTION


def test_there_are_enough_cases_and_both_verdicts():
    assert len(CASES) >= 150
    assert sum(expected for _, _, expected in CASES) > 60 and sum(not e for _, _, e in CASES) > 60


@pytest.mark.parametrize(("response", "answer", "expected"), CASES)
def test_grade(response, answer, expected):
    assert grade(response, answer, timeout=5, strict=False) is expected


def test_the_pool_agrees_with_every_case():
    verifier = MathVerifier(num_workers=2, timeout=5, strict=False)
    try:
        scores = verifier.score([r for r, _, _ in CASES], [a for _, a, _ in CASES])
    finally:
        verifier.close()
    wrong = [(r, a, e) for (r, a, e), s in zip(CASES, scores, strict=True) if s != float(e)]
    assert not wrong
    assert verifier.counters["timeouts"] == 0 and verifier.counters["errors"] == 0
    assert verifier.counters["fast_path"] > len(CASES) / 2


def test_strict_mode_needs_a_box():
    boxless = [r for r, _, _ in EXTRACTION[:13]]
    verifier = MathVerifier(num_workers=1, timeout=5, strict=True)
    try:
        assert verifier.score(boxless, [a for _, a, _ in EXTRACTION[:13]]) == [0.0] * len(boxless)
    finally:
        verifier.close()
    assert grade("\\boxed{46}", "46", strict=True) and not grade("46", "46", strict=True)
