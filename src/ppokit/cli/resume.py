"""``ppokit resume RUN_DIR``: continue any run, PPO, GRPO or RLHF-PPO, from its newest complete
checkpoint. What the run is comes from its newest checkpoint's ``meta.json`` (``kind`` for PPO,
``algo`` for the language-model trainers), else from its ``config.yaml``; only JSON and YAML are read
here, the algorithm is imported by the branch that runs it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ppokit.cli.options import add_overrides_option, add_progress_options, add_trust_option
from ppokit.cli.runs import run_kind, skipped_checkpoints
from ppokit.cli.trust import check_run_dir


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
    add_trust_option(p)
    add_progress_options(p)
    p.set_defaults(func=resume_command)


def resume_command(args: argparse.Namespace) -> int:
    """``ppokit resume RUN_DIR``: dispatch on the run's algorithm; a damaged newest checkpoint is
    named with why it is skipped."""
    for checkpoint, why in skipped_checkpoints(args.run_dir):
        print(f"ppokit resume: note: skipping {checkpoint}: {why}", file=sys.stderr)
    kind = run_kind(args.run_dir)
    check_run_dir(args.run_dir, args.trust_run_dir, "resume")  # untrusted run directories (issue 34)
    if kind == "ppo":
        from ppokit.cli.rl import resume_ppo

        return resume_ppo(args)
    from ppokit.cli.lm import resume_lm

    return resume_lm(args, kind)
