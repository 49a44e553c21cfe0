"""``ppokit tune``: an Optuna hyperparameter search for PPO on one environment (rl/tune.py)."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from ppokit.cli.options import INT, SEED, add_overrides_option, add_rows
from ppokit.errors import ConfigError


def register(sub: Any) -> None:
    """Add ``tune`` to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "tune",
        help="Search PPO hyperparameters with Optuna (needs ppokit[tune]); the study resumes.",
        description="Sample configs, train each for --budget steps, prune the weak (median rule), and "
        "write trials.md/.csv/.png and best.yaml (a preset) into the tune directory.",
    )
    add_rows(
        p,
        ("--env", "ID", "Gymnasium id or preset name (its preset is the base config)."),
        ("--config", "FILE.yaml", "Base config file (or an rl-zoo file)."),
        ("--zoo", "FILE.yml", "rl-baselines3-zoo hyperparameter file for the base config."),
        ("--n-trials", "N", "Finished trials the study should hold (a resumed study runs the rest).", INT),
        ("--budget", "STEPS", "Environment steps per trial (default 20000).", INT),
        ("--evaluations", "N", "Evaluations per trial, reported to the pruner (default 4).", INT),
        ("--eval-episodes", "N", "Episodes per evaluation (default 5).", INT),
        ("--pruner", "NAME", "median (Optuna's MedianPruner) or none.", {"choices": ("median", "none")}),
        ("--storage", "URL", "Optuna storage (default sqlite:///TUNE_DIR/study.db)."),
        ("--study-name", "NAME", "Study name in the storage (default ppokit-<env>)."),
        ("--tune-dir", "DIR", "Where the study and its report go (default runs/tune-<env>-<timestamp>)."),
        SEED,
        ("--num-envs", "N", "Environments stepped in parallel.", INT),
    )
    add_overrides_option(p, "network.hidden_sizes=[64,64]")
    p.set_defaults(
        func=tune_command, n_trials=20, budget=20_000, evaluations=4, eval_episodes=5, pruner="median"
    )


def tune_command(args: argparse.Namespace) -> int:
    """``ppokit tune``: resolve the base config as ``ppokit train`` does, then run or resume the study."""
    from ppokit.cli.rl import resolve_config, run_name
    from ppokit.rl.tune import TuneSettings, optuna_module, run_study

    optuna_module()  # a missing Optuna is said before anything else happens
    for name in ("n_trials", "budget", "evaluations", "eval_episodes"):
        if getattr(args, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')}={getattr(args, name)} is not allowed; must be >= 1"
            )
    if args.evaluations > args.budget:
        raise ConfigError(
            f"--evaluations={args.evaluations} is not allowed; must be <= --budget={args.budget}"
        )
    # every trial samples its own n_steps and batch_size: the base's batch_size must not refuse a base
    # whose --num-envs makes the preset's rollout smaller than the preset's minibatch
    args.overrides = ["batch_size=1", *args.overrides]
    base = resolve_config(args)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.tune_dir) if args.tune_dir else Path("runs") / f"tune-{run_name(base)}-{stamp}"
    settings = TuneSettings(
        base=base,
        out_dir=out,
        n_trials=args.n_trials,
        budget=args.budget,
        evaluations=args.evaluations,
        eval_episodes=args.eval_episodes,
        storage=args.storage,
        study_name=args.study_name,
        pruner=args.pruner,
        seed=base.seed,
    )
    print(f"tune directory: {out} (study {settings.name!r} in {settings.storage_url})")
    run_study(settings)
    return 0
