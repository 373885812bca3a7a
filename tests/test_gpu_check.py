"""benchmarks/gpu_check.sh is ready to run: its dry run goes through every step on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run_writes_the_results_file(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "SSD_GPU_CHECK_DRY_RUN": "1",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["tests"]["exit_code"] == 0
    assert "skipped" in result["tests"]["summary"] or "passed" in result["tests"]["summary"]
    assert set(result["train"]) == {"fp32/synthetic", "bf16/synthetic", "fp16/synthetic",
                                    "fp32/real_pipeline"}
    assert all(r["images_per_s"] > 0 and r["last_loss"] > 0 for r in result["train"].values())
    assert set(result["inference"]) == {"batch1", "batch8", "batch32"}
