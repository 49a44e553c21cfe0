"""The peers' own virtual environment (``benchmarks/.peers``), and the check whether CleanRL runs.

The peers live in their own venv so that their dependencies never touch ppokit's. torch is held
at the same pinned version (``constraints.txt``) in both, so the comparison is of the libraries and
not of two torch builds (an unpinned torch would also pull gigabytes of CUDA wheels).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT

PEERS = ROOT / "benchmarks" / ".peers"
CONSTRAINTS = ROOT / "constraints.txt"
CLEANRL_VENV = PEERS / "cleanrl-venv"  # a venv of its own: cleanrl drags in old gym and wandb
CLEANRL_CHECK = PEERS / "cleanrl_check.json"


def pip_install(python: Path, *packages: str) -> subprocess.CompletedProcess:
    cmd = [str(python), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), *packages]
    return subprocess.run(cmd, capture_output=True, text=True)


PROBES = {
    "sb3": "import stable_baselines3, gymnasium, torch",
    "mujoco": "import mujoco, gymnasium; gymnasium.make('HalfCheetah-v5')",
    "ale": "import ale_py, cv2",  # SB3's Atari wrappers resize frames with OpenCV
}


def probe_peers(python: Path) -> dict[str, bool]:
    """Which parts the peers venv at ``python`` has: ``{"sb3", "mujoco", "ale"}`` -> importable."""
    if not python.exists():
        return dict.fromkeys(PROBES, False)
    run = lambda code: subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0  # noqa: E731
    return {name: run(code) for name, code in PROBES.items()}


def ensure_peers(python: Path = PEERS / "bin" / "python") -> Path:
    """Create the peers venv (``benchmarks/.peers`` unless another python is given) with
    stable-baselines3, gymnasium[mujoco], ale-py and OpenCV when anything is missing; its python."""
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(python.parents[1])], check=True)
    if not all(probe_peers(python).values()):
        print(f"installing the peers into {python.parents[1]} (stable-baselines3, gymnasium[mujoco], ale-py)")
        done = pip_install(
            python, "stable-baselines3", "gymnasium[mujoco]", "ale-py", "opencv-python-headless"
        )
        if done.returncode != 0:
            raise SystemExit(f"pip install of the peers failed:\n{done.stderr[-2000:]}")
    return python


def check_cleanrl() -> dict:
    """Install CleanRL from PyPI into its own venv and try its ``ppo.py`` for a few steps.

    Returns (and caches in ``benchmarks/.peers/cleanrl_check.json``) ``{"installs", "runs",
    "version", "detail"}``. At the time of writing it installs (0.4.8, the newest release PyPI offers
    for Python 3.11; 1.x needs Python < 3.11) but its ``ppo.py`` is the 2020 one written for gym
    <= 0.21 and stops at ``from gym.wrappers import Monitor``; the harness reports what it finds.
    """
    if CLEANRL_CHECK.exists():
        return json.loads(CLEANRL_CHECK.read_text())
    print("checking whether CleanRL from PyPI installs and its ppo.py runs (once) ...", flush=True)
    python = CLEANRL_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CLEANRL_VENV)], check=True)
    done = pip_install(python, "cleanrl")
    result: dict = {"installs": done.returncode == 0, "runs": False, "version": None}
    if not result["installs"]:
        result["detail"] = "pip install cleanrl failed: " + done.stderr.strip().splitlines()[-1]
    else:
        result["version"] = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('cleanrl'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        with tempfile.TemporaryDirectory() as tmp:  # ppo.py writes runs/ into its working directory
            cmd = [str(python), "-m", "cleanrl.ppo", "--gym-id", "CartPole-v1", "--total-timesteps", "2048"]
            cmd += ["--cuda", "false"]
            ran = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=600)
        result["runs"] = ran.returncode == 0
        last = ((ran.stderr or ran.stdout).strip().splitlines() or ["(no output)"])[-1]
        last = re.sub(r" \(/[^)]*\)", "", last)  # drop the local site-packages path from the message
        result["detail"] = "ppo.py ran" if result["runs"] else f"`python -m cleanrl.ppo` fails with `{last}`"
    newer = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--no-deps", "cleanrl>=1"],
        capture_output=True,
        text=True,
    )
    needs = re.findall(r"([0-9][0-9.]*) Requires-Python ([^;\n]+)", newer.stderr)
    if newer.returncode != 0 and needs:  # pip names the releases it skipped for this Python
        result["newer"] = f"cleanrl {needs[-1][0]} needs Python {needs[-1][1].strip()}"
    CLEANRL_CHECK.write_text(json.dumps(result, indent=1))
    return result
