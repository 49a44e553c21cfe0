"""Export a trained policy for deployment: one graph from the raw observation batch to the action the
env takes, with nothing left for the caller to reimplement.

The graph (``DeployedActor``) holds, in order:

1. the observation normaliser's statistics as constants: ``clip((obs - mean) / sqrt(var + eps),
   -clip, clip)``, exactly as ``ObsNormalizer`` applies them in ``PPO.predict`` (a traced
   ``policy`` alone leaves this out, and then every action of a model trained with
   ``normalize_obs`` is wrong: issue 30);
2. the actor (the critic is not needed to act and is left out);
3. the deterministic action and its post-processing as ``ActionDistribution.to_env`` does it: argmax
   (+ the space's ``start``) for Discrete and MultiDiscrete, the mean clipped to the bounds for a
   Box, squashed by tanh for ``action_bounds: tanh``, ``logit > 0`` for MultiBinary.

Supported: non-recurrent policies on Box observations (the built-in MLP) and on image observations
(the built-in CNN: the graph takes the uint8 frames), without action masks; models trained on a
batched torch env (issue 32: the on-device normaliser's statistics, Gaussian or Beta actions with
their bounds; for the asymmetric actor-critic the actor alone, whose input is the "policy"
observation group, i.e. the first ``actor_dim`` columns of the stored ``[policy | critic]``).
Everything else is refused with a one-line ``ConfigError`` that names what is not supported (fail
closed). Formats: ``onnx`` (``torch.onnx``'s TorchScript-based exporter; check it with onnxruntime) and
``torchscript`` (``torch.jit.trace``, loadable with ``torch.jit.load`` without ppokit).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.errors import ConfigError, MissingDependencyError
from ppokit.rl.batched import AsymmetricActorCritic, BatchedEnv
from ppokit.rl.distributions import BETA_EPS
from ppokit.rl.networks import MlpActorCritic
from ppokit.rl.policy import Policy

if TYPE_CHECKING:
    from ppokit.rl.ppo import PPO

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
EXPORTABLE_OBS = ("box", "image")  # ObsLayout kinds whose raw observation is one array


class DeployedActor(nn.Module):
    """``obs [B, *obs_shape]`` (as the env gives it) -> the deterministic action ``[B, *action_shape]``
    as the env takes it (``PPO.predict(obs, deterministic=True)``), in one traceable module."""

    def __init__(self, model: PPO):
        super().__init__()
        check_exportable(model)
        # a CPU copy without gradients: the model keeps training (and its device) untouched
        self.policy: Policy = copy.deepcopy(model.policy).to("cpu").requires_grad_(False)
        dist = self.policy.dist
        self.kind, self.nvec, self.env_shape = dist.kind, list(dist.nvec), tuple(dist.env_shape)
        self.obs_dtype = model.obs_layout.dtype
        self.actor_dim = actor_input_dim(model)
        norm = model.obs_norm
        self.normalize = norm is not None
        if norm is not None:  # float64 statistics, applied in float32 (predict casts after clipping)
            # the batched path keeps them as device tensors (issue 32): read them back to the host
            mean, var = (_host(v)[: self.actor_dim] for v in (norm.rms.mean, norm.rms.var))
            self.register_buffer("obs_mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("obs_std", torch.as_tensor(np.sqrt(var + norm.eps), dtype=torch.float32))
            self.obs_clip = float(norm.clip)
        start = np.asarray(dist.start if dist.start is not None else 0).reshape(-1)
        self.register_buffer("start", torch.as_tensor(start, dtype=torch.long))
        if dist.gaussian or self.kind == "beta":
            self.register_buffer("low", torch.as_tensor(dist.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(dist.high, dtype=torch.float32))
        self.action_dtype = torch.from_numpy(np.zeros(0, dtype=model.action_space.dtype)).dtype

    def actor_output(self, x: torch.Tensor) -> torch.Tensor:
        """Logits or Gaussian mean ``[B, out_dim]``; the built-in MLP's actor alone (no critic)."""
        p = self.policy
        if isinstance(p, AsymmetricActorCritic):  # x is the "policy" group alone: no critic input
            return p.actor_head(p.actor_body(x.reshape(x.shape[0], -1)))
        if isinstance(p, MlpActorCritic):
            x = x.reshape(x.shape[0], -1)
            return p.actor_head(p.trunk(x) if p.trunk is not None else p.actor_body(x))
        return p(x)[0]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic env action for a batch of raw observations."""
        x = obs.to(self.obs_dtype)
        if self.normalize:
            x = torch.clamp((x - self.obs_mean) / self.obs_std, -self.obs_clip, self.obs_clip)
        out = self.actor_output(x).float()
        B = out.shape[0]
        if self.kind == "discrete":
            return out.argmax(-1) + self.start
        if self.kind == "multidiscrete":
            parts = [logits.argmax(-1) for logits in torch.split(out, self.nvec, dim=-1)]
            return (torch.stack(parts, dim=-1) + self.start).reshape(B, *self.env_shape)
        if self.kind == "multibinary":
            return (out > 0).to(self.action_dtype).reshape(B, *self.env_shape)
        if self.kind == "beta":  # the Beta's mode, as ActionDistribution.sample(deterministic=True)
            alpha, beta = self.policy.dist.beta_params(out)
            x = ((alpha - 1.0) / (alpha + beta - 2.0)).clamp(BETA_EPS, 1.0 - BETA_EPS)
            out = self.low + x * (self.high - self.low)
        if self.kind == "squashed_box":
            out = self.low + (torch.tanh(out) + 1.0) * (self.high - self.low) / 2.0
        # box (and squashed, against rounding): the mean clipped to the bounds, as to_env
        out = torch.minimum(torch.maximum(out, self.low), self.high)
        return out.reshape(B, *self.env_shape).to(self.action_dtype)


def _host(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Statistics as a float64 numpy array (device tensors on the batched path are copied back)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def actor_input_dim(model: PPO) -> int | None:
    """The width of the graph's input when the actor reads only the "policy" observation group (the
    asymmetric actor-critic of a batched env, issue 32); None: the whole observation."""
    return model.policy.actor_dim if isinstance(model.policy, AsymmetricActorCritic) else None


def input_space(model: PPO) -> gym.spaces.Space:
    """The observation space the exported graph takes (the "policy" group of an asymmetric model)."""
    space, width = model.observation_space, actor_input_dim(model)
    if width is None:
        return space
    return gym.spaces.Box(space.low[:width], space.high[:width], (width,), space.dtype)


def check_exportable(model: PPO) -> None:
    """Raise ConfigError naming the reason unless ``DeployedActor`` can represent ``model``."""
    if model.recurrent:
        raise ConfigError(
            f"export of a recurrent policy ({type(model.policy).__name__}) is not supported: its state "
            "would be a second input; export a policy with network.recurrent=none"
        )
    if model.masked:
        raise ConfigError(
            "export of a policy trained with action masks is not supported: the mask would be a second "
            "input; use PPO.predict(obs, action_masks=...)"
        )
    venv = getattr(model, "venv", None)
    if isinstance(venv, BatchedEnv) and venv.critic_dim is not None and actor_input_dim(model) is None:
        raise ConfigError(
            f"export of policy {type(model.policy).__name__} on an env with a 'critic' observation group "
            "is not supported: which columns its actor reads is unknown; the built-in "
            "AsymmetricActorCritic exports its actor on the 'policy' group"
        )
    kind = model.obs_layout.kind
    if kind not in EXPORTABLE_OBS:
        raise ConfigError(
            f"export for {kind} observations ({model.observation_space}) is not supported; supported: "
            "Box and image observations (Dict/Tuple/Discrete are packed in numpy before the policy)"
        )


def export_policy(model: PPO, path: str | Path, fmt: str = "onnx") -> Path:
    """Write ``model``'s deployable actor (``DeployedActor``) to ``path`` in format ``fmt``
    (``onnx`` or ``torchscript``); returns the path. The input is named ``obs`` (batch axis dynamic),
    the output ``action``."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not allowed; use one of {', '.join(FORMATS)}")
    actor = DeployedActor(model).eval()
    example = torch.as_tensor(input_space(model).sample()[None]).to(model.obs_layout.dtype)
    example = torch.cat([example, example])  # batch 2: the trace must not specialise on a batch of 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # torch's trace/legacy-exporter deprecation notes
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                _export_onnx(actor, example, path, model)
            else:
                torch.jit.trace(actor, example).save(str(path))
    except (RuntimeError, TypeError, torch.jit.Error) as e:  # a custom policy the tracer cannot follow
        raise ConfigError(
            f"policy {type(model.policy).__name__} could not be traced for {fmt} export: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    return path


def export_onnx(model: PPO, path: str | Path) -> Path:
    """``export_policy(model, path, "onnx")``: an ONNX graph ``obs -> action`` (see the module)."""
    return export_policy(model, path, "onnx")


def _export_onnx(actor: DeployedActor, example: torch.Tensor, path: Path, model: PPO) -> None:
    try:
        import onnx
    except ImportError:
        msg = "export --format onnx needs onnx: pip install 'ppokit[export]'"
        raise MissingDependencyError(msg) from None
    # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles these small graphs
    torch.onnx.export(
        actor,
        (example,),
        str(path),
        dynamo=False,
        input_names=["obs"],
        output_names=["action"],
        dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
        opset_version=17,
    )
    graph = onnx.load(str(path))
    meta = {
        "producer": "ppokit",
        "env_id": str(model.config.env_id),
        "observation_space": str(input_space(model)),
        "observation_group": "policy" if actor.actor_dim is not None else "all",
        "action_space": str(model.action_space),
        "normalize_obs": str(actor.normalize),
        "action": "deterministic, as the env takes it",
    }
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
