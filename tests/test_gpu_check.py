"""``make gpu-check`` itself: it cannot pass without a CUDA device, and it installs offline from a folder of wheels."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT


def run_gpu_check_target(tmp_path, **env):
    """``make gpu-check`` with this interpreter and an up-to-date install stamp (nothing is installed)."""
    stamp = tmp_path / "stamp"
    stamp.touch()
    environment = {k: v for k, v in os.environ.items() if k != "NFT_GPU_CHECK_DEVICE"} | env
    command = ["make", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable}", f"GPU_STAMP={stamp}"]
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


def offline_environment(**env) -> dict[str, str]:
    """This environment without pip's settings (no config file, no index, no find-links): only what make passes."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "NFT_GPU_CHECK_DEVICE"}
    return kept | {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/unreachable"} | env


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a download and an install of torch and the rest
def test_gpu_check_installs_offline_from_a_folder_of_wheels(tmp_path):
    """``make wheels`` where packages can be downloaded, then ``make gpu-check`` with no index: the project, its
    dependencies and its build backend all come from the folder (here it stops at the guard, having no GPU)."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    make = ["make", "--no-print-directory", f"WHEELS={wheels}", f"VENV={venv}"]
    download = subprocess.run([*make, "wheels"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert download.returncode == 0, download.stderr[-5000:]
    assert any(wheels.glob("setuptools-*.whl")) and any(wheels.glob("torch-*.whl"))

    env = offline_environment(CUDA_VISIBLE_DEVICES="")
    check = subprocess.run([*make, "gpu-check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert f"--no-index --find-links {wheels}" in check.stdout
    assert "gpu-check: no GPU to check: " in check.stderr, check.stderr[-5000:]
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import lightning, math_verify, nft, pytest, transformers"], env=env
    )
    assert imported.returncode == 0
