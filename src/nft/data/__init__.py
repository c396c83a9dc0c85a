from nft.data.datamodule import BatchShape, DynamicSampling, LossInputs, OnlineMathDataModule
from nft.data.problems import Problem, ProblemFileError, load_problems
from nft.data.prompts import PromptTemplate

__all__ = [
    "BatchShape",
    "DynamicSampling",
    "LossInputs",
    "OnlineMathDataModule",
    "Problem",
    "ProblemFileError",
    "PromptTemplate",
    "load_problems",
]
