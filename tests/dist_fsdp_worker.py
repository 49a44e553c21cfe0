"""Run by tests/test_fsdp.py: one optimizer step of GRPO on one fixed batch, sharded or not.

Usage: [torchrun --standalone --nproc_per_node N] tests/dist_fsdp_worker.py OUT STRATEGY [broken]

Every process samples the same whole batch (same weights, same sampler seed), then trains on its
share of it (rank r of N: the r-th N-th of the rows), so N sharded ranks together see exactly the
batch one process sees. Rank 0 writes the step's loss (mean over ranks), gradient norm, the whole
gradient and the updated weights to OUT/<STRATEGY>-<N>.safetensors / .json. ``broken`` sums the
gradients over ranks instead of averaging them: FSDP2's reduce-scatter gets SUM where it asks for
AVG, exactly the error of pytorch issue 162338 (gloo's AVG reduction summing), which the test must
catch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ppokit import distributed
from ppokit.llm import sharding
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model

PROMPTS = [f"{a}+{b}=" for a in range(1, 9) for b in range(1, 5)]


def digit_fraction(prompts, completions, **_):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def share(batch, rank: int, world: int):
    """Rank ``rank``'s rows of a ``Rollout`` (whole groups: the rows come in groups of G)."""
    n = len(batch.rows) // world
    rows = slice(rank * n, (rank + 1) * n)
    return dataclasses.replace(
        batch, **{f.name: getattr(batch, f.name)[rows] for f in dataclasses.fields(batch)}
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, strategy = Path(sys.argv[1]), sys.argv[2]
    broken = len(sys.argv) > 3 and sys.argv[3] == "broken"
    info = distributed.init("cpu")
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=2, n_embd=32, n_head=2), tok, seed=0)
    cfg = GRPOConfig.from_dict(
        dict(
            learning_rate=1e-2,
            max_steps=1,
            prompts_per_step=4,
            num_generations=4,
            micro_batch_size=4,  # gradient accumulation over micro-batches
            kl_coef=0.1,  # a reference model (sharded too)
            max_grad_norm=1e9,  # no clipping: the gradient norm is compared as it is
            seed=0,
            tensorboard=False,
            distributed={"strategy": strategy},
        )
    )
    cfg.generation.max_completion_length = 6
    trainer = GRPOTrainer(model, tok, digit_fraction, PROMPTS, cfg, progress=False)
    if broken:  # what gloo did in pytorch issue 162338: AVG computed as SUM
        reduce_scatter = torch.distributed.reduce_scatter_single

        def summing(*, output, input, group, op, async_op=False):
            op = torch.distributed.ReduceOp.SUM if op == torch.distributed.ReduceOp.AVG else op
            return reduce_scatter(output=output, input=input, group=group, op=op, async_op=async_op)

        torch.distributed.reduce_scatter_single = summing
    trainer.generator.manual_seed(1234)  # every rank samples the same whole batch
    batch = trainer.rollout([{"prompt": p} for p in PROMPTS[:4]])
    metrics = trainer.update(share(batch, info.rank, info.world_size))
    loss = float(distributed.all_reduce_mean(torch.tensor(metrics["loss"])))
    grads = {n: sharding.full_tensor(p.grad).detach().clone() for n, p in trainer.model.named_parameters()}
    weights = sharding.full_state_dict(trainer.model) if trainer.sharded else trainer.model.state_dict()
    if info.is_main:
        tag = f"{strategy}-{info.world_size}{'-broken' if broken else ''}"
        tensors = {f"grad.{k}": v for k, v in grads.items()}
        tensors.update({f"weight.{k}": v.detach().clone().contiguous() for k, v in weights.items()})
        save_file(tensors, str(out / f"{tag}.safetensors"))
        summary = {"loss": loss, "grad_norm": metrics["grad_norm"], "rows": len(batch.rows)}
        (out / f"{tag}.json").write_text(json.dumps(summary))
    distributed.shutdown()
