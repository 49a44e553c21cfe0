"""The ``ppokit`` command: ``train``, ``eval``, ``plot`` (``cli/rl.py``), the language-model verbs
``grpo`` and ``rlhf-ppo`` (``cli/lm.py``), and ``resume`` for any run (``cli/resume.py``).

This package is the top of the dependency graph: it imports ``ppokit.rl`` and ``ppokit.llm``, and
nothing in ppokit imports it (a test checks the layering). The verbs import their algorithm inside
the command function, so ``ppokit --help`` loads neither torch's models nor transformers.

Errors the user can fix (ConfigError, CheckpointError, ..., an OSError on a path, a missing optional
dependency; see ``cli/boundary.py``) print as one line and exit with code 2; ``--debug`` shows the
traceback instead. That boundary is ``main``, the only one; internal bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import sys

from ppokit.cli import export, lm, presets, resume, rl, tune
from ppokit.cli.boundary import OneLineParser, report
from ppokit.train.signals import exit_code


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every option has a one-line help)."""
    parser = OneLineParser(prog="ppokit", description="Proximal Policy Optimization, familiar and fast.")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks for errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rl.register(sub)
    resume.register(sub)
    lm.register(sub)
    export.register(sub)
    presets.register(sub)
    tune.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppokit`` console script (and of ``python -m ppokit``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # An empty value is a mistake (a shell variable that was not set), not a request for the default:
    # `--env ""` trained CartPole and `--model ""` the built-in tiny model (issue 16).
    empty = [k for k, v in vars(args).items() if v == "" and k != "command"]
    if empty:
        positional = empty[0] == "run_dir" and args.command in ("eval", "plot", "resume", "export")
        name = "RUN_DIR" if positional else "--" + empty[0].replace("_", "-")
        parser.error(f"{args.command} {name} '' (an empty value) is not allowed")
    try:
        result = args.func(args)
    except KeyboardInterrupt as e:  # Ctrl-C, a second signal (train/signals.StopNow), or user code's
        note = getattr(e, "checkpoint_note", None)
        print(f"ppokit {args.command}: interrupted" + (f"; {note}" if note else ""), file=sys.stderr)
        sys.exit(exit_code(e))
    except SystemExit as e:
        # sys.exit() in user code (an env factory, a policy, a callback, a wrapper's close()) is its
        # failure: it exited 0 (or exit(3) with 3) with no message (issue 34); nothing in ppokit's
        # verbs exits this way
        if args.debug:
            raise
        code = "" if e.code is None else repr(e.code)
        print(
            f"ppokit {args.command}: error: user code called sys.exit({code}) (SystemExit); the run is "
            "stopped as a failure",
            file=sys.stderr,
        )
        sys.exit(2)
    except Exception as e:
        code = None if args.debug else report(e, args.command)
        if code is None:  # --debug, or a bug in ppokit: the traceback
            raise
        sys.exit(code)
    return int(result or 0)


__all__ = ["build_parser", "main"]
