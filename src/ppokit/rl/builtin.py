"""Which policy a ``PPO`` gets: the built-in one for its ``network`` settings (the MLP of
``networks.py``, the encoders of ``encoders.py``, the recurrent policy of ``recurrent.py``), or the
user's ``policy=`` argument checked against the ``Policy`` interface.

Kept apart from ``networks.py`` because it chooses among modules that build on ``networks.py``'s
layers: in that file the choice was an import cycle (networks -> encoders -> networks), issue 29.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
from torch import nn

from ppokit.errors import ConfigError
from ppokit.rl.config import NetworkConfig
from ppokit.rl.encoders import EncoderActorCritic
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.policy import Policy
from ppokit.rl.recurrent import build_recurrent_policy
from ppokit.rl.spaces import ObsLayout


def build_policy(observation_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig) -> Policy:
    """The built-in policy for ``network`` settings ``cfg``: the MLP for Box observations, else an
    ``EncoderActorCritic`` (rl/encoders.py: CNN for images, one-hot for discrete, Dict/Tuple per key);
    recurrent: rl/recurrent.py (on the same encoders)."""
    kind = ObsLayout(observation_space).kind
    if cfg.recurrent != "none":
        return build_recurrent_policy(observation_space, action_space, cfg)
    if kind == "box":
        return MlpActorCritic(observation_space, action_space, cfg)
    return EncoderActorCritic(observation_space, action_space, cfg)


PolicySpec = Policy | Callable[[gym.Space, gym.Space], Policy] | None


def make_policy(
    spec: PolicySpec, observation_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig
) -> Policy:
    """The policy ``PPO(policy=spec)`` asks for: None is the built-in one for ``cfg``; a ``Policy``
    instance is used as it is; anything else is called with the spaces and must return a ``Policy``."""
    if spec is None:
        return build_policy(observation_space, action_space, cfg)
    built = spec if isinstance(spec, nn.Module) else spec(observation_space, action_space)
    if not isinstance(built, Policy):
        raise ConfigError(
            f"policy={type(built).__name__} is not allowed; pass a ppokit.Policy subclass instance "
            "(implement forward(obs) -> (out, value)) or a callable "
            "(observation_space, action_space) -> Policy"
        )
    return built
