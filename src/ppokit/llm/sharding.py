"""FSDP2 for the language-model trainers: ``distributed.strategy: fsdp`` under torchrun.

With ``ddp`` (the default) every rank holds the whole policy, reference, critic and AdamW state and
the guarded step all-reduces the gradients (``ppokit.train.step``). With ``fsdp`` each of those
modules is cut per transformer block with torch's own sharding engine, FSDP2
(``torch.distributed.fsdp.fully_shard``; Zhao et al. 2023, *PyTorch FSDP*, https://arxiv.org/abs/2304.11277):
a rank keeps 1/N of every parameter, gradient and optimizer moment, a block's full parameters exist
only while that block runs (all-gathered before its forward and backward, freed after), and the
gradients are reduce-scattered (averaged over ranks) during the backward pass. Per-rank memory for
weights + gradients + Adam is then ~1/N of DDP's plus one gathered block (docs/fsdp-memory.md measures it).

What this module does, and why each piece is here:

- ``shard_modules`` cuts a model per block (the classes the model lists in ``_no_split_modules``, the
  same units accelerate and TRL shard) and then at the root (embeddings, final norm and a tied
  output layer stay together: tied weights must live in one FSDP unit). Always on an explicit
  one-dimensional device mesh. ``bf16``/``fp16``: FSDP's mixed precision (half-precision parameters
  for compute, float32 gradient reduction and float32 master shards); ``cpu_offload``: the shards and
  their optimizer state live in CPU memory between uses.
- ``call(model, fn, ...)``: ppokit computes log-probs from the trunk's hidden states chunk by chunk
  (``generation.completion_logprobs``), which calls the trunk and the output layer directly, not the
  root's ``forward``. FSDP only gathers the root's parameters around ``forward``, so such a function
  is run through a method registered with ``register_fsdp_forward_method``.
- ``full_state_dict``: generation runs one forward per token, and ranks stop at different lengths;
  with sharded blocks each forward is a collective, so a rank that finished early would leave the
  others waiting forever. Sampling and evaluation therefore run on an unsharded copy of the policy
  (``LMTrainer.generation_model``) whose weights are all-gathered from the shards when sampling
  starts and freed when it ends (``release``): generation itself needs no collective. The cost is
  the policy's whole weights on every rank while it samples, without gradients or optimizer state
  (TRL gathers ZeRO-3 weights for generation the same way; a colocated vLLM engine holds them all the
  time).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ppokit.errors import ConfigError

_CALL = "_ppokit_fsdp_call"  # the registered forward method of a sharded root (see ``call``)


def _fsdp() -> Any:
    from torch.distributed import fsdp

    return fsdp


def device_mesh(device: torch.device, world_size: int) -> Any:
    """The one-dimensional mesh of all ranks on ``device``'s type (FSDP2 is always given one
    explicitly: without it each call would build its own from the default group)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (world_size,), mesh_dim_names=("dp",))


def is_sharded(module: Any) -> bool:
    """Whether ``module`` is the root of an FSDP2-sharded model."""
    return module is not None and isinstance(module, _fsdp().FSDPModule)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model: modules whose class the model lists in
    ``_no_split_modules`` (``GPT2Block``, ``Qwen2DecoderLayer``, ...), outermost first."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    found, inside = [], set()
    for m in model.modules():
        if type(m).__name__ in names and id(m) not in inside:
            found.append(m)
            inside.update(id(c) for c in m.modules())
    return found


def mixed_precision(cfg: Any) -> Any:
    """FSDP's mixed-precision policy for ``bf16``/``fp16``: compute in half-precision parameters,
    reduce gradients and keep the sharded master weights in float32; None in float32."""
    half = torch.bfloat16 if cfg.bf16 else (torch.float16 if cfg.fp16 else None)
    if half is None:
        return None
    return _fsdp().MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32)


def shard_modules(
    module: nn.Module, mesh: Any, cfg: Any, blocks: bool = True, half_precision: bool = True
) -> nn.Module:
    """``fully_shard`` each transformer block of ``module`` (``blocks``), then ``module`` itself;
    returns ``module`` (now an ``FSDPModule``). A module without blocks (a value head) is one unit.
    ``half_precision=False`` keeps float32 parameters for compute (the value head: its targets are
    returns, and it upcasts its input itself)."""
    fsdp = _fsdp()
    opts: dict[str, Any] = {
        "mesh": mesh,
        "reshard_after_forward": cfg.distributed.reshard_after_forward,
    }
    mp = mixed_precision(cfg) if half_precision else None
    if mp is not None:
        opts["mp_policy"] = mp
    if cfg.distributed.cpu_offload:
        opts["offload_policy"] = fsdp.CPUOffloadPolicy()
    units = transformer_blocks(module) if blocks else []
    if blocks and not units:
        raise ConfigError(
            f"distributed.strategy=fsdp: {type(module).__name__} names no transformer block class in "
            "_no_split_modules, so it cannot be sharded per block; use distributed.strategy=ddp"
        )
    for unit in units:
        fsdp.fully_shard(unit, **opts)
    fsdp.fully_shard(module, **opts)  # a root is never resharded after its forward (FSDP's rule)
    setattr(module, _CALL, types.MethodType(lambda self, fn, *a, **k: fn(self, *a, **k), module))
    fsdp.register_fsdp_forward_method(module, _CALL)
    return module


def call(model: nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(model, *args, **kwargs)``, inside the FSDP forward of ``model`` when it is sharded (its
    root parameters gathered before, the gradient reduction registered after)."""
    if is_sharded(model):
        return getattr(model, _CALL)(fn, *args, **kwargs)
    return fn(model, *args, **kwargs)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of a sharded ``model`` on every rank: a collective (each
    unit's shards all-gathered), every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def release(model: nn.Module) -> nn.Module:
    """``model`` with its parameters moved to the meta device (shapes kept, memory freed): the
    generation copy between uses; ``load_state_dict(..., assign=True)`` gives it weights again."""
    meta: dict[int, nn.Parameter] = {}  # one meta parameter per tensor: tied weights stay tied
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in meta:
                    meta[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
                module._parameters[name] = meta[id(p)]
    return model


def tie_weights(model: nn.Module) -> None:
    """Tie a transformers model's tied weights again (its output layer to its input embedding, when
    its config says so; a LoRA model's base model), after weights were assigned tensor by tensor."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if callable(getattr(lm, "tie_weights", None)):
        lm.tie_weights()


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole of ``t`` (a DTensor's shards gathered: a collective; a plain tensor itself)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


__all__ = [
    "call",
    "device_mesh",
    "full_state_dict",
    "full_tensor",
    "is_sharded",
    "mixed_precision",
    "release",
    "shard_modules",
    "tie_weights",
    "transformer_blocks",
]
