"""Language-model side of ppokit (GRPO, PPO for RLHF). Needs the ``llm`` extra (transformers).

``trainer.py`` (``LMTrainer``, what both trainers share) and ``loop.py`` (the run loop), ``config.py``
(``LMConfig``, the shared base config, and its sections), then one algorithm file and one config file
per algorithm: ``grpo.py`` + ``grpo_config.py``, ``rlhf_ppo.py`` + ``rlhf_ppo_config.py``. The names
below are imported lazily, so ``import ppokit.llm`` does not load transformers.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "LMTrainer": "ppokit.llm.trainer",
    "LMConfig": "ppokit.llm.config",
    "GRPOTrainer": "ppokit.llm.grpo",
    "GRPOConfig": "ppokit.llm.grpo_config",
    "RLHFPPOTrainer": "ppokit.llm.rlhf_ppo",
    "RLHFPPOConfig": "ppokit.llm.rlhf_ppo_config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ppokit.llm' has no attribute {name!r}")


__all__ = list(_LAZY)
