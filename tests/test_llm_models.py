"""Tokenizer and tiny models built in code, saved to and loaded from local directories, then trained."""

from __future__ import annotations

import pytest
import torch

from ppokit.errors import CheckpointError
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model, load_pretrained, save_pretrained


def char_code_reward(prompts, completions, **_):
    """A reward with spread on a random model (whose completions are random characters)."""
    return [float(sum(ord(ch) % 3 for ch in c)) for c in completions]


def test_char_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    tok = build_char_tokenizer()
    ids = tok("12+34=", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6 and tok.decode(ids) == "12+34="
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded("12+34=", add_special_tokens=False)["input_ids"] == ids
    assert loaded.eos_token == "<eos>" and loaded.pad_token == "<pad>"
    assert loaded.decode(ids + [loaded.eos_token_id], skip_special_tokens=True) == "12+34="


@pytest.mark.parametrize("architecture", ["gpt2", "qwen2"])
def test_train_step_from_local_dir_changes_every_parameter(tmp_path, architecture):
    tok = build_char_tokenizer()
    model = build_tiny_model(
        TinyModelConfig(architecture=architecture, n_layer=1, n_embd=32, n_head=2), tok, 0
    )
    save_pretrained(model, tok, tmp_path / "model")
    model, tok = load_pretrained(tmp_path / "model")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = GRPOConfig(learning_rate=1e-3, max_steps=1, prompts_per_step=4, num_generations=4, seed=1)
    cfg.generation.max_completion_length = 6
    trainer = GRPOTrainer(
        model, tok, char_code_reward, ["1+1=", "2+3=", "11+5=", "9+9="], cfg, progress=False
    )
    metrics = trainer.train_step()
    assert metrics["frac_reward_zero_std"] < 1.0  # otherwise there was nothing to learn from
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert unchanged == []
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # first step: policy == reference


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_pretrained(tmp_path)
