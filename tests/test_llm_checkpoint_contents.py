"""What a language-model checkpoint holds (issue 31): a reference model that is the base model of a
directory is not stored (a resume reads the directory again, and refuses one whose weights changed);
a reference nothing on disk holds is stored; ``meta.json`` says what the checkpoint holds."""

from __future__ import annotations

import json
import os

import pytest
from safetensors import safe_open

from ppokit.errors import CheckpointError
from ppokit.llm.checkpoint import find_checkpoint
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model, save_pretrained

PROMPTS = [f"{a}+{b}=" for a in range(1, 9) for b in range(1, 5)]


def digits(prompts, completions, **_):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def config(steps: int) -> GRPOConfig:
    cfg = GRPOConfig(max_steps=steps, prompts_per_step=2, num_generations=2, kl_coef=0.1, tensorboard=False)
    cfg.generation.max_completion_length = 4
    return cfg


@pytest.fixture
def model_dir(tmp_path):
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0)
    return save_pretrained(model, tok, tmp_path / "base")


def _tensor_names(path) -> list[str]:
    with safe_open(str(path / "tensors.safetensors"), "pt") as f:
        return list(f.keys())


def test_a_reference_from_a_directory_is_read_again_not_stored(tmp_path, model_dir):
    run = tmp_path / "run"
    GRPOTrainer(str(model_dir), None, digits, PROMPTS, config(2), run_dir=run, progress=False).train()
    found = find_checkpoint(run)
    meta = json.loads((found / "meta.json").read_text())
    assert not [k for k in _tensor_names(found) if k.startswith("ref.")]
    assert meta["reference"]["model_dir"] == str(model_dir.resolve())
    assert meta["holds"]["reference"].startswith("not stored: read again from")
    resumed = GRPOTrainer.resume(run, digits, PROMPTS, config(3), progress=False)
    assert resumed.reference_dir == str(model_dir.resolve()) and resumed.ref_model is not None
    resumed.train()
    assert not [k for k in _tensor_names(find_checkpoint(run)) if k.startswith("ref.")]
    # the anchor must not move silently: a base whose weights changed is refused on resume
    weights = model_dir / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    with pytest.raises(CheckpointError, match="changed since the run started"):
        GRPOTrainer.resume(run, digits, PROMPTS, config(4), progress=False)


def test_a_reference_built_in_code_is_stored(tmp_path):
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0)
    run = tmp_path / "run"
    GRPOTrainer(model, tok, digits, PROMPTS, config(1), run_dir=run, progress=False).train()
    found = find_checkpoint(run)
    assert [k for k in _tensor_names(found) if k.startswith("ref.")]
    holds = json.loads((found / "meta.json").read_text())["holds"]
    assert holds["reference"].startswith("a frozen copy") and "AdamW moments" in holds["optimizer"]
