"""Run by ``make gpu-check`` before pytest: without a CUDA device every GPU test would skip and pytest would exit 0,
green having checked nothing. Exits non-zero with one line saying why; ``NFT_GPU_CHECK_DEVICE=cpu`` lets the CPU
rehearsal of the check through."""

import os
import sys

import torch

if os.environ.get("NFT_GPU_CHECK_DEVICE", "cuda") == "cuda" and not torch.cuda.is_available():
    why = (
        f"torch {torch.__version__} is a CPU build"
        if torch.version.cuda is None
        else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
        f" (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r})"
    )
    sys.exit(f"gpu-check: no GPU to check: {why}; NFT_GPU_CHECK_DEVICE=cpu rehearses the check on the CPU")
