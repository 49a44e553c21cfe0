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
    # Stable-Baselines3's names (docs/migrating-from-sb3.md)
    "evaluate_policy": ("ppokit.rl.sb3", "evaluate_policy"),
    "make_vec_env": ("ppokit.rl.sb3", "make_vec_env"),
    "VecNormalize": ("ppokit.rl.sb3", "VecNormalize"),
    "BaseCallback": ("ppokit.rl.callbacks", "BaseCallback"),
    "CallbackList": ("ppokit.rl.callbacks", "CallbackList"),
    "EvalCallback": ("ppokit.rl.callbacks", "EvalCallback"),
    "CheckpointCallback": ("ppokit.rl.callbacks", "CheckpointCallback"),
    "EveryNTimesteps": ("ppokit.rl.callbacks", "EveryNTimesteps"),
    "StopTrainingOnRewardThreshold": ("ppokit.rl.callbacks", "StopTrainingOnRewardThreshold"),
    "StopTrainingOnNoModelImprovement": ("ppokit.rl.callbacks", "StopTrainingOnNoModelImprovement"),
    "GRPOTrainer": ("ppokit.llm.grpo", "GRPOTrainer"),
    "GRPOConfig": ("ppokit.llm.grpo_config", "GRPOConfig"),
    "RLHFPPOTrainer": ("ppokit.llm.rlhf_ppo", "RLHFPPOTrainer"),
    "RLHFPPOConfig": ("ppokit.llm.rlhf_ppo_config", "RLHFPPOConfig"),
    "LMConfig": ("ppokit.llm.config", "LMConfig"),
}


def _register_envs() -> None:
    """Register the ``ppokit/`` env ids, so ``gym.make("ppokit/...")`` works right after ``import
    ppokit`` (issue 30: it raised NamespaceNotFound until a PPO existed). Gymnasium 1.x has no plugin
    hook, so registering means importing it; that costs ~0.15 s and is skipped where gymnasium is not
    installed (an LM-only install) or not importable."""
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        return
    import ppokit.rl.toy_envs  # noqa: F401  (registers on import; numpy and gymnasium only)


_register_envs()


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
