"""One seed helper: every seed in the project is ``derive_seed(run seed, what it is for, ...)``.

A hash of its parts, so a seed depends only on what it names (the epoch and round of a draw, the problem of an
answer), never on an order, a rank or a batch; and distinct parts give unrelated seeds. 63 bits: within what every
consumer (Python's ``random``, torch, vLLM's ``SamplingParams.seed``) accepts.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed determined by ``parts`` (ints and strings) alone."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
