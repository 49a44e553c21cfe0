"""The ``ppokit`` command: ``train``, ``eval``, ``plot``, ``resume`` and the language-model verbs.

Errors ppokit raises on purpose (ConfigError, CheckpointError, ...) print as one line and exit with
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from ppokit.errors import PPOKitError


def add_overrides_option(p: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE``, repeatable, into ``args.overrides``; ``example`` shows a dotted key."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"Override a config key (dotted for sections, e.g. {example}); repeatable.",
    )


def _add_common_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env",
        metavar="ID",
        help="Gymnasium id, or module:Id (imports module first); uses configs/<ID>.yaml when it exists.",
    )
    p.add_argument(
        "--config", metavar="FILE.yaml", help="YAML config file (keys as in README's config table)."
    )
    p.add_argument(
        "--gym-packages",
        nargs="+",
        metavar="MODULE",
        help="Python modules to import before looking the env id up (they register their envs).",
    )
    p.add_argument("--total-timesteps", type=int, metavar="N", help="Environment steps to train for.")
    p.add_argument("--seed", type=int, metavar="N", help="Random seed.")
    p.add_argument("--num-envs", type=int, metavar="N", help="Environments stepped in parallel.")
    p.add_argument("--device", metavar="DEV", help="Torch device: cpu, cuda, cuda:N.")
    p.add_argument("--run-dir", metavar="DIR", help="Run directory (default runs/<env>-ppo-<timestamp>).")
    add_overrides_option(p, "network.hidden_sizes=[64,64]")
    p.add_argument("--no-eval", action="store_true", help="Skip the final evaluation.")
    p.add_argument("--no-progress", action="store_true", help="No live progress bar.")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every option has a one-line help)."""
    parser = argparse.ArgumentParser(
        prog="ppokit", description="Proximal Policy Optimization, familiar and fast."
    )
    parser.add_argument("--debug", action="store_true", help="Show tracebacks for errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="Train PPO on a Gymnasium environment (default: CartPole-v1).",
        description="Train PPO, then evaluate; prints the run directory and the result.",
    )
    _add_common_train_options(p)
    p.set_defaults(func=lambda a: __import__("ppokit.rl.runner", fromlist=["x"]).train_command(a))

    p = sub.add_parser("eval", help="Evaluate a run's final model (or its newest complete checkpoint).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="Run directory written by `ppokit train`.")
    p.add_argument("--episodes", type=int, default=20, metavar="N", help="Episodes to run (default 20).")
    p.add_argument(
        "--stochastic", action="store_true", help="Sample actions instead of the deterministic mode."
    )
    p.add_argument("--json", action="store_true", help="Print exactly one JSON object with the result.")
    p.add_argument("--seed", type=int, default=10_000, metavar="N", help="Seed of the evaluation episodes.")
    p.add_argument(
        "--env", metavar="ID", help="Evaluate on this Gymnasium id instead (same spaces required)."
    )
    p.set_defaults(func=lambda a: __import__("ppokit.rl.runner", fromlist=["x"]).eval_command(a))

    p = sub.add_parser("plot", help="(Re)draw a run's plots from its CSV files.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="Run directory.")
    p.set_defaults(func=lambda a: __import__("ppokit.rl.runner", fromlist=["x"]).plot_command(a))

    p = sub.add_parser("resume", help="Continue an interrupted run from its newest complete checkpoint.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="Run directory to continue.")
    p.add_argument(
        "--total-timesteps", type=int, metavar="N", help="New total step budget (default: the run's)."
    )
    p.add_argument("--no-eval", action="store_true", help="Skip the final evaluation.")
    p.add_argument("--no-progress", action="store_true", help="No live progress bar.")
    p.set_defaults(func=lambda a: __import__("ppokit.rl.runner", fromlist=["x"]).resume_command(a))

    try:  # language-model verbs register themselves; the module imports transformers lazily
        from ppokit.llm.cli import register
    except ImportError:
        register = None
    if register is not None:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppokit`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except PPOKitError as e:
        if args.debug:
            raise
        print(f"ppokit {args.command}: error: {e}", file=sys.stderr)
        if getattr(e, "details", None):  # e.g. the traceback of a failed environment worker
            print(e.details.rstrip(), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"ppokit {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
