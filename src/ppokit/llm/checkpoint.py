"""Checkpoints of language-model trainers: the model in ``save_pretrained`` format plus trainer state.

Layout (one directory per checkpoint, newest complete one wins)::

    RUN_DIR/checkpoints/step-000200/
        model/      save_pretrained output: config.json, model.safetensors, tokenizer files
        trainer/    a ppokit checkpoint (safetensors + JSON, manifest written last): optimizer
                    state, reference model (when it cannot be rebuilt), RNG states, counters

The whole ``step-N`` directory is built under a ``.tmp-`` name and renamed into place, so a crash
leaves either a complete checkpoint or a temporary directory that readers ignore. ``model/`` is a
normal HF directory: ``AutoModelForCausalLM.from_pretrained(".../model")`` loads it directly. Shared by
GRPO and the PPO-for-RLHF trainer (which adds its value head to the trainer tensors) through
``ppokit.llm.trainer.LMTrainer``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ppokit.errors import CheckpointError
from ppokit.llm.models import save_pretrained
from ppokit.train.checkpoint import (
    flatten_state,
    is_complete,
    load_checkpoint,
    save_checkpoint,
    unflatten_state,
)

_STEP = re.compile(r"^step-(\d+)$")


def _complete(path: Path) -> bool:
    return (path / "model" / "config.json").is_file() and is_complete(path / "trainer")


def list_llm_checkpoints(root: str | Path) -> list[Path]:
    """Complete ``step-N`` checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP.match(p.name) and _complete(p)]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory, a ``checkpoints/`` directory or a ``step-N`` directory to a checkpoint."""
    path = Path(path)
    if _STEP.match(path.name):
        if not _complete(path):
            raise CheckpointError(f"checkpoint {str(path)!r} is incomplete or corrupt")
        return path
    for root in (path / "checkpoints", path):
        found = list_llm_checkpoints(root)
        if found:
            return found[-1]
    raise CheckpointError(f"no complete checkpoint under {str(path)!r}")


def save_llm_checkpoint(
    root: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``root/step-{step:06d}`` atomically; keep only the ``keep`` newest complete ones."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tokenizer, tmp / "model")
    # clone: tied weights share storage, and safetensors refuses to save shared tensors
    save_checkpoint(tmp, "trainer", {k: v.detach().clone() for k, v in tensors.items()}, meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep is not None:
        for old in list_llm_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint's ``trainer/`` part."""
    return load_checkpoint(Path(path) / "trainer")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    """Flatten an optimizer's state dict into tensors plus a JSON tree."""
    return flatten_state("optim.", optimizer.state_dict())


def restore_optimizer(optimizer: torch.optim.Optimizer, tree: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of ``optimizer_tensors``."""
    try:
        optimizer.load_state_dict(unflatten_state(tree, tensors))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimizer state does not fit this model: {e}") from None


def rng_tensors(generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], list]:
    """Torch's global RNG (and a sampling generator's) as tensors; Python's RNG as a JSON list."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if generator is not None:
        tensors["rng.generator"] = generator.get_state()
    version, internal, gauss = random.getstate()
    return tensors, [version, list(internal), gauss]


def restore_rng(
    tensors: dict[str, torch.Tensor], python_state: list, generator: torch.Generator | None
) -> None:
    """Inverse of ``rng_tensors``."""
    torch.set_rng_state(tensors["rng.torch"])
    if generator is not None and "rng.generator" in tensors:
        generator.set_state(tensors["rng.generator"])
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
