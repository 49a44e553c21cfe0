"""Shared helpers for the benchmark scripts: machine/version facts and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def machine() -> str:
    """CPU model and core count, e.g. 'AMD EPYC ... x 2 cores'."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def machine_lines(runs: list[dict]) -> list[str]:
    """One line per distinct machine, library versions and run note among these runs."""
    machines = {
        f"{r['machine']}; {r['versions']}" + (f"; note: {r['note']}" if r["note"] else "") for r in runs
    }
    return [f"Machine: {m}." for m in sorted(machines)]


def versions(packages: list[str]) -> str:
    """'python 3.11.7, torch 2.13.0, ...' for the installed packages among ``packages``."""
    parts = [f"python {platform.python_version()}"]
    for name in packages:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def git_commit(path: Path = ROOT, short: bool = False) -> str:
    """Commit of the git checkout holding ``path`` ('unknown' outside git), with '+dirty' when its
    tracked files under ``path`` differ from it. The one helper every study records runs with."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=False)
        except OSError:
            return ""
        return out.stdout.strip()

    commit = git("rev-parse", "--short" if short else "--verify", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit + ("+dirty" if dirty and commit != "unknown" else "")


def today() -> str:
    """The current UTC time as the reports print it."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def save_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a half-written file is never taken for a finished run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def provenance(
    pythonpath: Path | None = None, packages: tuple[str, ...] = ("torch", "gymnasium", "numpy")
) -> dict:
    """What every per-run record carries: date, machine, library versions, the commit of the harness
    and (with ``pythonpath``) of the library that ran."""
    record = {"date": today(), "machine": machine(), "versions": versions(list(packages))}
    record["harness_commit"] = git_commit(ROOT)
    if pythonpath is not None:
        record["library_commit"] = git_commit(pythonpath)
    return record
