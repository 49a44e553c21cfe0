"""Run by tests/test_distributed.py under torchrun: one rank of a short data-parallel GRPO run.

Usage: torchrun --standalone --nproc_per_node N tests/dist_grpo_worker.py OUT_DIR SCALE_REWARDS
Dumps this rank's parameters after training and the prompts it was given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ppokit import distributed
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model

PROMPTS = [f"{a}+{b}=" for a in range(1, 9) for b in range(1, 5)]


def digit_fraction(prompts, completions, **_):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, scale = Path(sys.argv[1]), sys.argv[2]
    info = distributed.init()  # device auto, the default: gloo on this CPU machine (issue 31)
    tok = build_char_tokenizer()
    # a different init seed per rank: the broadcast from rank 0 must make them equal
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, seed=info.rank)
    cfg = GRPOConfig.from_dict(
        dict(
            learning_rate=1e-3,
            max_steps=3,
            prompts_per_step=2,
            num_generations=4,
            seed=0,
            tensorboard=False,
            scale_rewards=scale,
            loss_type="dapo",
        )
    )
    cfg.generation.max_completion_length = 6
    seen: list[str] = []
    trainer = GRPOTrainer(model, tok, digit_fraction, PROMPTS, cfg, progress=False, run_dir=out / "run")
    original = trainer._next_rows
    trainer._next_rows = lambda: [seen.append(r["prompt"]) or r for r in original()]
    summary = trainer.train()
    save_file(
        {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
        str(out / f"grpo-rank{info.rank}.safetensors"),
    )
    (out / f"grpo-rank{info.rank}.json").write_text(
        json.dumps({"prompts": seen, "summary_keys": sorted(summary)})
    )
    distributed.shutdown()
