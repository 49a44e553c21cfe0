"""The Weights & Biases metric sink (``report_to: [wandb]``): each metrics row, as ``metrics.csv``
gets it, logged to a wandb run whose files live under ``RUN_DIR/wandb``. With ``WANDB_MODE=offline``
nothing leaves the machine (``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it later).

``Tracker`` (tracking.py) opens it for the classic side; wandb is imported only when a run asks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ppokit.errors import ConfigError


class WandbSink:
    """One wandb run for one run directory: ``log(step, row)`` and ``close()``."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any] | None = None, project: str = "ppokit"):
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "report_to=['wandb'] needs the wandb package: pip install 'ppokit[wandb]'"
            ) from None
        run_dir = Path(run_dir)
        # reinit: a Python session may train several models one after the other, each its own run
        self.run = wandb.init(
            project=project, name=run_dir.name, dir=str(run_dir), config=config or {}, reinit=True
        )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One row of scalars at ``step`` (non-finite and non-numeric values are left out, as in TB)."""
        row = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        self.run.log(row, step=int(step))

    def close(self) -> None:
        """Finish the wandb run (offline: its files are complete after this)."""
        self.run.finish()
