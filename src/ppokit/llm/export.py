"""``export_model``: a language-model run's policy as one plain ``save_pretrained`` directory
(``ppokit export RUN_DIR --format hf``), from either checkpoint layout: whole weights in ``model/``,
or FSDP shards (``sharded_checkpoint.py``); LoRA adapters are merged into the weights, so
``AutoModelForCausalLM.from_pretrained`` loads the result with neither ppokit nor peft."""

from __future__ import annotations

from pathlib import Path

from ppokit.errors import ConfigError
from ppokit.llm import sharded_checkpoint
from ppokit.llm.checkpoint import find_checkpoint, load_checkpoint_model, read_checkpoint
from ppokit.llm.models import save_pretrained


def _config_class(algo: str) -> type:
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig

    classes = {"grpo": GRPOConfig, "rlhf_ppo": RLHFPPOConfig}
    if algo not in classes:
        raise ConfigError(
            f"a checkpoint of {algo!r} is not a language-model run; export takes grpo, rlhf_ppo"
        )
    return classes[algo]


def export_model(path: str | Path, out_dir: str | Path) -> Path:
    """Write the newest complete checkpoint's policy under ``path`` (a run or checkpoint directory)
    to ``out_dir`` with ``save_pretrained`` (tokenizer included), in one process, on the CPU."""
    found = find_checkpoint(path)
    _, meta = read_checkpoint(found)
    config = _config_class(meta.get("algo", "grpo")).from_dict(meta["config"])
    config.device = "cpu"
    if "sharded" in meta:
        return sharded_checkpoint.export_model(found, meta, config, out_dir)
    model, tokenizer = load_checkpoint_model(found, meta, config, {})
    if hasattr(model, "merge_and_unload"):  # a LoRA checkpoint: the adapter on its base
        model = model.merge_and_unload()
    return save_pretrained(model, tokenizer, out_dir)


__all__ = ["export_model"]
