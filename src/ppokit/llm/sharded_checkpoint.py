"""Sharded checkpoints of the language-model trainers (``distributed.strategy: fsdp``).

The layout is the shared one (``ppokit.train.checkpoint``: one directory per step, written atomically,
a manifest of sizes and SHA-256 written last), with the weights and optimizer moments as
``torch.distributed.checkpoint`` (DCP) shards instead of one ``model.safetensors``::

    RUN_DIR/checkpoints/step_000000000200/
        shards/          DCP: every rank writes its own shards (__<rank>_0.distcp) of the policy, the
                         reference copy (when one is saved), the critic and value head, and AdamW's
                         moments, keyed by parameter name; .metadata says where each piece lives
        model/           config.json, generation config and tokenizer (no weights): what builds the
                         model before the shards are loaded into it, and what an export starts from
        tensors.safetensors, meta.json
                         counters, the prompt order, each rank's RNG states (``rank<r>.``), the
                         optimizer's hyperparameters (JSON), the config, and ``sharded`` (world size)
        manifest.json

DCP reshards on load: a checkpoint written by N ranks loads into M ranks (or one process, sharded or
not), so a run resumes at another world size; at the same world size the resume is exact (each rank
gets its own RNG states back). All ranks write into one staging directory next to the checkpoints
(a shared file system across nodes); rank 0 then moves it into the checkpoint and writes the rest.

DCP writes its ``.metadata`` index with Python's pickle (torch's format, not ppokit's choice; the
tensors themselves are read with ``weights_only``): load sharded checkpoints only from run directories
you trust, which ``ppokit resume`` checks (docs/reliability.md, untrusted run directories).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ppokit import distributed
from ppokit.errors import CheckpointError
from ppokit.llm.checkpoint import load_checkpoint_model
from ppokit.train.checkpoint import STEP_DIR, save_step_checkpoint
from ppokit.train.rng import capture_rng, restore_rng

SHARDS = "shards"  # the DCP directory inside a checkpoint


def _state_api() -> Any:
    from torch.distributed.checkpoint import state_dict

    return state_dict


def _state(modules: nn.ModuleDict, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, optimizer hyperparameters)``: the modules' and optimizer's state keyed by name (DTensor
    shards where sharded), the optimizer flattened so that every entry is a tensor or a number."""
    api = _state_api()
    opts = api.StateDictOptions(flatten_optimizer_state_dict=True)
    model_sd, optim_sd = api.get_state_dict(modules, optimizer, options=opts)
    tensors = {f"model.{k}": v for k, v in model_sd.items()}
    tensors.update({f"optim.{k}": v for k, v in optim_sd.items() if isinstance(v, torch.Tensor)})
    groups = {k: v for k, v in optim_sd.items() if not isinstance(v, torch.Tensor)}
    return tensors, groups


