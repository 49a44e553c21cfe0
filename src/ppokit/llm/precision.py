"""How a model is prepared for training at real scale: LoRA adapters (peft), the precision of the
trainable weights, gradient checkpointing, and the dtype a model directory is loaded in.

Mixed precision is the recipe of TRL/accelerate (Micikevicius et al. 2018, *Mixed Precision Training*,
https://arxiv.org/abs/1710.03740): the weights the optimizer updates and its moments are float32
("master weights"); the forward passes run under ``torch.autocast`` in bfloat16 or float16. Training
bfloat16 weights directly loses every update smaller than half a unit in the last place of a weight
(bfloat16 has 8 significant bits): at lr 1e-6 one AdamW step moves a weight of size 0.02 by ~5e-5
relative, far below bfloat16's 2^-8 ~ 4e-3, so most weights do not move at all. ppokit refuses that
configuration instead of training silently in it.
"""

from __future__ import annotations

from typing import Any

import torch

from ppokit.errors import ConfigError

HALF = (torch.float16, torch.bfloat16)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_dtype(name: str) -> Any:
    """The ``dtype`` argument of ``from_pretrained`` for a ``torch_dtype`` setting (``"auto"`` kept)."""
    return "auto" if name == "auto" else DTYPES[name]


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (checked by its interface, so peft need not import)."""
    return hasattr(model, "peft_config") and callable(getattr(model, "disable_adapter", None))


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError(
            "use_peft / peft_config need the peft package: pip install -c constraints.txt -e '.[peft]'"
        ) from None
    return peft


def lora_config(cfg: Any) -> Any:
    """A ``peft.LoraConfig`` from the config's ``lora_*`` keys (TRL's names and defaults)."""
    return _peft().LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def wrap_peft(model: Any, cfg: Any, peft_config: Any = None) -> Any:
    """``model`` with LoRA adapters when ``peft_config`` is given or ``cfg.use_peft`` is set (a
    ``PeftModel`` passed in is used as it is); otherwise ``model`` unchanged."""
    if is_peft_model(model):
        if peft_config is not None:
            raise ConfigError("the model already is a PeftModel: pass peft_config=None (or the base model)")
        return model
    if peft_config is None and not cfg.use_peft:
        return model
    peft = _peft()
    try:
        return peft.get_peft_model(model, peft_config if peft_config is not None else lora_config(cfg))
    except ValueError as e:  # e.g. target modules that the model does not have
        raise ConfigError(f"cannot add LoRA adapters to {type(model).__name__}: {e}") from None


def prepare_precision(model: Any, cfg: Any) -> None:
    """Make the trainable weights float32 masters when ``bf16``/``fp16`` is on; refuse to train
    half-precision weights without it (the silent pure-bfloat16 training the issue measured).

    Frozen weights (a LoRA model's base) keep their dtype: a bfloat16 base with float32 adapters is
    the memory-saving LoRA set-up. In place.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    low = [p for p in trainable if p.dtype in HALF]
    if not low:
        return
    dtype = str(low[0].dtype).replace("torch.", "")
    if not (cfg.bf16 or cfg.fp16):
        raise ConfigError(
            f"{sum(p.numel() for p in low):,} trainable weights are {dtype}: training them in pure "
            f"{dtype} loses most small updates; set bf16=true (float32 master weights + autocast, as "
            "TRL does) or load the model with torch_dtype=float32"
        )
    frozen_half = any(p.dtype in HALF for p in model.parameters() if not p.requires_grad)
    if frozen_half:  # a LoRA base stays half precision; only the adapters become float32
        for p in low:
            p.data = p.data.float()
    else:
        model.float()


def prepare_model(model: Any, cfg: Any, peft_config: Any, device: torch.device) -> Any:
    """``model`` as it trains, on ``device``: LoRA (peft) first, dropout off with ``disable_dropout``
    (the reference and a separate value trunk are copies of it, so theirs is off too), then precision
    (adapters are trainable float32, a half-precision base stays as it is, frozen; trainable
    half-precision weights need bf16/fp16 and become float32 masters), then activation checkpointing
    when the config asks."""
    model = wrap_peft(model.to(device), cfg, peft_config)
    if getattr(cfg, "disable_dropout", False):
        disable_dropout(model)
    prepare_precision(model, cfg)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout probability of ``model`` to 0, in place; returns how many were changed.

    TRL's ``disable_dropout`` zeroes the ``p`` of every ``nn.Dropout``; transformers' attention layers
    also keep a dropout rate as a plain float attribute (``attention_dropout``, ``attn_dropout``)
    that they pass to the attention function, so those are zeroed too. With dropout two forward passes
    of the same weights disagree and the importance ratio is not 1 before the first update (issue 34:
    ``disable_dropout=True`` was accepted and ignored)."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p:
            module.p = 0.0
            changed += 1
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float) and not isinstance(value, bool) and value:
                setattr(module, name, 0.0)
                changed += 1
    return changed


def enable_gradient_checkpointing(model: Any) -> None:
    """Turn on the model's activation (gradient) checkpointing, non-reentrant (works with frozen
    inputs such as a LoRA base, no ``enable_input_require_grads`` needed)."""
    from ppokit.llm.generation import unwrap_peft

    lm = unwrap_peft(model)
    if not getattr(lm, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"gradient_checkpointing=true is not allowed; {type(lm).__name__} does not support it"
        )
    kwargs = {"use_reentrant": False}
    # transformers 5.x renamed the method (the old name warns and goes in v6)
    if callable(getattr(lm, "activation_checkpointing_enable", None)):
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


__all__ = [
    "disable_dropout",
    "enable_gradient_checkpointing",
    "is_peft_model",
    "load_dtype",
    "lora_config",
    "prepare_model",
    "prepare_precision",
    "wrap_peft",
]
