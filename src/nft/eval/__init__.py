"""Benchmarks, metrics and evaluation logging: ``BenchmarkEval`` during training, ``evaluate`` for saved models."""

from nft.eval.callback import BenchmarkEval
from nft.eval.evaluator import Benchmark, Evaluator
from nft.eval.metrics import BenchmarkMetrics, MajorityAtK, PassAtK, pass_at_k
from nft.eval.samples import RolloutSamples
from nft.eval.summary import EpochSummary

__all__ = [
    "Benchmark",
    "BenchmarkEval",
    "BenchmarkMetrics",
    "EpochSummary",
    "Evaluator",
    "MajorityAtK",
    "PassAtK",
    "RolloutSamples",
    "pass_at_k",
]
