"""GRPOTrainer behaviour: zero-signal groups, forward-pass budget, None rewards, resume, learning."""

from __future__ import annotations

import math

import pytest
import torch

from ppokit.errors import ConfigError
from ppokit.llm.checkpoint import find_checkpoint
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model
from ppokit.plotting import read_csv

PROMPTS = ["1+1=", "2+3=", "11+5=", "9+9=", "40+2=", "7+70="]


def tiny(seed: int = 0):
    tok = build_char_tokenizer()
    return build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, seed), tok


def config(**kw) -> GRPOConfig:
    base = dict(
        learning_rate=1e-3, max_steps=2, prompts_per_step=2, num_generations=4, seed=0, tensorboard=False
    )
    cfg = GRPOConfig.from_dict({**base, **kw})
    cfg.generation.max_completion_length = 6
    return cfg


def spread_reward(prompts, completions, **_):
    return [float(sum(ord(ch) % 3 for ch in c)) for c in completions]


def constant_reward(prompts, completions, **_):
    return [1.0] * len(completions)


def digit_fraction(prompts, completions, **_):
    """Dense: the fraction of completion characters that are digits (about 1 in 8 at random init)."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def test_groups_of_equal_rewards_give_no_policy_gradient():
    model, tok = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = GRPOTrainer(model, tok, constant_reward, PROMPTS, config(kl_coef=0.0), progress=False)
    ro = trainer.rollout()
    assert torch.equal(ro.advantages, torch.zeros_like(ro.advantages)) and ro.zero_std.all()
    metrics = trainer.update(ro)
    assert metrics["grad_norm"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize(("iterations", "policy_calls"), [(1, 1), (2, 3), (3, 4)])
def test_old_logprobs_are_computed_once_and_not_at_all_when_mu_is_one(iterations, policy_calls):
    model, tok = tiny()
    cfg = config(n_epochs=iterations, share_prompt_prefix=False)  # one model call per pass
    trainer = GRPOTrainer(model, tok, spread_reward, PROMPTS, cfg, progress=False)
    calls = {"policy": 0, "ref": 0}
    # the log-prob passes call the transformer trunk (the head runs chunk by chunk on its hidden
    # states), so a pass is counted there: one trunk call per pass
    model.base_model.register_forward_pre_hook(lambda *_: calls.__setitem__("policy", calls["policy"] + 1))
    trainer.ref_model.base_model.register_forward_pre_hook(
        lambda *_: calls.__setitem__("ref", calls["ref"] + 1)
    )
    ro = trainer.rollout()
    calls.update(policy=0, ref=0)
    metrics = trainer.update(ro)
    assert calls == {"policy": policy_calls, "ref": 1}
    if iterations == 1:  # ratio is exactly 1: nothing can be clipped
        assert metrics["train/clipped_fraction"] == 0.0 and metrics["train/clip_fraction"] == 0.0


def test_kl_coef_zero_builds_no_reference_model():
    model, tok = tiny()
    trainer = GRPOTrainer(model, tok, spread_reward, PROMPTS, config(kl_coef=0.0), progress=False)
    assert trainer.ref_model is None
    assert "kl" not in trainer.train_step()


def test_unscored_completions_are_left_out():
    def picky(prompts, completions, **_):
        return [None if p == "1+1=" else float(len(c)) for p, c in zip(prompts, completions)]

    model, tok = tiny()
    trainer = GRPOTrainer(model, tok, [picky, spread_reward], ["1+1=", "2+3="], config(), progress=False)
    ro = trainer.rollout()
    skipped = torch.tensor([r["prompt"] == "1+1=" for r in ro.rows])
    assert torch.isnan(ro.per_fn[skipped, 0]).all() and not torch.isnan(ro.rewards).any()

    def none_at_all(prompts, completions, **_):
        return [None if p == "1+1=" else 1.0 for p in prompts]

    trainer = GRPOTrainer(model, tok, none_at_all, ["1+1=", "2+3="], config(), progress=False)
    ro = trainer.rollout()
    skipped = torch.tensor([r["prompt"] == "1+1=" for r in ro.rows])
    assert torch.isnan(ro.rewards[skipped]).all() and not ro.mask[skipped].any()
    assert math.isfinite(trainer.update(ro)["loss"])


def test_reward_weights_must_match(tmp_path):
    model, tok = tiny()
    trainer = GRPOTrainer(
        model, tok, [spread_reward], PROMPTS, config(reward_weights=[1.0, 2.0]), progress=False
    )
    with pytest.raises(ConfigError, match="reward_weights"):
        trainer.train_step()


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="clip_range=1.5"):
        GRPOConfig(clip_range=1.5).validate()
    with pytest.raises(ConfigError, match=r"clip_range=1.5 .*\(given as 'epsilon'\)"):
        GRPOConfig.from_dict({"epsilon": 1.5})
    with pytest.raises(ConfigError, match="loss_type"):
        GRPOConfig.from_dict({"loss_type": "mean"})
    with pytest.raises(ConfigError, match="micro_batch_size"):
        GRPOConfig.from_dict({"prompts_per_step": 2, "num_generations": 4, "micro_batch_size": 3})


@pytest.mark.parametrize(("micro", "share"), [(4, True), (2, False), (0, False)])
def test_micro_batches_and_prefix_sharing_give_the_same_gradient(micro, share):
    grads = []
    for m, sh in ((0, True), (micro, share)):
        model, tok = tiny()
        cfg = config(micro_batch_size=m, share_prompt_prefix=sh)
        trainer = GRPOTrainer(model, tok, spread_reward, PROMPTS, cfg, progress=False)
        ro = trainer.rollout()
        trainer.optimizer.step = lambda: None  # keep the gradient, skip the update
        trainer.update(ro)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_find_checkpoint_hashes_only_the_newest_it_returns(tmp_path, monkeypatch):
    import ppokit.train.checkpoint as base

    model, tok = tiny()
    cfg = config(max_steps=4, checkpoint_every=2)
    GRPOTrainer(model, tok, spread_reward, PROMPTS, cfg, run_dir=tmp_path, progress=False).train()
    hashed = []
    real = base._sha256
    monkeypatch.setattr(base, "_sha256", lambda f: hashed.append(f) or real(f))
    newest = find_checkpoint(tmp_path)
    assert newest.name == "step_000000000004"
    # only the newest checkpoint was read in full (it used to hash every kept checkpoint)
    assert hashed and {f.relative_to(tmp_path / "checkpoints").parts[0] for f in hashed} == {newest.name}
    # a newest checkpoint whose bytes changed (same size) is skipped for the older one
    weights = max((newest / "model").glob("*.safetensors"), key=lambda f: f.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert find_checkpoint(tmp_path).name == "step_000000000002"


def test_resume_continues_exactly(tmp_path):
    def run(steps, run_dir, resume=False):
        cfg = config(max_steps=steps, checkpoint_every=2)
        if resume:
            return GRPOTrainer.resume(run_dir, spread_reward, PROMPTS, cfg, run_dir=run_dir, progress=False)
        model, tok = tiny()
        return GRPOTrainer(model, tok, spread_reward, PROMPTS, cfg, run_dir=run_dir, progress=False)

    straight = run(4, tmp_path / "a")
    straight.train()
    first = run(2, tmp_path / "b")
    first.train()
    assert find_checkpoint(tmp_path / "b").name == "step_000000000002"
    resumed = run(4, tmp_path / "b", resume=True)
    assert resumed.step == 2
    resumed.train()
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert read_csv(tmp_path / "b" / "metrics.csv")["step"] == [1.0, 2.0, 3.0, 4.0]
    assert {p.name for p in (tmp_path / "b" / "plots").iterdir()} >= {"reward.png", "kl.png"}


def test_a_ppokit_01_checkpoint_is_found_and_resumes_exactly(tmp_path):
    """ppokit 0.1 kept checkpoints/step-000002/{model,trainer} with Python's RNG state in meta.json
    ("python_rng") and the sampler's as "rng.generator": such a run is listed, found, and resumes
    to the parameters of a straight run; a damaged one is not taken."""
    import shutil

    from ppokit.errors import CheckpointError
    from ppokit.llm.checkpoint import is_legacy, list_lm_checkpoints
    from ppokit.train.checkpoint import load_checkpoint, write_checkpoint

    cfg = lambda steps: config(max_steps=steps, checkpoint_every=2)  # noqa: E731
    model, tok = tiny()
    straight = GRPOTrainer(model, tok, spread_reward, PROMPTS, cfg(4), progress=False)
    straight.train()
    model, tok = tiny()
    GRPOTrainer(model, tok, spread_reward, PROMPTS, cfg(2), run_dir=tmp_path / "b", progress=False).train()
    # the step-2 checkpoint rewritten in the 0.1 layout
    tensors, meta = load_checkpoint(find_checkpoint(tmp_path / "b"))
    old = tmp_path / "c" / "checkpoints" / "step-000002"
    shutil.copytree(find_checkpoint(tmp_path / "b") / "model", old / "model")
    tensors["rng.generator"] = tensors.pop("rng.generator.sampler")
    meta["python_rng"] = meta.pop("rng")["python"]
    write_checkpoint(old / "trainer", tensors, meta)
    assert (
        is_legacy(old) and list_lm_checkpoints(old.parent) == [old] and find_checkpoint(tmp_path / "c") == old
    )

    damaged = tmp_path / "d" / "checkpoints" / "step-000002"
    shutil.copytree(old, damaged)
    weights = damaged / "trainer" / "tensors.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert not is_legacy(damaged) and list_lm_checkpoints(damaged.parent) == []
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        find_checkpoint(tmp_path / "d")

    resumed = GRPOTrainer.resume(
        tmp_path / "c", spread_reward, PROMPTS, cfg(4), run_dir=tmp_path / "c", progress=False
    )
    assert resumed.step == 2
    resumed.train()
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_dense_reward_rises_in_40_steps():
    torch.manual_seed(0)
    model, tok = tiny(seed=3)
    cfg = config(learning_rate=3e-3, prompts_per_step=4, num_generations=8, kl_coef=0.0, max_steps=40)
    trainer = GRPOTrainer(model, tok, digit_fraction, PROMPTS, cfg, progress=False)
    rewards = [trainer.train_step()["reward"] for _ in range(cfg.max_steps)]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.3, (first, last)


def test_a_new_trainer_refuses_a_run_directory_that_holds_a_run(tmp_path):
    """Issue 29 item 5 on the LM side: from Python, a fresh trainer on a directory holding a run was
    free to overwrite its config, metrics and completions; it is refused with the CLI's message, and
    ``resume`` continues that run (trimming its logs atomically under the lock)."""
    model, tok = tiny()
    GRPOTrainer(
        model, tok, spread_reward, PROMPTS, config(max_steps=1), run_dir=tmp_path, progress=False
    ).train()
    before = (tmp_path / "metrics.csv").read_text()
    model, tok = tiny()
    again = GRPOTrainer(
        model, tok, spread_reward, PROMPTS, config(max_steps=2), run_dir=tmp_path, progress=False
    )
    with pytest.raises(
        ConfigError, match=r"already holds a run; use `GRPOTrainer.resume\(.*\)` or choose another"
    ):
        again.train()
    assert (tmp_path / "metrics.csv").read_text() == before
    resumed = GRPOTrainer.resume(
        tmp_path, spread_reward, PROMPTS, config(max_steps=2), run_dir=tmp_path, progress=False
    )
    assert resumed.train()["steps"] == 2
    assert read_csv(tmp_path / "metrics.csv")["step"] == [1.0, 2.0]


def test_the_changing_the_loss_examples_in_docs_grpo_md_run():
    """docs/grpo.md's subclass adding a loss term and its registered loss type run as written."""
    import re
    from pathlib import Path

    from ppokit.functional import LOSS_TYPES

    text = (Path(__file__).resolve().parents[1] / "docs" / "grpo.md").read_text()
    section = text.split("## Changing the loss", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    try:
        for block in blocks:
            exec(compile(block, "docs/grpo.md", "exec"), namespace)
        assert namespace["cfg"].loss_type == "plain_pg"
        assert namespace["metrics"]["l2"] > 0
    finally:
        LOSS_TYPES.pop("plain_pg", None)
