from nft.data.datamodule import OnlineMathDataModule
from nft.data.problems import Problem, ProblemFileError, load_problems
from nft.data.prompts import PromptTemplate

__all__ = ["OnlineMathDataModule", "Problem", "ProblemFileError", "PromptTemplate", "load_problems"]
