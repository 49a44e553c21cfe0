"""Presets: the YAML configs shipped inside the package (``ppokit/presets/``), found by name.

A preset is named by the Gymnasium id it is for (``ALE/Breakout-v5`` -> ``presets/ALE/Breakout-v5.yaml``)
or by a name of its own (``CartPole-v1-fast``, whose file says ``env_id: CartPole-v1``). The files are
package data (pyproject.toml), so ``ppokit train --env ALE/Breakout-v5`` finds the Breakout preset from
an installed wheel too; before issue 30 they lived only in the source tree's ``configs/`` (kept there as
a symlink), and an installed ppokit trained Breakout with the generic defaults without a word.

Lookup order: ``./configs/<name>.yaml`` in the working directory (a user's own file wins), then the
shipped preset. Each file's header comment says where its values come from; ``ppokit presets`` lists
the name, the env, the budget and that source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppokit.config import read_yaml_mapping

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


def preset_dirs() -> list[Path]:
    """Where presets are looked up, first match wins: ``./configs``, then the shipped presets."""
    return [Path.cwd() / "configs", PRESETS_DIR]


def find_preset(name: str) -> Path | None:
    """The file of preset ``name`` (an env id or a preset's own name), or None when there is none."""
    if not name or name.startswith(("/", ".")) or ".." in name.split("/"):
        return None  # a name, not a path: `--env ../x` must not read files outside the preset folders
    for d in preset_dirs():
        try:
            if (d / f"{name}.yaml").is_file():
                return d / f"{name}.yaml"
        except OSError:  # an id too long for a file name has no preset (the env check names it)
            return None
    return None


@dataclass
class PresetInfo:
    """One preset as ``ppokit presets`` lists it."""

    name: str
    path: Path
    env_id: str
    total_timesteps: int | None
    source: str


def _source(text: str, name: str, env_id: str) -> str:
    """Where a preset's values come from: its header comment's first clause (and a URL if it cites
    one), e.g. "rl-baselines3-zoo's PPO hyperparameters"."""
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    first = header[0] if header else ""
    for prefix in (f"{name}:", f"{env_id}:", f"{env_id},", f"{name},"):
        if first.startswith(prefix):
            first = first[len(prefix) :].strip()
            break
    first = re.split(r" \(|; |\. ", first, maxsplit=1)[0].rstrip(".,:")
    url = re.search(r"https?://[^\s)]+", " ".join(header))
    return first + (f" <{url.group(0)}>" if url else "")


def list_presets() -> list[PresetInfo]:
    """Every shipped preset (and every ``./configs`` file that shadows or adds one), sorted by name."""
    found: dict[str, Path] = {}
    for d in reversed(preset_dirs()):  # the working directory's files override the shipped ones
        if d.is_dir():
            for path in sorted(d.rglob("*.yaml")):
                found[path.relative_to(d).with_suffix("").as_posix()] = path
    out = []
    for name, path in sorted(found.items(), key=lambda kv: kv[0].lower()):
        try:
            data: dict[str, Any] = read_yaml_mapping(path)
        except Exception:  # noqa: BLE001 - a broken user file is listed as such, not a crash
            data = {}
        env_id = str(data.get("env_id", "?"))
        steps = data.get("total_timesteps")
        out.append(
            PresetInfo(
                name=name,
                path=path,
                env_id=env_id,
                total_timesteps=int(steps) if isinstance(steps, (int, float)) else None,
                source=_source(path.read_text(encoding="utf-8"), name, env_id),
            )
        )
    return out


__all__ = ["PRESETS_DIR", "PresetInfo", "find_preset", "list_presets", "preset_dirs"]
