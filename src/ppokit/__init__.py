"""ppokit: Proximal Policy Optimization for Gymnasium environments and causal language models.

Gymnasium side: ``PPO``, ``PPOConfig``, ``Policy`` (the policy interface, to bring your own).
Language-model side (optional extra ``ppokit[llm]``):
``GRPOTrainer``, ``GRPOConfig`` and friends, imported lazily so ``import ppokit`` never loads
transformers.
"""

from __future__ import annotations

from typing import Any

from ppokit.errors import CheckpointError, ConfigError, EnvError, EnvStepError, NonFiniteError, PPOKitError

__version__ = "0.1.0"

_LAZY = {
    "PPO": ("ppokit.rl.ppo", "PPO"),
    "PPOConfig": ("ppokit.rl.config", "PPOConfig"),
    "NetworkConfig": ("ppokit.rl.config", "NetworkConfig"),
    "Policy": ("ppokit.rl.policy", "Policy"),
    "MlpActorCritic": ("ppokit.rl.networks", "MlpActorCritic"),
    "GRPOTrainer": ("ppokit.llm.grpo", "GRPOTrainer"),
    "GRPOConfig": ("ppokit.llm.grpo_config", "GRPOConfig"),
    "RLHFPPOTrainer": ("ppokit.llm.rlhf_ppo", "RLHFPPOTrainer"),
    "RLHFPPOConfig": ("ppokit.llm.rlhf_ppo_config", "RLHFPPOConfig"),
    "LMConfig": ("ppokit.llm.config", "LMConfig"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ppokit' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "ConfigError",
    "EnvError",
    "EnvStepError",
    "NonFiniteError",
    "PPOKitError",
    *_LAZY,
]