def save(trainer: Any, root: str | Path | None) -> Path:
    """Write ``trainer``'s state as a sharded checkpoint of its current step under ``root`` (rank 0's
    ``root``; the other ranks pass None): a collective, every rank calls it. Returns the checkpoint."""
    rank0_root, rank0_pid = distributed.from_rank0((str(root) if root else None, os.getpid()))
    if rank0_root is None:
        raise CheckpointError("a sharded checkpoint needs rank 0's run directory")
    name = STEP_DIR.format(trainer.step)
    # a ".tmp-...-<pid>" name: remove_stale deletes it once rank 0's process is gone (a killed save)
    staging = Path(rank0_root) / f".tmp-{SHARDS}-{name}-{rank0_pid}"
    tensors, groups = _state(trainer.checkpoint_modules(), trainer.optimizer)
    from torch.distributed import checkpoint as dcp

    if distributed.info().is_main:
        staging.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    dcp.save(tensors, checkpoint_id=str(staging))
    rng = distributed.all_gather_objects(capture_rng(torch_generators={"sampler": trainer.generator}))
    path = None
    if distributed.info().is_main:
        flat: dict[str, torch.Tensor] = {"prompt_order": trainer.order.clone()}
        for r, (rng_tensors, _) in enumerate(rng):
            flat.update({f"rank{r}.{k}": v for k, v in rng_tensors.items()})
        meta = trainer.checkpoint_meta()
        meta.update(
            {
                "sharded": {
                    "world_size": distributed.info().world_size,
                    "format": "torch.distributed.checkpoint",
                },
                "rng_ranks": [tree for _, tree in rng],
                "optimizer_groups": {k: list(v) if isinstance(v, tuple) else v for k, v in groups.items()},
            }
        )

        def write_extra(tmp: Path) -> None:
            os.replace(staging, tmp / SHARDS)
            model = trainer.model
            unwrapped = model.get_base_model() if hasattr(model, "get_base_model") else model
            unwrapped.config.save_pretrained(str(tmp / "model"))
            if getattr(unwrapped, "generation_config", None) is not None:
                unwrapped.generation_config.save_pretrained(str(tmp / "model"))
            trainer.tokenizer.save_pretrained(str(tmp / "model"))

        keep = trainer.config.keep_checkpoints
        path = save_step_checkpoint(rank0_root, trainer.step, flat, meta, keep=keep, write_extra=write_extra)
    return Path(distributed.from_rank0(str(path) if path else None))


def load(trainer: Any, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore a sharded checkpoint into ``trainer`` (sharded or not, at any world size): the
    modules and optimizer from ``shards/`` (DCP reshards), counters, prompt order and this rank's RNG
    states (a rank the checkpoint had none for starts a generator seeded by rank and step)."""
    from torch.distributed import checkpoint as dcp

    api = _state_api()
    modules = trainer.checkpoint_modules()
    state, _ = _state(modules, trainer.optimizer)
    try:
        dcp.load(state, checkpoint_id=str(path / SHARDS))
    except Exception as e:  # a part this trainer has that the checkpoint lacks (another config)
        raise CheckpointError(f"the shards in {str(path)!r} do not fit this trainer: {e}") from None
    model_sd = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    optim_sd: dict[str, Any] = {k[len("optim.") :]: v for k, v in state.items() if k.startswith("optim.")}
    optim_sd.update(meta["optimizer_groups"])
    opts = api.StateDictOptions(flatten_optimizer_state_dict=True)
    api.set_state_dict(
        modules, trainer.optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=opts
    )
    rank = distributed.info().rank
    prefix = f"rank{rank}."
    mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    trees = meta.get("rng_ranks", [])
    if mine and rank < len(trees):
        restore_rng(mine, trees[rank], torch_generators={"sampler": trainer.generator})
    else:  # more ranks than the run had: a fresh stream of this rank's own
        trainer.generator.manual_seed(trainer.config.seed + 100_003 * rank + meta["step"])


def export_model(path: Path, meta: dict[str, Any], config: Any, out_dir: str | Path) -> Path:
    """The policy of the sharded checkpoint ``path`` (its ``meta`` and run ``config``) as one
    ``save_pretrained`` directory, LoRA adapters merged, in one process: the model is built from
    ``model/`` and the policy's shards read into it (DCP gathers them, whatever the world size that
    wrote them)."""
    from torch.distributed import checkpoint as dcp

    from ppokit.llm.models import save_pretrained
    from ppokit.llm.precision import wrap_peft

    model, tokenizer = load_checkpoint_model(path, meta, config, {})
    model = wrap_peft(model, config)  # the LoRA layers the policy trained with, if any
    state = {f"model.policy.{k}": v for k, v in model.state_dict().items()}
    dcp.load(state, checkpoint_id=str(path / SHARDS))
    model.load_state_dict({k[len("model.policy.") :]: v for k, v in state.items()})
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return save_pretrained(model, tokenizer, out_dir)


__all__ = ["SHARDS", "export_model", "load", "save"]
