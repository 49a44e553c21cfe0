"""``ppokit export RUN_DIR --format onnx|torchscript [--out FILE]``: the run's policy as one graph from
the raw observation to the env's action, normaliser included (``ppokit.rl.export``). For a GRPO or
RLHF-PPO run, ``--format hf`` writes the policy as one ``save_pretrained`` directory, LoRA merged and
FSDP shards gathered (``ppokit.llm.export``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ppokit.cli.options import add_rows


def register(sub: Any) -> None:
    """Add ``export`` to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "export",
        help="Export a run's policy (normaliser and deterministic action included) to ONNX or TorchScript.",
        description="Write obs -> action as one graph: input 'obs' [batch, *obs_shape], output 'action'.",
    )
    add_rows(
        p,
        ("run_dir", "RUN_DIR", "Run directory written by `ppokit train` (or a model)."),
        # the choices of ppokit.rl.export.FORMATS, spelled here: --help must not import torch
        (
            "--format",
            None,
            "onnx (default) or torchscript; hf for a grpo / rlhf-ppo run (a save_pretrained directory).",
            {"choices": ("onnx", "torchscript", "hf"), "default": "onnx"},
        ),
        ("--out", "FILE", "Output file (default RUN_DIR/policy.onnx or policy.pt)."),
    )
    p.set_defaults(func=export_command)


def export_command(args: argparse.Namespace) -> int:
    """``ppokit export``: load the run's final model (or newest checkpoint) and write the graph."""
    from ppokit.rl.export import SUFFIX, export_policy
    from ppokit.rl.ppo import PPO

    run_dir = Path(args.run_dir)
    if args.format == "hf":  # a language-model run
        from ppokit.llm.export import export_model

        path = export_model(run_dir, Path(args.out) if args.out else run_dir / "export")
        print(f"{path}: save_pretrained directory of the policy (AutoModelForCausalLM loads it)")
        return 0
    out = Path(args.out) if args.out else run_dir / f"policy{SUFFIX[args.format]}"
    model = PPO.load(run_dir, tensorboard=False)
    try:
        path = export_policy(model, out, args.format)
    finally:
        model.close()
    norm = "with its observation normaliser" if model.obs_norm is not None else "no observation normaliser"
    print(f"{path}: {args.format} graph obs -> deterministic action ({norm})")
    return 0
