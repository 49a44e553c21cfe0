"""Language-model runs refuse what cannot learn and keep their work (issue 16, groups 1, 4 and 7).

- Reward functions: one that raises names itself, the prompt row and the exception, after a
  checkpoint; a wrong type, a wrong length, +-inf are one-line errors naming the function; None/NaN
  for every completion of a step stops the run (it used to train at gradient 0 and exit 0).
- ``num_generations < 2`` is refused; prompts that are empty, not strings, or longer than the model's
  positions are refused naming the row; a tokenizer with neither pad nor EOS is refused.
- ``checkpoint_every_seconds`` (300 by default) checkpoints by wall-clock.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from ppokit.cli import main
from ppokit.errors import ConfigError
from ppokit.llm.config import LMConfig, TinyModelConfig
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model
from ppokit.llm.reward_checks import CheckedReward, RewardFunctionError, require_scored
from ppokit.llm.rlhf_ppo import RLHFPPOTrainer
from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig
from ppokit.train.checkpoint import is_complete, latest_checkpoint

PROMPTS = ["1+1=", "2+2=", "3+3=", "4+4="]
BASE = {"prompts_per_step": 2, "tensorboard": False, "generation": {"max_completion_length": 4}}


def length(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def tiny(trainer_cls=GRPOTrainer, reward=length, run_dir=None, prompts=PROMPTS, **cfg):
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0)
    extra = {"num_generations": 2} if trainer_cls is GRPOTrainer else {"num_mini_batches": 1}
    config = trainer_cls.config_class().from_dict({**BASE, **extra, "max_steps": 2, **cfg})
    return trainer_cls(model, tok, reward, prompts, config, run_dir=run_dir, progress=False)


# -- the checks themselves --------------------------------------------------------------------------


def test_checked_reward_names_the_function_row_and_problem():
    def boom(prompts, completions, **kw):
        if any("3" in p for p in prompts):
            raise ZeroDivisionError("division by zero")
        return [1.0] * len(completions)

    checked = CheckedReward(boom)
    assert checked.__name__ == "boom"
    with pytest.raises(RewardFunctionError) as info:
        checked(prompts=["1+1=", "2+2=", "3+3="], completions=["2", "4", "6"], answer=[2, 4, 6])
    msg = str(info.value)
    assert "'boom' raised ZeroDivisionError on prompt row 2 (prompt '3+3='): division by zero" in msg
    c = dict(prompts=["a", "b"], completions=["x", "y"])
    bad = [
        (lambda **k: 1.0, "returned float 1.0"),
        (lambda **k: "1.0", "returned str"),
        (lambda **k: {"a": 1}, "returned dict"),
        (lambda **k: [[1.0, 2.0], [1.0]], "returned [1.0, 2.0] (list) for completion 0"),
        (lambda **k: ["1.0", 2.0], "returned '1.0' (str) for completion 0"),
        (lambda **k: [1.0, math.inf], "returned inf for completion 1; rewards must be finite"),
        (lambda **k: [-math.inf, 1.0], "returned -inf for completion 0"),
        (lambda **k: np.ones((2, 2)), "returned ndarray"),
    ]
    for fn, text in bad:
        with pytest.raises(RewardFunctionError, match="reward function '<lambda>'") as info:
            CheckedReward(fn)(**c)
        assert text in str(info.value), str(info.value)
    # what is fine: numbers of any kind, None, NaN (not scored), numpy and torch results
    ok = lambda **k: [np.float32(1.0), None]
    assert CheckedReward(ok)(**c) == [1.0, None]
    assert CheckedReward(lambda **k: torch.tensor([1.0, 2.0]))(**c) == [1.0, 2.0]
    assert math.isnan(CheckedReward(lambda **k: np.array([math.nan, 1]))(**c)[0])
    with pytest.raises(RewardFunctionError, match=r"returned None or NaN for all 4 completions"):
        require_scored(torch.full((4,), math.nan), ["f"], step=3)
    require_scored(torch.tensor([math.nan, 1.0]), ["f"], step=3)  # one scored completion is enough


@pytest.mark.parametrize("trainer_cls", [GRPOTrainer, RLHFPPOTrainer])
@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (lambda prompts, completions, **_: [None] * len(completions), "no completion of step 1 was scored"),
        (
            lambda prompts, completions, **_: [math.nan] * len(completions),
            "no completion of step 1 was scored",
        ),
        (lambda prompts, completions, **_: [math.inf] * len(completions), "rewards must be finite"),
        (lambda prompts, completions, **_: [1.0], r"returned 1 values for \d completions"),
    ],
)
def test_rewards_that_cannot_train_stop_the_run(trainer_cls, reward, message, tmp_path):
    trainer = tiny(trainer_cls, reward, run_dir=tmp_path)
    with pytest.raises(RewardFunctionError, match=message):
        trainer.train()


def test_a_raising_reward_keeps_a_checkpoint_and_the_run_resumes(tmp_path, capsys):
    calls = {"n": 0}

    def flaky(prompts, completions, **_):
        calls["n"] += 1
        if calls["n"] > 2:  # two training steps score fine (plus none for eval), then it breaks
            raise KeyError("answer")
        return [float(len(c)) for c in completions]

    trainer = tiny(GRPOTrainer, flaky, run_dir=tmp_path, max_steps=5)
    with pytest.raises(RewardFunctionError) as info:
        trainer.train()
    msg = str(info.value)
    assert "'flaky' raised KeyError on prompt row 0" in msg and "checkpoint of step 2" in msg
    assert is_complete(latest_checkpoint(tmp_path / "checkpoints"))
    again = GRPOTrainer.resume(tmp_path, length, PROMPTS, progress=False)
    assert again.step == 2 and again.train()["steps"] == 5


@pytest.mark.parametrize(
    ("body", "raised"),
    [
        ("    return [1 / 0] * len(completions)\n", "ZeroDivisionError"),
        # issue 34: sys.exit() in a reward exited 0 with no message
        ("    import sys\n    sys.exit(0)\n", "SystemExit"),
    ],
    ids=["ZeroDivisionError", "SystemExit"],
)
def test_reward_errors_on_the_command_line_are_one_line(tmp_path, capsys, body, raised):
    (tmp_path / "rw.py").write_text("def f(prompts, completions, **kw):\n" + body)
    (tmp_path / "p.jsonl").write_text('{"prompt": "1+1="}\n{"prompt": "2+2="}\n')
    argv = ["grpo", "--run-dir", str(tmp_path / "run"), "--prompts", str(tmp_path / "p.jsonl")]
    argv += ["--reward", f"{tmp_path / 'rw.py'}:f", "--no-progress", "--set", "tensorboard=false"]
    argv += ["--set", "num_generations=2", "--set", "max_completion_length=4", "--set", "prompts_per_step=2"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert f"reward function 'f' raised {raised} on prompt row 0" in err[0]
    assert "checkpoint of step 0" in err[0] and "ppokit resume" in err[0]


# -- configs and inputs ------------------------------------------------------------------------------


def test_a_group_of_one_is_refused_whatever_the_kl_weight():
    for extra in ({}, {"kl_coef": 0.0}, {"scale_rewards": "none"}):
        with pytest.raises(ConfigError, match="num_generations=1 is not allowed; a group of one"):
            GRPOConfig.from_dict({"num_generations": 1, **extra})


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (["1+1=", ""], "train_prompts row 1: the prompt is empty"),
        (["1+1=", 12], "train_prompts row 1: prompt=12 (int) is not allowed"),
        ([["not", "messages"]], "train_prompts row 0: prompt=['not', 'messages']"),
        (["1+1=", "9" * 60], "train_prompts row 1 has 60 tokens"),
    ],
)
def test_bad_prompts_are_refused_naming_the_row(prompts, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        tiny(prompts=prompts, generation={"max_prompt_length": 64, "max_completion_length": 8})


def test_a_tokenizer_with_neither_pad_nor_eos_is_refused():
    from transformers import PreTrainedTokenizerFast

    tok = build_char_tokenizer()
    bare = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer)
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0)
    cfg = GRPOConfig.from_dict({**BASE, "num_generations": 2})
    with pytest.raises(ConfigError, match="has neither a pad token nor an EOS token"):
        GRPOTrainer(model, bare, length, PROMPTS, cfg, progress=False)


def test_lm_runs_checkpoint_by_wall_clock_by_default(tmp_path, monkeypatch):
    assert LMConfig().checkpoint_every_seconds == 300 and LMConfig().checkpoint_every == 0
    assert RLHFPPOConfig().checkpoint_every_seconds == 300
    with pytest.raises(ConfigError, match="checkpoint_every_seconds=-1"):
        GRPOConfig.from_dict({"checkpoint_every_seconds": -1})
    import ppokit.train.loop as loop

    clock = {"t": 0.0}
    monkeypatch.setattr(loop, "_clock", lambda: clock["t"])
    trainer = tiny(run_dir=tmp_path, max_steps=4, checkpoint_every_seconds=10)
    step = trainer.train_step

    def slow_step():  # each step "takes" 6 s: checkpoints after steps 2 and 4 (12 s, then 12 s later)
        clock["t"] += 6
        return step()

    trainer.train_step = slow_step
    saved = []
    save = trainer.save_checkpoint
    trainer.save_checkpoint = lambda *a: saved.append(trainer.step) or save(*a)
    summary = trainer.train()
    # by time after steps 2 and 4; the run ends on step 4's checkpoint, not a second copy of it
    assert saved == [2, 4]
    assert summary["checkpoint"].endswith("step_000000000004")


def test_a_model_directory_without_tokenizer_is_refused(tmp_path, capsys):
    from ppokit.errors import CheckpointError
    from ppokit.llm.models import load_pretrained

    tok = build_char_tokenizer()
    build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="has no tokenizer"):  # it used to crash in a reshape
        load_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert load_pretrained(tmp_path)[1].pad_token is not None
