"""Benchmarks run by `make bench`."""

from nft.threads import apply_thread_policy

apply_thread_policy()  # `python -m nft.bench...` imports this package before torch
