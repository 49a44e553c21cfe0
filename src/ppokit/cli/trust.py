"""Run directories as untrusted input (issue 34): ``ppokit eval`` and ``ppokit resume`` import every
module a run names (``gym_packages``, ``module:Id``, ``env_wrappers``, reward ``module:function`` and
``file.py:function`` specs), and importing a module runs its code.

The rule: a run directory whose owner is not the current user, or whose modules would be imported
from inside the run directory itself (``python -m ppokit eval .`` puts the working directory first on
``sys.path``), needs the user's explicit ``--trust-run-dir``, and the refusal says what would be
imported. Without the flag it is enough that every named module is already importable from the
user's environment (installed packages and ``PYTHONPATH``, not the run directory or the working
directory): then nothing the directory ships runs. Such a run is also imported with the working
directory taken off ``sys.path`` while it sits inside the run, so a file there cannot shadow the
installed module of the same name.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ppokit.cli.runs import checkpoint_meta
from ppokit.errors import ConfigError


def _inside(path: str | Path, root: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(root.resolve())
    except (OSError, ValueError):
        return False


def _configs(run_dir: Path) -> list[dict[str, Any]]:
    """Every config the run directory holds: config.yaml, the saved model's and the newest
    checkpoints' (what ``PPO.load`` / ``resume`` read)."""
    out: list[dict[str, Any]] = []
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
        out += [data] if isinstance(data, dict) else []
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        pass
    metas = [run_dir / "model"]
    root = run_dir / "checkpoints"
    if root.is_dir():
        metas += [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for where in metas:
        config = checkpoint_meta(where).get("config")
        out += [config] if isinstance(config, dict) else []
    return out


def named_code(run_dir: str | Path) -> tuple[list[str], list[str]]:
    """``(modules, files)`` whose code the run in ``run_dir`` would have ppokit import: module names
    (``gym_packages``, ``module:Id``'s module, ``env_wrappers``' modules, ``module:function`` rewards)
    and Python files (``file.py:function`` rewards)."""
    run_dir = Path(run_dir)
    modules: list[str] = []
    files: list[str] = []
    for config in _configs(run_dir):
        packages = config.get("gym_packages") or []
        modules += [p for p in packages if isinstance(p, str)] if isinstance(packages, list) else []
        env_id = config.get("env_id")
        if isinstance(env_id, str) and ":" in env_id:
            modules.append(env_id.rpartition(":")[0])
        for entry in config.get("env_wrappers") or []:
            name = next(iter(entry), None) if isinstance(entry, dict) else entry
            if isinstance(name, str) and "." in name:
                modules.append(name.rpartition(".")[0])
    try:
        sources = json.loads((run_dir / "sources.json").read_text())
    except (OSError, ValueError):
        sources = {}
    rewards = sources.get("reward") if isinstance(sources, dict) else None
    for spec in rewards if isinstance(rewards, list) else []:
        if isinstance(spec, str) and ":" in spec:
            target = spec.rsplit(":", 1)[0]
            (files if target.endswith(".py") else modules).append(target)
    return sorted(set(modules)), sorted(set(files))


def _clean_path(run_dir: Path) -> list[str]:
    """``sys.path`` without the working directory and anything inside the run directory."""
    cwd = Path.cwd()
    return [p for p in sys.path if p not in ("", ".") and not _inside(p, run_dir) and Path(p) != cwd]


def _importable(module: str, path: list[str]) -> bool:
    """Whether ``module``'s top-level package is importable from ``path`` (or built in / loaded)."""
    top = module.split(".")[0]
    if top in sys.builtin_module_names:
        return True
    loaded = sys.modules.get(top)
    if loaded is not None:
        return True
    try:
        return importlib.machinery.PathFinder.find_spec(top, path) is not None
    except (ImportError, ValueError):
        return False


def _origin(module: str) -> str | None:
    """Where ``module``'s top-level package would be imported from with the full ``sys.path``."""
    path = [os.getcwd() if p in ("", ".") else p for p in sys.path]
    try:
        spec = importlib.machinery.PathFinder.find_spec(module.split(".")[0], path)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return spec.origin or (list(spec.submodule_search_locations or []) or [None])[0]


def check_run_dir(run_dir: str | Path, trusted: bool, verb: str) -> None:
    """Refuse (ConfigError) to import the code ``run_dir`` names unless the rule of the module
    docstring allows it; with ``trusted`` (``--trust-run-dir``) allow it and say what is imported."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return  # the verb's own check names a missing run directory
    modules, files = named_code(run_dir)
    clean = _clean_path(run_dir)
    foreign = [m for m in modules if not _importable(m, clean)] + files
    if trusted:
        if foreign:
            print(f"ppokit {verb}: --trust-run-dir: importing {', '.join(foreign)}", file=sys.stderr)
        return
    owner = run_dir.stat().st_uid
    inside = [m for m in foreign if m in modules and _inside(_origin(m) or "/nonexistent", run_dir)]
    inside += [f for f in files if _inside(f, run_dir)]
    if foreign and (owner != os.getuid() or inside):
        why = (
            f"is owned by uid {owner}, not by you (uid {os.getuid()})"
            if owner != os.getuid()
            else f"ships the code itself ({', '.join(inside)} would be imported from inside it)"
        )
        raise ConfigError(
            f"run directory {str(run_dir)!r} {why}, and {verb} would import code it names that your "
            f"environment does not provide: {', '.join(foreign)}. Importing runs that code: pass "
            "--trust-run-dir if you trust this run directory"
        )
    if _inside(os.getcwd(), run_dir):  # e.g. `python -m ppokit eval .`: no file of the run shadows
        sys.path[:] = [p for p in sys.path if p in clean]  # an installed module of the same name
        from ppokit.rl import envfind  # nor is imported by one (envfind puts the cwd back otherwise)

        envfind.CWD_IMPORTS = False


__all__ = ["check_run_dir", "named_code"]
