"""Checkpoints of language-model trainers, in the one layout both sides share (``ppokit.train``)::

    RUN_DIR/checkpoints/step_000000000200/
        tensors.safetensors, meta.json   optimizer state, reference model, value head, RNG states,
                                         prompt order; counters and the config (JSON)
        model/                           save_pretrained output: config.json, model.safetensors,
                                         tokenizer files (``from_pretrained`` loads it directly)
        manifest.json                    size and SHA-256 of every file above, written last

written atomically by ``ppokit.train.checkpoint.save_step_checkpoint`` (``model/`` through its
``write_extra``, so the manifest covers the weights too). Runs of ppokit 0.1 used another layout,
``checkpoints/step-000200/{model,trainer}``; those are still read, so old runs resume. What goes into
``tensors.safetensors`` and ``meta.json`` is ``LMTrainer.state_dict()`` (``LMTrainer.save_checkpoint``).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import torch

from ppokit.errors import CheckpointError
from ppokit.llm.models import save_pretrained
from ppokit.train.checkpoint import is_complete, list_checkpoints, load_checkpoint, save_step_checkpoint

_LEGACY = re.compile(r"^step-(\d+)$")  # ppokit 0.1: step-000200/{model,trainer}


def _has_model(path: Path) -> bool:
    # a full model (config.json) or a LoRA adapter (adapter_config.json; the base is named in meta.json
    # or held in base_model/)
    return any((path / "model" / name).is_file() for name in ("config.json", "adapter_config.json"))


def is_adapter_checkpoint(path: Path) -> bool:
    """Whether the checkpoint's ``model/`` holds a LoRA adapter rather than a whole model."""
    return (Path(path) / "model" / "adapter_config.json").is_file()


def is_legacy(path: Path, verify_hashes: bool = True) -> bool:
    """Whether ``path`` is a complete checkpoint in ppokit 0.1's layout (``verify_hashes``: as
    ``is_complete``)."""
    return (
        bool(_LEGACY.match(path.name)) and _has_model(path) and is_complete(path / "trainer", verify_hashes)
    )


def _step(path: Path) -> int:
    return int(re.search(r"(\d+)$", path.name).group(1))


def list_lm_checkpoints(root: str | Path, verify_hashes: bool = True) -> list[Path]:
    """Complete language-model checkpoints under ``root`` (both layouts), oldest first.
    ``verify_hashes=False`` checks manifests and sizes only (a model of many GB is not read)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in list_checkpoints(root, verify_hashes) if _has_model(p)]
    found += [p for p in root.iterdir() if p.is_dir() and is_legacy(p, verify_hashes)]
    return sorted(found, key=_step)


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory, a ``checkpoints/`` directory or one checkpoint to a checkpoint."""
    path = Path(path)
    if re.fullmatch(r"step[_-]\d+", path.name):
        if not (is_legacy(path) or (is_complete(path) and _has_model(path))):
            raise CheckpointError(f"checkpoint {str(path)!r} is incomplete or corrupt")
        return path
    for root in (path / "checkpoints", path):
        # hashes are verified newest first and only until one passes (as latest_checkpoint does):
        # hashing every kept checkpoint read each multi-GB model once per resume
        for found in reversed(list_lm_checkpoints(root, verify_hashes=False)):
            if is_legacy(found) or is_complete(found):
                return found
    raise CheckpointError(f"no complete checkpoint under {str(path)!r}")


def save_lm_checkpoint(
    root: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    keep: int | None = None,
    base_model: Any = None,
) -> Path:
    """Write ``root/step_<12 digits>`` atomically with ``model/`` in it (and ``base_model/``: the frozen
    base of a LoRA model that has no directory of its own to refer to); keep the ``keep`` newest."""

    def write_model(tmp: Path) -> None:
        save_pretrained(model, tokenizer, tmp / "model")
        if base_model is not None:
            base_model.save_pretrained(str(tmp / "base_model"), safe_serialization=True)

    return save_step_checkpoint(root, step, tensors, meta, keep=keep, write_extra=write_model)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint in either layout (the model is ``path / "model"``)."""
    path = Path(path)
    return load_checkpoint(path / "trainer" if is_legacy(path) else path)


def restore_legacy_rng(
    tensors: dict[str, torch.Tensor], python_state: list, generator: torch.Generator | None
) -> None:
    """The RNG states of a ppokit 0.1 checkpoint: torch's global one, the sampler's, Python's (it held
    no numpy state; ``ppokit.train.rng`` restores the current checkpoints)."""
    torch.set_rng_state(tensors["rng.torch"])
    if generator is not None and "rng.generator" in tensors:
        generator.set_state(tensors["rng.generator"])
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))


def load_checkpoint_model(found: Path, meta: dict[str, Any], config: Any, kwargs: dict[str, Any]) -> tuple:
    """``(model, tokenizer)`` saved in checkpoint ``found``; a LoRA checkpoint's adapter goes back on
    its base model (named in ``meta``, or copied in ``base_model/``), and ``kwargs`` learns that base's
    directory."""
    from ppokit.llm.models import load_pretrained, load_tokenizer

    if "sharded" in meta:  # fsdp: the model is built from its config; the shards fill it after sharding
        import transformers as tf

        from ppokit.distributed import resolve_device
        from ppokit.llm.models import load_tokenizer

        model = tf.AutoModelForCausalLM.from_config(tf.AutoConfig.from_pretrained(str(found / "model")))
        return model.to(resolve_device(config.device)), load_tokenizer(found / "model")
    # "auto": the weights come back in the dtype they were saved in (float32 masters, a LoRA
    # model's half-precision base), whatever torch_dtype says about loading the original model
    if not is_adapter_checkpoint(found):
        return load_pretrained(found / "model", config.device, "auto")
    from ppokit.llm.precision import _peft

    base_dir = (meta.get("peft") or {}).get("base_model")
    tokenizer = load_tokenizer(found / "model")
    base, _ = load_pretrained(base_dir or found / "base_model", config.device, "auto", tokenizer)
    model = _peft().PeftModel.from_pretrained(base, str(found / "model"), is_trainable=True)
    if base_dir is not None:
        kwargs.setdefault("model_dir", base_dir)
    return model, tokenizer


def _weight_files(model_dir: str | Path) -> dict[str, list[int]]:
    """``{file: [size, mtime_ns]}`` of a model directory's weight files (safetensors and .bin)."""
    d = Path(model_dir)
    files = sorted(p for p in d.iterdir() if p.suffix in (".safetensors", ".bin")) if d.is_dir() else []
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def reference_record(model_dir: str) -> dict[str, Any]:
    """What a checkpoint says of a reference model it does not store: its directory and the size
    and modification time of its weight files (a resume refuses a directory whose weights changed)."""
    return {"model_dir": model_dir, "files": _weight_files(model_dir)}


def reference_model(record: dict[str, Any], config: Any) -> Any:
    """The reference model a checkpoint names (``reference_record``), loaded as the run loaded it;
    a CheckpointError when its directory is gone or its weights changed since the run started (the
    KL anchor would move silently)."""
    from ppokit.llm.models import load_pretrained

    now = _weight_files(record["model_dir"])
    if not now or now != record["files"]:
        what = "is gone" if not now else "has other weight files now (changed since the run started)"
        raise CheckpointError(
            f"the reference model directory {record['model_dir']!r} {what}; the run's KL anchor is read from "
            "it on resume: restore it, or pass ref_model= to resume"
        )
    return load_pretrained(record["model_dir"], config.device, config.torch_dtype)[0]
