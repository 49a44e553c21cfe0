"""What a run directory holds, read from its JSON and YAML only (no algorithm imported): which
algorithm wrote it (``run_kind``) and which of its newest checkpoints are damaged
(``skipped_checkpoints``). ``ppokit resume`` dispatches on the first; ``ppokit eval``/``plot`` use it to
tell a language-model run from a PPO run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ppokit.errors import ConfigError

_STEP = re.compile(r"^step[_-](\d+)$")  # step_<12 digits> (every run), step-<6 digits> (LM, ppokit 0.1)


def checkpoint_meta(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's ``meta.json`` ({} when missing or unreadable), in either layout; only JSON is read."""
    for path in (checkpoint / "meta.json", checkpoint / "trainer" / "meta.json"):
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError:
                return {}
    return {}


def run_kind(run_dir: str | Path) -> str:
    """``"ppo"``, ``"grpo"`` or ``"rlhf_ppo"``: the algorithm of the run in ``run_dir`` (``"ppo"``
    when nothing says otherwise, so PPO's own resume reports what is missing)."""
    root = Path(run_dir) / "checkpoints"
    steps = [p for p in root.iterdir() if _STEP.match(p.name)] if root.is_dir() else []
    for checkpoint in sorted(steps, key=lambda p: int(_STEP.match(p.name).group(1)), reverse=True):
        meta = checkpoint_meta(checkpoint)
        if meta.get("kind", "").startswith("ppokit.rl"):
            return "ppo"
        if meta.get("algo") in ("grpo", "rlhf_ppo"):
            return meta["algo"]
    config = Path(run_dir) / "config.yaml"
    if config.is_file():
        import yaml

        try:
            data = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError as e:  # a run with no checkpoint and a broken config.yaml: one line
            raise ConfigError(
                f"{str(config)!r} is not valid YAML ({' '.join(str(e).split())}) and the run has no "
                "complete checkpoint to resume from; fix the file or start a new run"
            ) from None
        if isinstance(data, dict) and "env_id" not in data:
            return "rlhf_ppo" if "value_model" in data else "grpo" if "num_generations" in data else "ppo"
    return "ppo"


def skipped_checkpoints(run_dir: str | Path) -> list[tuple[Path, str]]:
    """The checkpoints newer than the newest complete one, each with why it is not complete: what a
    resume skips (and says so; issue 34: eleven kinds of damage were skipped without a word)."""
    from ppokit.train.checkpoint import why_incomplete

    root = Path(run_dir) / "checkpoints"
    steps = [p for p in root.iterdir() if p.is_dir() and _STEP.match(p.name)] if root.is_dir() else []
    skipped = []
    for checkpoint in sorted(steps, key=lambda p: int(_STEP.match(p.name).group(1)), reverse=True):
        if checkpoint.name.startswith("step-"):  # ppokit 0.1's LM layout: its own reader checks it
            break
        why = why_incomplete(checkpoint)
        if why is None:
            break
        skipped.append((checkpoint, why))
    return skipped


__all__ = ["checkpoint_meta", "run_kind", "skipped_checkpoints"]
