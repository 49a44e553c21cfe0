"""``ppokit resume RUN_DIR``: continue any run, PPO, GRPO or RLHF-PPO, from its newest complete
checkpoint. What the run is comes from its newest checkpoint's ``meta.json`` (``kind`` for PPO,
``algo`` for the language-model trainers), else from its ``config.yaml``; only JSON and YAML are read
here, the algorithm is imported by the branch that runs it."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ppokit.cli.options import add_overrides_option, add_progress_options

_STEP = re.compile(r"^step[_-](\d+)$")  # step_<12 digits> (every run), step-<6 digits> (LM, ppokit 0.1)


def register(sub: Any) -> None:
    """Add ``resume`` to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "resume",
        help="Continue an interrupted run (PPO, GRPO or RLHF-PPO) from its newest complete checkpoint.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="Run directory to continue.")
    p.add_argument(
        "--total-timesteps",
        type=int,
        metavar="N",
        help="PPO runs: new total step budget (default: the run's).",
    )
    p.add_argument("--max-steps", type=int, metavar="N", help="GRPO and RLHF-PPO runs: new total of steps.")
    add_overrides_option(p, "eval_every=50; GRPO and RLHF-PPO runs")
    add_progress_options(p)
    p.set_defaults(func=resume_command)


def _meta(checkpoint: Path) -> dict[str, Any]:
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
        meta = _meta(checkpoint)
        if meta.get("kind", "").startswith("ppokit.rl"):
            return "ppo"
        if meta.get("algo") in ("grpo", "rlhf_ppo"):
            return meta["algo"]
    config = Path(run_dir) / "config.yaml"
    if config.is_file():
        import yaml

        data = yaml.safe_load(config.read_text()) or {}
        if isinstance(data, dict) and "env_id" not in data:
            return "rlhf_ppo" if "value_model" in data else "grpo" if "num_generations" in data else "ppo"
    return "ppo"


def resume_command(args: argparse.Namespace) -> int:
    """``ppokit resume RUN_DIR``: dispatch on the run's algorithm."""
    kind = run_kind(args.run_dir)
    if kind == "ppo":
        from ppokit.cli.rl import resume_ppo

        return resume_ppo(args)
    from ppokit.cli.lm import resume_lm

    return resume_lm(args, kind)
