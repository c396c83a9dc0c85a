"""``make gpu-check`` itself: it cannot pass without a CUDA device."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT


def run_gpu_check_target(tmp_path, **env):
    """``make gpu-check`` with this interpreter and an up-to-date install stamp (nothing is installed)."""
    stamp = tmp_path / "stamp"
    stamp.touch()
    environment = {k: v for k, v in os.environ.items() if k != "NFT_GPU_CHECK_DEVICE"} | env
    command = ["make", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable}", f"STAMP={stamp}"]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)


def test_gpu_check_without_a_cuda_device_fails_with_one_line(tmp_path):
    result = run_gpu_check_target(tmp_path, CUDA_VISIBLE_DEVICES="")
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1 and ours[0].startswith("gpu-check: no GPU to check: "), result.stderr
    assert "NFT_GPU_CHECK_DEVICE=cpu" in ours[0]
    assert "pytest" not in result.stdout  # stopped before the tests, which would all skip


def test_the_cpu_rehearsal_passes_the_guard():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "NFT_GPU_CHECK_DEVICE": "cpu"}
    command = [sys.executable, "tests/require_cuda.py"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
