"""Batched KV-cache sampling: early stop, masks after EOS, left padding, temperature, top-k/top-p."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ppokit.llm.config import TinyModelConfig
from ppokit.llm.generation import (
    completion_logprobs,
    encode_prompts,
    generate,
    positions_from_mask,
    sample_next,
)
from ppokit.llm.models import build_char_tokenizer, build_tiny_model

EOS, PAD, V = 1, 0, 8


class ScriptedLM(torch.nn.Module):
    """Row i emits token 5 until it has generated ``ends[i]`` tokens, then EOS. Counts its calls."""

    def __init__(self, ends: list[int]):
        super().__init__()
        self.ends = torch.tensor(ends)
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, **_):
        self.calls += 1
        done = 0 if past_key_values is None else past_key_values + 1  # tokens generated so far
        logits = torch.full((input_ids.shape[0], input_ids.shape[1], V), -1e9)
        nxt = torch.where(torch.as_tensor(done) >= self.ends - 1, EOS, 5)
        logits[torch.arange(len(nxt)), -1, nxt] = 0.0
        return SimpleNamespace(logits=logits, past_key_values=done)


def test_generation_stops_when_every_row_ended_and_masks_after_eos():
    model = ScriptedLM([2, 4, 1])
    ids = torch.full((3, 2), 3)
    out = generate(model, ids, torch.ones_like(ids), max_new_tokens=50, eos_ids=[EOS], pad_id=PAD)
    assert out.tokens.tolist() == [[5, EOS, PAD, PAD], [5, 5, 5, EOS], [EOS, PAD, PAD, PAD]]
    assert out.mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert out.ended.all()
    assert model.calls == 4  # the prefill + 3 single-token steps, not 50


def test_generation_truncates_at_max_new_tokens():
    out = generate(ScriptedLM([10, 2]), torch.full((2, 1), 3), torch.ones(2, 1), 3, [EOS], PAD)
    assert out.tokens.shape == (2, 3) and out.ended.tolist() == [False, True]
    assert out.mask.int().tolist() == [[1, 1, 1], [1, 1, 0]]


def test_left_padding_gives_the_same_greedy_answer_as_no_padding():
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, seed=0)
    ids, mask = encode_prompts(tok, ["7+8=", "123+456="], 32)
    assert mask[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    batched = generate(model, ids, mask, 5, [tok.eos_token_id], tok.pad_token_id, greedy=True)
    alone_ids, alone_mask = encode_prompts(tok, ["7+8="], 32)
    alone = generate(model, alone_ids, alone_mask, 5, [tok.eos_token_id], tok.pad_token_id, greedy=True)
    n = alone.tokens.shape[1]
    assert torch.equal(batched.tokens[0, :n][alone.mask[0]], alone.tokens[0][alone.mask[0]])
    assert positions_from_mask(mask)[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3]


def test_logprobs_use_the_sampling_temperature_and_match_the_cached_pass():
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, seed=0)
    ids, mask = encode_prompts(tok, ["1+2=", "30+4="], 32)
    out = generate(model, ids, mask, 4, [tok.eos_token_id], tok.pad_token_id, greedy=True)
    for temp in (1.0, 0.5):
        logp, ent = completion_logprobs(model, ids, mask, out.tokens, out.mask, temp, with_entropy=True)
        full = torch.cat([ids, out.tokens], 1)
        attn = torch.cat([mask, out.mask.long()], 1)
        logits = model(input_ids=full, attention_mask=attn, position_ids=positions_from_mask(attn)).logits
        ref = torch.log_softmax(logits[:, ids.shape[1] - 1 : -1] / temp, -1)
        ref = ref.gather(-1, out.tokens[..., None]).squeeze(-1)
        assert torch.allclose(logp, ref, atol=1e-5)
        assert ent.shape == logp.shape and (ent >= 0).all()


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, top_k=2, generator=gen).tolist()) == {0, 1}
    assert set(sample_next(logits, top_p=0.7, generator=gen).tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7
    assert set(sample_next(logits, top_p=0.4, generator=gen).tolist()) == {0}
    assert sample_next(logits[:1], greedy=True).item() == 0
    assert len(set(sample_next(logits, generator=gen).tolist())) == 4


def test_shared_prompt_prefix_gives_the_same_logprobs_and_gradients():
    tok = build_char_tokenizer()
    for arch in ("gpt2", "qwen2"):
        model = build_tiny_model(TinyModelConfig(architecture=arch, n_layer=2, n_embd=32, n_head=2), tok, 0)
        ids, mask = encode_prompts(tok, ["1+2=", "30+45=", "7+7="], 32)
        g = 4
        out = generate(
            model,
            ids,
            mask,
            6,
            [tok.eos_token_id],
            tok.pad_token_id,
            num_return_sequences=g,
            generator=torch.Generator().manual_seed(0),
        )
        assert out.tokens.shape[0] == 3 * g
        rep_ids, rep_mask = ids.repeat_interleave(g, 0), mask.repeat_interleave(g, 0)
        results = []
        for group in (1, g):
            logp, _ = completion_logprobs(
                model, rep_ids, rep_mask, out.tokens, out.mask, 0.7, group_size=group
            )
            grads = torch.autograd.grad((logp * out.mask).sum(), list(model.parameters()))
            results.append((logp[out.mask], grads))
        assert torch.allclose(results[0][0], results[1][0], atol=1e-5), arch
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(results[0][1], results[1][1])), arch


def test_sampling_and_scoring_take_explicit_inputs_not_a_trainer():
    """``llm/sampling.py`` reads what it is given (issue 29): a ``Sampler`` of a tiny model and its
    tokenizer samples, and ``score`` calls reward functions with TRL's keywords, with no trainer."""
    from ppokit.llm.config import GenerationConfig
    from ppokit.llm.models import eos_token_ids, prepare_tokenizer
    from ppokit.llm.sampling import RewardLogs, Sampler, completion_token_ids, evaluate, sample, score
    from ppokit.llm.trl_compat import TrainerState

    torch.manual_seed(0)
    tok = prepare_tokenizer(build_char_tokenizer())
    model = build_tiny_model(
        TinyModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=32), tok, seed=0
    ).eval()
    gen = GenerationConfig(max_prompt_length=8, max_completion_length=4)
    sampler = Sampler(model, tok, gen, eos_token_ids(model, tok), torch.device("cpu"), torch.Generator())
    rows = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}]
    ids, mask, out, texts = sample(sampler, [r for r in rows for _ in range(3)], group=3)
    assert ids.shape[0] == mask.shape[0] == out.tokens.shape[0] == len(texts) == 6
    assert out.tokens.shape[1] <= 4

    seen = {}

    def reward(prompts, completions, answer, trainer_state, log_metric, completion_ids, **_):
        seen.update(answer=answer, step=trainer_state.global_step, ids=completion_ids)
        log_metric("calls", 1.0)
        return [float(len(c)) for c in completions]

    logs = RewardLogs()
    group_rows = [r for r in rows for _ in range(3)]
    ids_of = completion_token_ids(out)
    total, per_fn = score([reward], [2.0], group_rows, texts, ids_of, TrainerState(global_step=7), logs)
    assert total.tolist() == [2.0 * len(t) for t in texts] and per_fn.shape == (6, 1)
    assert seen == {"answer": ["2"] * 3 + ["4"] * 3, "step": 7, "ids": ids_of}
    assert logs.pop()[0] == {"calls": 1.0}

    def score_fn(r, t):
        return score([reward], None, r, t, None, TrainerState(), logs)

    result, records = evaluate(sampler, score_fn, lambda r, t: [True, False], rows, batch_size=1)
    assert result["eval/accuracy"] == 0.5 and [rec["correct"] for rec in records] == [True, False]
