"""Which policy a ``PPO`` gets: the built-in one for its ``network`` settings (the MLP of
``networks.py``, the encoders of ``encoders.py``, the recurrent policy of ``recurrent.py``), or the
user's ``policy=`` argument checked against the ``Policy`` interface.

Kept apart from ``networks.py`` because it chooses among modules that build on ``networks.py``'s
layers: in that file the choice was an import cycle (networks -> encoders -> networks), issue 29.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gymnasium as gym
from torch import nn

from ppokit.errors import ConfigError
from ppokit.rl.config import NetworkConfig
from ppokit.rl.encoders import EncoderActorCritic
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.policy import Policy
from ppokit.rl.recurrent import build_recurrent_policy
from ppokit.rl.rollout import available_memory
from ppokit.rl.spaces import ObsLayout


def build_policy(observation_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig) -> Policy:
    """The built-in policy for ``network`` settings ``cfg``: the MLP for Box observations, else an
    ``EncoderActorCritic`` (rl/encoders.py: CNN for images, one-hot for discrete, Dict/Tuple per key);
    recurrent: rl/recurrent.py (on the same encoders)."""
    layout = ObsLayout(observation_space)
    _check_fits_in_memory(int(math.prod(layout.shape)), cfg)
    kind = layout.kind
    if cfg.recurrent != "none":
        return build_recurrent_policy(observation_space, action_space, cfg)
    if kind == "box":
        return MlpActorCritic(observation_space, action_space, cfg)
    return EncoderActorCritic(observation_space, action_space, cfg)


def _check_fits_in_memory(obs_size: int, cfg: NetworkConfig) -> None:
    """Refuse a network whose weights, gradients and Adam moments (4 float32 copies) cannot fit in the
    memory available: ``hidden_sizes=[1000000000]`` hung in the weights' initialisation or ended in an
    allocator error (issue 34). The count is the MLP's (actor and critic; the widest layers dominate),
    a lower bound for the other built-in networks."""
    widths = [obs_size, *cfg.hidden_sizes, 1]
    if cfg.recurrent != "none":
        widths.insert(1, 4 * cfg.recurrent_hidden_size)  # the LSTM's gates
    params = 2 * sum(a * b for a, b in zip(widths, widths[1:]))
    free = available_memory()
    if free is not None and 16 * params > free:
        raise ConfigError(
            f"network.hidden_sizes={cfg.hidden_sizes} needs about {16 * params / 2**30:,.1f} GiB for the "
            f"weights, gradients and Adam moments; this machine has {free / 2**30:,.1f} GiB available: "
            "use narrower layers"
        )


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
