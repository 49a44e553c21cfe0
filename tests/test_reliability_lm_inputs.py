"""Language-model inputs that were silently wrong or ended in a traceback (issue 34, the LM side).

- ``sys.exit()`` (any BaseException but KeyboardInterrupt) inside a reward function, sync or async, is
  that function's failure: a ``RewardFunctionError`` naming it and the row, a checkpoint, exit 2.
- A model directory missing a tensor, holding an unexpected one or one of the wrong shape is refused
  naming the tensor and the directory; an encoder (BERT) is refused as not a causal LM.
- ``prompts_per_step`` larger than the prompt rows is refused; ``output_dir`` is the command line's run
  directory; ``disable_dropout`` zeroes every dropout probability.
- A lone surrogate in a prompt, a tokenizer larger than the model's vocabulary and a reward of
  ``10**400`` are one-line errors naming the row / the sizes / the function.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
import torch

from ppokit.cli import main
from ppokit.errors import CheckpointError, ConfigError
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model, load_pretrained, save_pretrained
from ppokit.llm.reward_checks import CheckedReward, RewardFunctionError
from ppokit.train.checkpoint import is_complete, latest_checkpoint

PROMPTS = ["1+1=", "2+2=", "3+3=", "4+4="]
BASE = {"prompts_per_step": 2, "num_generations": 2, "tensorboard": False, "max_steps": 2}
BASE["generation"] = {"max_completion_length": 4}
SMALL = TinyModelConfig(n_layer=1, n_embd=16, n_head=2)


def length(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def tiny(reward=length, prompts=PROMPTS, model=None, tok=None, run_dir=None, **cfg):
    tok = tok if tok is not None else build_char_tokenizer()
    model = model if model is not None else build_tiny_model(SMALL, tok, seed=0)
    config = GRPOConfig.from_dict({**BASE, **cfg})
    return GRPOTrainer(model, tok, reward, prompts, config, run_dir=run_dir, progress=False)


# -- 1. sys.exit() inside a reward function -----------------------------------------------------------
def exits(prompts, completions, **_):
    if any("3" in p for p in prompts):
        sys.exit(0)  # exit status 0: the worst case, a scheduler would have seen success
    return [1.0] * len(completions)


async def exits_async(prompts, completions, **_):
    await asyncio.sleep(0)
    if any("3" in p for p in prompts):
        raise SystemExit(3)
    return [1.0] * len(completions)


@pytest.mark.parametrize("fn", [exits, exits_async])
def test_sys_exit_in_a_reward_is_the_functions_failure_naming_the_row(fn):
    checked = CheckedReward(fn)
    with pytest.raises(RewardFunctionError) as info:
        checked(prompts=["1+1=", "2+2=", "3+3="], completions=["2", "4", "6"])
    msg = str(info.value)
    assert f"reward function {fn.__name__!r} raised SystemExit on prompt row 2 (prompt '3+3=')" in msg
    assert "it called exit(" in msg


def test_async_rewards_are_awaited_and_checked():
    async def scores(prompts, completions, **_):
        return [0.5] * len(completions)

    async def wrong(prompts, completions, **_):
        return ["x"] * len(completions)

    c = dict(prompts=["a", "b"], completions=["x", "y"])
    assert CheckedReward(scores)(**c) == [0.5, 0.5]
    with pytest.raises(RewardFunctionError, match=r"'wrong' returned 'x' \(str\) for completion 0"):
        CheckedReward(wrong)(**c)


def test_keyboard_interrupt_from_a_reward_is_left_to_the_interrupt_handling():
    # It cannot be told apart from the user's Ctrl-C arriving while the function runs (documented in
    # reward_checks.py), so it is not turned into the function's failure.
    def interrupted(prompts, completions, **_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        CheckedReward(interrupted)(prompts=["a"], completions=["x"])


def test_sys_exit_in_a_reward_keeps_a_checkpoint(tmp_path):
    calls = {"n": 0}

    def exits_later(prompts, completions, **_):
        calls["n"] += 1
        if calls["n"] > 1:
            sys.exit()
        return [1.0] * len(completions)

    trainer = tiny(exits_later, run_dir=tmp_path, max_steps=4)
    with pytest.raises(RewardFunctionError, match="'exits_later' raised SystemExit.*checkpoint of step 1"):
        trainer.train()
    assert is_complete(latest_checkpoint(tmp_path / "checkpoints"))


# -- 2. model directories that do not match their config ----------------------------------------------
@pytest.fixture(params=["gpt2", "qwen2"])
def model_dir(request, tmp_path):
    tok = build_char_tokenizer()
    cfg = TinyModelConfig(architecture=request.param, n_layer=1, n_embd=16, n_head=2)
    return save_pretrained(build_tiny_model(cfg, tok, seed=0), tok, tmp_path / "model")


def _edit_tensors(directory, edit):
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(path)
    name = sorted(k for k in tensors if "mlp" in k)[0]
    edit(tensors, name)
    save_file(tensors, path, metadata={"format": "pt"})
    return name


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t, k: t.pop(k), "missing {name} (they would start at random)"),
        (lambda t, k: t.__setitem__(k, torch.zeros(3, 3)), "wrong shape: {name} is [3, 3] there"),
        (lambda t, k: t.__setitem__("extra.weight", torch.zeros(2)), "unexpected extra.weight"),
    ],
    ids=["missing", "shape", "unexpected"],
)
def test_a_model_directory_that_does_not_match_its_config_is_refused(model_dir, edit, message):
    assert load_pretrained(model_dir)[0] is not None  # the untouched directory loads
    name = _edit_tensors(model_dir, edit)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(model_dir)
    msg = str(info.value)
    assert f"model directory {str(model_dir)!r} does not match its config.json" in msg
    assert message.format(name=name) in msg and "\n" not in msg


def _bert(tok, **extra):
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, pad_token_id=tok.pad_token_id, **extra,
    )  # fmt: skip
    return transformers.BertForMaskedLM(cfg)


@pytest.mark.parametrize("is_decoder", [False, True])
def test_an_encoder_model_is_refused_as_not_a_causal_lm(tmp_path, is_decoder):
    # is_decoder=True only masks the attention of weights trained as an encoder: still refused
    tok = build_char_tokenizer()
    save_pretrained(_bert(tok), tok, tmp_path)
    if is_decoder:
        cfg = json.loads((tmp_path / "config.json").read_text())
        (tmp_path / "config.json").write_text(json.dumps({**cfg, "is_decoder": True}))
    with pytest.raises(ConfigError) as info:
        load_pretrained(tmp_path)
    msg = str(info.value)
    assert "holds BertForMaskedLM (model_type 'bert'), an encoder" in msg
    assert "is_decoder" not in msg  # no advice that would then "work" wrongly


def test_an_encoder_model_object_is_refused_by_the_trainer():
    tok = build_char_tokenizer()
    with pytest.raises(ConfigError, match="holds BertForMaskedLM .* not a causal language model"):
        tiny(model=_bert(tok), tok=tok)


# -- 3. inputs accepted and then ignored ---------------------------------------------------------------
def test_more_prompts_per_step_than_rows_is_refused():
    message = "prompts_per_step=100000 is not allowed; the training prompts have only 4 rows"
    with pytest.raises(ConfigError, match=message):
        tiny(prompts_per_step=100000)
    assert tiny(prompts_per_step=4).config.prompts_per_step == 4  # all the rows in one step is fine


def test_output_dir_is_the_command_lines_run_directory(tmp_path):
    cfg = GRPOConfig.from_dict({"output_dir": str(tmp_path / "out")})
    assert cfg.run_dir_for(None) == tmp_path / "out"
    assert cfg.run_dir_for(str(tmp_path / "out")) == tmp_path / "out"
    assert GRPOConfig().run_dir_for(None) is None
    with pytest.raises(ConfigError, match="name different run directories"):
        cfg.run_dir_for(str(tmp_path / "other"))


def test_output_dir_on_the_command_line_writes_there(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.jsonl").write_text('{"prompt": "1+1="}\n{"prompt": "2+2="}\n')
    (tmp_path / "rw.py").write_text("def f(completions, **kw):\n    return [1.0] * len(completions)\n")
    argv = ["grpo", "--prompts", str(tmp_path / "p.jsonl"), "--reward", f"{tmp_path / 'rw.py'}:f"]
    argv += ["--no-progress", "--max-steps", "1", "--set", "tensorboard=false", "--set", "num_generations=2"]
    argv += ["--set", "max_completion_length=4", "--set", "prompts_per_step=2"]
    argv += ["--set", f"output_dir={tmp_path / 'out'}"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["run_dir"] == str(tmp_path / "out")
    assert (tmp_path / "out" / "config.yaml").is_file() and not (tmp_path / "runs").exists()


def _dropout_model(tok):
    import transformers

    cfg = transformers.GPT2Config(
        vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2,
        resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg)


def _two_forwards_agree(model):
    model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    return torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.parametrize("disable", [False, True])
def test_disable_dropout_zeroes_every_dropout_probability(disable):
    tok = build_char_tokenizer()
    trainer = tiny(model=_dropout_model(tok), tok=tok, disable_dropout=disable, kl_coef=0.04)
    probabilities = [m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert probabilities and all(p == (0.0 if disable else 0.5) for p in probabilities)
    assert _two_forwards_agree(trainer.model) is disable
    if disable:  # the reference copy is taken after, so it has none either
        assert all(m.p == 0.0 for m in trainer.ref_model.modules() if isinstance(m, torch.nn.Dropout))


def test_disable_dropout_reaches_float_attention_dropout():
    # Qwen2 keeps its attention dropout as a float it passes to the attention function, not a module
    from ppokit.llm.precision import disable_dropout

    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(architecture="qwen2", n_layer=1, n_embd=16, n_head=2), tok)
    attn = [m for m in model.modules() if hasattr(m, "attention_dropout")]
    for m in attn:
        m.attention_dropout = 0.3
    assert attn and disable_dropout(model) == len(attn)
    assert all(m.attention_dropout == 0.0 for m in attn)


# -- 5. tracebacks that are now one-line errors ---------------------------------------------------------
def test_a_lone_surrogate_in_a_prompt_is_refused_naming_the_row():
    with pytest.raises(ConfigError, match=r"train_prompts row 1: the prompt holds '\\ud800' at character 2"):
        tiny(prompts=["1+1=", "2+\ud800", "3+3="])
    chat = [[{"role": "user", "content": "ok"}], [{"role": "user", "content": "\udfff"}]]
    with pytest.raises(ConfigError, match="train_prompts row 1: the prompt holds"):
        tiny(prompts=chat)


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused():
    tok = build_char_tokenizer()
    model = build_tiny_model(SMALL, build_char_tokenizer("0123456789"), seed=0)  # 14 rows
    message = f"the tokenizer has {len(tok)} tokens but the model's embedding has 14 rows"
    with pytest.raises(ConfigError, match=message):
        tiny(model=model, tok=tok)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (10**400, "for completion 0; it is too large for a float"),
        (1 + 2j, r"returned \(1\+2j\) \(complex\) for completion 0"),
    ],
    ids=["10**400", "complex"],
)
def test_rewards_no_float_can_hold_are_named(value, message):
    fn = lambda prompts, completions, **_: [value, 1.0]  # noqa: E731
    with pytest.raises(RewardFunctionError, match=message):
        CheckedReward(fn)(prompts=["a", "b"], completions=["x", "y"])
    every = lambda prompts, completions, **_: [value] * len(completions)  # noqa: E731
    with pytest.raises(RewardFunctionError, match="reward function '<lambda>'"):
        tiny(every).train()
