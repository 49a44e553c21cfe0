"""The acceptance demo: `ppokit grpo` with no arguments raises held-out accuracy by >= 30 points.

Slow (about 8-9 minutes on 2 cores), so deselected by default: run with `pytest -m slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_builtin_demo_gains_30_points(tmp_path):
    # the demo's wall-clock (its goal: 10 minutes) is measured in the docs, not asserted here
    cmd = [sys.executable, "-m", "ppokit", "grpo", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=660).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["accuracy_after"] - summary["accuracy_before"] >= 0.30, summary
    assert (tmp_path / "run" / "plots" / "accuracy.png").is_file()
    assert (tmp_path / "run" / "samples.md").is_file()
