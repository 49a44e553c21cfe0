"""FSDP2 sharding of the language-model trainers (``distributed.strategy: fsdp``), on CPU with gloo.

The equality test: two sharded ranks, each training on half of one batch, take the same optimizer
step as one unsharded process on the whole batch (gradient, gradient norm, loss, updated weights, in
float32), and the same comparison fails when the gradients are summed over ranks instead of averaged
(the error of pytorch issue 162338). Then the command line: GRPO and RLHF-PPO train sharded under
torchrun, stop on SIGTERM with a sharded checkpoint, and resume at another world size.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_distributed import torchrun

from ppokit.train.checkpoint import is_complete, list_checkpoints

WORKER = Path(__file__).with_name("dist_fsdp_worker.py")
TINY = ["--set", "tensorboard=false", "--set", "warm_start.steps=0", "--set", "prompts_per_step=4"]
TINY += ["--set", "generation.max_completion_length=4"]
TINY += ["--set", "tiny_model.n_embd=32", "--set", "tiny_model.n_layer=2", "--set", "eval_prompts=8"]


def _differences(out: Path, tag: str) -> dict[str, float]:
    """How far the sharded run ``tag`` is from the one-process run: the largest absolute difference
    of the gradients and of the updated weights, the relative difference of the gradient norms and
    the absolute difference of the losses."""
    one, two = load_file(str(out / "ddp-1.safetensors")), load_file(str(out / f"{tag}.safetensors"))
    assert sorted(one) == sorted(two)  # the same parameters, by name
    s1, s2 = (json.loads((out / f"{t}.json").read_text()) for t in ("ddp-1", tag))
    assert s1["rows"] == s2["rows"] == 16  # both sampled the whole batch
    gap = lambda prefix: max(float((one[k] - two[k]).abs().max()) for k in one if k.startswith(prefix))
    return {
        "grad": gap("grad."),
        "weight": gap("weight."),
        "grad_norm": abs(s2["grad_norm"] / s1["grad_norm"] - 1),
        "loss": abs(s2["loss"] - s1["loss"]),
    }


@pytest.fixture(scope="module")
def equality_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp-equality")
    torchrun(1, str(WORKER), str(out), "ddp")  # one process, not sharded: the reference
    torchrun(2, str(WORKER), str(out), "fsdp")
    torchrun(2, str(WORKER), str(out), "fsdp", "broken")
    return out


def test_two_sharded_ranks_take_the_step_of_one_process(equality_runs):
    d = _differences(equality_runs, "fsdp-2")
    # float32; only the order of the reductions differs. The weights moved by lr 1e-2 in one AdamW
    # step, so 1e-5 is a thousandth of the step.
    assert d["grad"] < 1e-6 and d["grad_norm"] < 1e-6 and d["loss"] < 1e-6, d
    assert d["weight"] < 1e-5, d


def test_the_comparison_fails_when_gradients_are_summed_not_averaged(equality_runs):
    d = _differences(equality_runs, "fsdp-2-broken")
    assert abs(d["grad_norm"] - 1.0) < 1e-3, d  # summed over 2 ranks: twice the norm
    assert d["grad"] > 1e-3 and d["weight"] > 1e-4, d  # and the test above would have failed


def _summary(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["grpo", "rlhf-ppo"])
def test_sharded_run_stops_on_sigterm_and_resumes_at_world_size_one(tmp_path, command):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv += ["-m", "ppokit", command, "--run-dir", str(run), "--no-progress", *TINY]
    argv += ["--set", "num_generations=2"] if command == "grpo" else []
    argv += ["--set", "distributed.strategy=fsdp", "--set", "max_steps=400", "--set", "checkpoint_every=1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list_checkpoints(run / "checkpoints") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)  # torchrun passes it to both ranks
    _, err = proc.communicate(timeout=240)
    saved = list_checkpoints(run / "checkpoints")
    assert saved and is_complete(saved[-1]), err[-3000:]
    meta = json.loads((saved[-1] / "meta.json").read_text())
    assert meta["sharded"]["world_size"] == 2 and 0 < meta["step"] < 400
    assert sorted(p.name for p in (saved[-1] / "shards").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    # one process continues the two ranks' run from their shards
    resume = [sys.executable, "-m", "ppokit", "resume", str(run), "--max-steps", str(meta["step"] + 2)]
    done = subprocess.run(resume + ["--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _summary(done.stdout)
    assert summary["resumed_from_step"] == meta["step"] and summary["steps"] == meta["step"] + 2
    last = json.loads((list_checkpoints(run / "checkpoints")[-1] / "meta.json").read_text())
    assert last["sharded"]["world_size"] == 1 and last["step"] == meta["step"] + 2


def test_one_process_sharded_run_resumes_on_two_ranks_exactly_as_it_continues(tmp_path):
    """1 -> 2 ranks: the shards of a one-process run load into two ranks (DCP reshards); the
    resumed run's checkpoint holds two ranks' shards and the same parameter names."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ppokit", "grpo", "--run-dir", str(run), "--no-progress", *TINY]
    cmd += ["--set", "distributed.strategy=fsdp", "--set", "max_steps=2"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    first = list_checkpoints(run / "checkpoints")[-1]
    torchrun(2, "-m", "ppokit", "resume", str(run), "--max-steps", "3", "--no-progress")
    last = list_checkpoints(run / "checkpoints")[-1]
    meta = json.loads((last / "meta.json").read_text())
    assert meta["step"] == 3 and meta["sharded"]["world_size"] == 2
    assert len(list((last / "shards").glob("*.distcp"))) == 2 and first != last


@pytest.mark.parametrize("lora", [False, True])
def test_export_of_a_sharded_checkpoint_is_the_trained_policy(tmp_path, lora):
    """``ppokit export RUN --format hf`` (DCP shards read in one process, LoRA merged) writes the
    weights the sharded trainer holds (``save_model``: gathered from its shards), loadable by
    transformers alone."""
    pytest.importorskip("peft")
    import transformers as tf

    from ppokit.cli import main
    from ppokit.llm.config import TinyModelConfig
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=2, n_embd=32, n_head=2), tok, seed=0)
    cfg = GRPOConfig(max_steps=2, prompts_per_step=2, num_generations=2, learning_rate=1e-2, use_peft=lora)
    cfg.distributed.strategy, cfg.tensorboard, cfg.generation.max_completion_length = "fsdp", False, 4
    reward = lambda prompts, completions, **_: [float(c[:1].isdigit()) for c in completions]
    trainer = GRPOTrainer(model, tok, reward, ["1+1=", "2+2="], cfg, run_dir=tmp_path / "run", progress=False)
    trainer.train()
    trainer.save_model(tmp_path / "gathered", merged=True)
    assert main(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "export")]) == 0
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    gathered = load_file(str(tmp_path / "gathered" / "model.safetensors"))
    assert sorted(exported) == sorted(gathered) and not any("lora" in k for k in exported)
    assert all(bool((exported[k] == gathered[k]).all()) for k in exported)
    start = build_tiny_model(TinyModelConfig(n_layer=2, n_embd=32, n_head=2), tok, seed=0).state_dict()
    assert any(not bool((exported[k] == start[k]).all()) for k in exported if k in start)  # it trained
    assert (
        type(tf.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export"))).__name__ == "GPT2LMHeadModel"
    )


@pytest.mark.slow
@pytest.mark.parametrize(("command", "steps"), [("grpo", 600), ("rlhf-ppo", 400)])
def test_sharded_demo_gains_30_points(tmp_path, command, steps):
    """The built-in demos, sharded over two CPU processes, still learn: +30 points of held-out exact
    match (step-bounded: the presets' 480 s budget depends on the machine's load; docs/scaling-out.md
    has the measured runs)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv += ["-m", "ppokit", command, "--run-dir", str(tmp_path / "run"), "--no-progress"]
    argv += ["--set", "distributed.strategy=fsdp", "--set", "max_seconds=0", "--set", f"max_steps={steps}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = _summary(out.stdout)
    assert summary["steps"] == steps and summary["accuracy_after"] - summary["accuracy_before"] >= 0.30, (
        summary
    )
