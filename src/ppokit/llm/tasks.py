"""Built-in verifiable tasks: prompts, deterministic rewards, held-out accuracy, a supervised warm start.

``addition``: the prompt is ``"a+b="`` with ``d``-digit operands, the answer is ``str(a + b)``
followed by EOS. Two rewards: ``exact_match`` (1 when the completion is the answer) and
``digit_match`` (fraction of the answer's digits right, aligned on the last digit; a dense signal
that still varies inside a group when no completion is fully right). Held-out prompts are a fixed
hash split of all ``(a, b)`` pairs, never seen in training or in the warm start.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ppokit.errors import ConfigError
from ppokit.llm.rewards import RewardFn

if TYPE_CHECKING:  # types only: transformers is imported inside the functions that need it
    from transformers import PreTrainedTokenizerBase


def exact_match(prompts: list[Any], completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """1.0 when the completion (stripped) equals the answer, else 0.0."""
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def digit_match(prompts: list[Any], completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """Fraction of answer digits matched position by position from the right, divided by the longer
    length (so extra or missing digits cost); 0 for a completion that is not all digits."""
    out = []
    for c, a in zip(completions, answer):
        c = c.strip()
        if not c.isdigit():
            out.append(0.0)
            continue
        hits = sum(x == y for x, y in zip(reversed(c), reversed(a)))
        out.append(hits / max(len(c), len(a)))
    return out


@dataclass
class Task:
    """A verifiable task: prompt rows (dicts with ``prompt`` and ``answer``), rewards, accuracy."""

    name: str
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    reward_funcs: list[RewardFn]

    def accuracy_fn(self, rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> list[bool]:
        """Exact match of each completion against its row's answer."""
        return [c.strip() == r["answer"] for r, c in zip(rows, completions)]


def _held_out(a: int, b: int) -> bool:
    # A hash split, not "a % 10": a rule on the digits would leave a digit pattern unseen in training.
    return zlib.crc32(f"{a}+{b}".encode()) % 10 == 0


def addition_task(digits: int = 2, seed: int = 0, num_eval: int = 200, max_train: int = 50_000) -> Task:
    """The ``addition`` task with ``digits``-digit operands (all pairs when they fit in ``max_train``)."""
    if not 1 <= digits <= 6:
        raise ConfigError(f"task_digits={digits!r} is not allowed; use 1 to 6")
    top = 10**digits
    rng = random.Random(seed)
    if top * top <= 2 * max_train:
        pairs = [(a, b) for a in range(top) for b in range(top)]
    else:
        pairs = list({(rng.randrange(top), rng.randrange(top)) for _ in range(2 * max_train)})
        pairs.sort()
    rng.shuffle(pairs)
    train = [(a, b) for a, b in pairs if not _held_out(a, b)][:max_train]
    held = [(a, b) for a, b in pairs if _held_out(a, b)][:num_eval]
    row = lambda a, b: {"prompt": f"{a}+{b}=", "answer": str(a + b)}
    return Task(
        "addition",
        [row(a, b) for a, b in train],
        [row(a, b) for a, b in held],
        [exact_match, digit_match],
    )


TASKS = {"addition": addition_task}


def make_task(name: str, digits: int, seed: int, num_eval: int) -> Task:
    """Build a built-in task by name; ConfigError lists the known ones."""
    if name not in TASKS:
        raise ConfigError(f"task={name!r} is not a built-in task; choose one of {sorted(TASKS)}")
    return TASKS[name](digits=digits, seed=seed, num_eval=num_eval)


def warm_start(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, Any]],
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Supervised cross-entropy on ``prompt + answer + EOS``, loss on the answer tokens only.

    A short warm start teaches the output format and some of the skill, so that GRPO starts from a
    policy whose groups contain both right and wrong answers (a group of all-wrong answers has no
    signal). Returns ``{"warm_start/loss", "warm_start/seconds", "warm_start/steps"}``.
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed + 12345)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        idx = torch.randint(len(rows), (batch_size,), generator=gen).tolist()
        ids, mask, labels = _sft_batch(tokenizer, [rows[i] for i in idx], device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
    return {
        "warm_start/loss": loss_value,
        "warm_start/seconds": time.perf_counter() - start,
        "warm_start/steps": steps,
    }


def _sft_batch(
    tokenizer: Any, rows: Sequence[dict[str, Any]], device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    prompts = tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
    answers = tokenizer([r["answer"] for r in rows], add_special_tokens=False)["input_ids"]
    seqs = [p + a + [tokenizer.eos_token_id] for p, a in zip(prompts, answers)]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        off = width - len(s)  # left padding, like generation
        ids[i, off:] = torch.tensor(s)
        mask[i, off:] = 1
        labels[i, off + len(p) :] = torch.tensor(s[len(p) :])
    return ids.to(device), mask.to(device), labels.to(device)
