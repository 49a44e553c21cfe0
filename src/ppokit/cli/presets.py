"""``ppokit presets``: the presets ``ppokit train --env NAME`` finds (rl/presets.py), with their env,
budget and the source of their values."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    """Add ``presets`` to the ``ppokit`` sub-parsers."""
    p = sub.add_parser(
        "presets",
        help="List the presets `ppokit train --env NAME` uses, with their sources and budgets.",
        description="Presets are found by name: ./configs/NAME.yaml first, then those shipped with ppokit.",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object per preset, one per line.")
    p.set_defaults(func=presets_command)


def presets_command(args: argparse.Namespace) -> int:
    """``ppokit presets``: one line per preset (name, env, budget, source, file)."""
    from ppokit.rl.presets import list_presets, preset_dirs

    rows = list_presets()
    if args.json:
        for r in rows:
            print(json.dumps({**vars(r), "path": str(r.path)}))
        return 0
    width = max(len(r.name) for r in rows)
    for r in rows:
        steps = f"{r.total_timesteps:,}" if r.total_timesteps else "?"
        env = "" if r.env_id == r.name else f" (env {r.env_id})"
        print(f"{r.name:<{width}}  {steps:>10} steps  {r.source}{env}")
    where = " then ".join(str(d) for d in preset_dirs() if d.is_dir())
    print(f"{len(rows)} presets, looked up in {where} (`ppokit train --env NAME` uses NAME.yaml)")
    return 0
