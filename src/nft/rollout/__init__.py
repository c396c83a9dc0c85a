from nft.rollout.base import Completion, Generator, SamplingParams

__all__ = ["Completion", "Generator", "SamplingParams"]
