"""Run by tests/test_rlhf_distributed.py under torchrun: one rank of a short data-parallel PPO run.

Usage: torchrun --standalone --nproc_per_node N tests/dist_rlhf_worker.py OUT_DIR VALUE_MODEL
Dumps this rank's policy, value head (and separate critic) after training, its kl_coef and prompts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ppokit import distributed
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model
from ppokit.llm.rlhf_ppo import RLHFPPOTrainer
from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig

PROMPTS = [f"{a}+{b}=" for a in range(1, 9) for b in range(1, 5)]


def digit_fraction(prompts, completions, **_):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, value_model = Path(sys.argv[1]), sys.argv[2]
    info = distributed.init("cpu")
    tok = build_char_tokenizer()
    # a different init seed per rank: the broadcast from rank 0 must make them equal
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, seed=info.rank)
    cfg = RLHFPPOConfig.from_dict(
        dict(learning_rate=1e-3, max_steps=3, prompts_per_step=4, num_mini_batches=2, seed=0,
             tensorboard=False, value_model=value_model, kl_adaptive=True, kl_horizon=100)
    )  # fmt: skip
    cfg.generation.max_completion_length = 6
    seen: list[str] = []
    trainer = RLHFPPOTrainer(model, tok, digit_fraction, PROMPTS, cfg, progress=False, run_dir=out / "run")
    original = trainer._next_rows
    trainer._next_rows = lambda: [seen.append(r["prompt"]) or r for r in original()]
    trainer.train()
    tensors = {f"policy.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"head.{k}": v for k, v in trainer.value_head.state_dict().items()})
    if trainer.critic is not None:
        tensors.update({f"critic.{k}": v for k, v in trainer.critic.state_dict().items()})
    tensors["kl_coef"] = torch.tensor([trainer.kl_coef])
    save_file(
        {k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(out / f"rank{info.rank}.st")
    )
    (out / f"rank{info.rank}.json").write_text(json.dumps({"prompts": seen}))
    distributed.barrier()  # leave together: a rank tearing down gloo while another still works can abort
    distributed.shutdown()
