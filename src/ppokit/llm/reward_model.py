"""A reward model read from a local directory: an HF ``AutoModelForSequenceClassification`` with one
label, wrapped so it has the reward-function signature of ``ppokit.llm.rewards`` and plugs in next to
(or instead of) reward functions. Never trained here (the critic PPO trains is ``value_head.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppokit.distributed import resolve_device
from ppokit.errors import CheckpointError
from ppokit.llm.models import load_transformers


class RewardModel:
    """A sequence-classification reward model from a local directory, called like a reward function.

    ``RewardModel(dir)(prompts, completions) -> list[float]``: the model's single logit for the text
    ``prompt + completion`` (the model reads it at the last non-pad token, as HF's sequence
    classifiers do). Prompts that are chat message lists are rendered with the tokenizer's chat
    template first. Runs under ``no_grad`` in eval mode; never trained here.
    """

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu", batch_size: int = 64):
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"reward model directory {str(path)!r} has no config.json")
        tf = load_transformers()
        try:
            self.tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = tf.AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True
            )
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"cannot load a sequence-classification model from {str(path)!r}: {e}"
            ) from None
        if self.model.config.num_labels != 1:
            raise CheckpointError(
                f"reward model {str(path)!r} has num_labels={self.model.config.num_labels}; a reward "
                "model gives one score, num_labels=1"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Right padding: the classifier computes positions from 0 on the left (no position_ids).
        self.tokenizer.padding_side = "right"
        if self.model.config.pad_token_id is None:  # HF finds the last token through the pad id
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = resolve_device(device)  # a config's spec (auto, cuda, ...) or a torch.device
        self.model.to(self.device).eval().requires_grad_(False)
        self.batch_size = batch_size
        self.__name__ = "reward_model"  # the metrics column: rewards/reward_model/mean

    def _text(self, prompt: Any, completion: Any) -> str:
        if isinstance(prompt, list):  # a conversation: its completion is [{"role": "assistant", ...}]
            if isinstance(completion, list):
                return self.tokenizer.apply_chat_template(prompt + completion, tokenize=False)
            prompt = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return f"{prompt}{completion}"

    @torch.no_grad()
    def __call__(self, prompts: list[Any], completions: list[str], **_: Any) -> list[float]:
        """One score per completion."""
        texts = [self._text(p, c) for p, c in zip(prompts, completions)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            out += self.model(**enc).logits[:, 0].float().tolist()
        return out


__all__ = ["RewardModel"]
