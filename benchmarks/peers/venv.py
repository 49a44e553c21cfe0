"""The peers' own virtual environment (``benchmarks/.peers``).

The peers live in their own venv so that their dependencies never touch ppokit's. torch is held
at the same pinned version (``constraints.txt``) in both, so the comparison is of the libraries and
not of two torch builds (an unpinned torch would also pull gigabytes of CUDA wheels).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import ROOT

PEERS = ROOT / "benchmarks" / ".peers"
CONSTRAINTS = ROOT / "constraints.txt"


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


# Issue 32's batched-env comparison (benchmarks/batched_peers.py): the versions the published page
# measured (`pip download --no-deps` found these as the newest on 2026-12-06).
BATCHED_PEERS = ("rsl-rl-lib==5.5.1", "skrl==2.1.1")
BATCHED_PROBE = "import rsl_rl, tensordict, skrl.agents.torch.ppo, gymnasium, torch"


def ensure_batched_peers(python: Path = PEERS / "bin" / "python") -> Path:
    """Create the peers venv when missing and install rsl_rl and skrl at the pinned versions when they
    are not importable (torch held at ``constraints.txt``'s pin); its python."""
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(python.parents[1])], check=True)
    if subprocess.run([str(python), "-c", BATCHED_PROBE], capture_output=True).returncode != 0:
        print(f"installing {', '.join(BATCHED_PEERS)} into {python.parents[1]}")
        done = pip_install(python, *BATCHED_PEERS, "gymnasium")
        if done.returncode != 0:
            raise SystemExit(f"pip install of the batched peers failed:\n{done.stderr[-2000:]}")
    return python
