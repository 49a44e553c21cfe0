"""Every code block of docs/deploy.md runs, in order, in one folder (bash blocks with ``ppokit`` as
``python -m ppokit``; python blocks each in a fresh interpreter)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


def test_every_block_of_deploy_md_runs(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra")
    pytest.importorskip("moviepy", reason="the video extra")
    blocks = BLOCK.findall(DOC.read_text())
    assert [lang for lang, _ in blocks].count("python") >= 3 and len(blocks) >= 7
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for lang, code in blocks:
        if lang == "bash":
            code = re.sub(r"^ppokit ", f"{sys.executable} -m ppokit ", code, flags=re.M)
            cmd = ["bash", "-euc", code]
        else:
            cmd = [sys.executable, "-c", code]
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{code}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    assert len(list((tmp_path / "runs" / "pendulum" / "videos").glob("*.mp4"))) == 2
    assert (tmp_path / "runs" / "pendulum" / "policy.onnx").is_file()
    assert list((tmp_path / "runs" / "wandb-demo" / "wandb").glob("offline-run-*"))
