"""``ppokit resume RUN_DIR`` continues any run: GRPO and RLHF-PPO here (PPO in the reliability tests),
in the checkpoint layout both sides share, and LM runs written by ppokit 0.1 in its old layout. Also
the LM side's guarded step: non-finite steps are skipped and counted, then stop the run with an
emergency checkpoint, as on the classic side."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from ppokit.cli import main
from ppokit.cli.resume import run_kind
from ppokit.errors import NonFiniteError
from ppokit.train.checkpoint import is_complete

OLD_RUNS = Path(__file__).resolve().parent / "data" / "old_runs"
TINY = [
    "--no-progress",
    *("--set", "torch_threads=1", "--set", "tensorboard=false", "--set", "eval_prompts=8"),
    *("--set", "warm_start.steps=0", "--set", "eval_every=2", "--set", "prompts_per_step=4"),
    *("--set", "tiny_model.n_layer=1", "--set", "tiny_model.n_embd=16", "--set", "tiny_model.n_head=2"),
]
ALGO = {"grpo": ["--set", "num_generations=2"], "rlhf-ppo": ["--set", "num_mini_batches=1"]}


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def metric_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(float(r["step"])) for r in csv.DictReader(f)]


@pytest.mark.parametrize("verb", ["grpo", "rlhf-ppo"])
def test_ppokit_resume_continues_an_lm_run_to_the_new_total(verb, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([verb, "--run-dir", str(run), "--max-steps", "3", *TINY, *ALGO[verb]]) == 0
    first = last_json(capsys)
    assert first["steps"] == 3
    assert run_kind(run) == verb.replace("-", "_")
    # one layout for both sides: step_<12 digits>, with the HF model inside and a manifest over it
    ckpt = run / "checkpoints" / "step_000000000003"
    assert is_complete(ckpt) and (ckpt / "model" / "config.json").is_file()
    manifest = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert "model/model.safetensors" in manifest and "tensors.safetensors" in manifest

    assert main(["resume", str(run), "--max-steps", "5", "--no-progress"]) == 0
    resumed = last_json(capsys)
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 5
    assert resumed["accuracy_before"] == first["accuracy_before"]
    assert (run / "checkpoints" / "step_000000000005").is_dir()
    # one metrics row per step (step 0: the evaluation before training), none repeated
    assert metric_steps(run) == [0, 1, 2, 3, 4, 5]


def test_rows_logged_after_the_checkpoint_are_dropped_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["grpo", "--run-dir", str(run), "--max-steps", "3", "--set", "checkpoint_every=2"]
    assert main([*argv, *TINY, *ALGO["grpo"]]) == 0
    capsys.readouterr()
    assert metric_steps(run) == [0, 1, 2, 3]
    # as if the process had died after logging step 3 but before checkpointing it
    shutil.rmtree(run / "checkpoints" / "step_000000000003")
    assert main(["grpo", "--resume", str(run), "--max-steps", "4", "--no-progress"]) == 0  # an alias
    assert last_json(capsys)["resumed_from_step"] == 2
    assert metric_steps(run) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("name", "verb"), [("grpo", "resume"), ("rlhf_ppo", "rlhf-ppo")])
def test_a_run_in_ppokit_0_1_layout_still_resumes(name, verb, tmp_path, capsys):
    run = tmp_path / name
    shutil.copytree(OLD_RUNS / name, run)
    assert (run / "checkpoints" / "step-000002" / "trainer" / "meta.json").is_file()
    assert run_kind(run) == name
    argv = ["resume", str(run)] if verb == "resume" else [verb, "--resume", str(run)]
    assert main([*argv, "--max-steps", "4", "--no-progress"]) == 0
    out = last_json(capsys)
    assert out["resumed_from_step"] == 2 and out["steps"] == 4
    assert is_complete(run / "checkpoints" / "step_000000000004")
    config = (run / "config.yaml").read_text()  # saved again with the canonical names
    assert "clip_range:" in config and "epsilon:" not in config and "cliprange:" not in config
    assert metric_steps(run)[-2:] == [3, 4]


def test_non_finite_steps_stop_an_lm_run_with_an_emergency_checkpoint(tmp_path):
    from ppokit.llm.config import TinyModelConfig
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model
    from ppokit.llm.trainer import LMTrainer

    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0)
    reward = lambda prompts, completions, **_: [float(len(c)) for c in completions]
    cfg = GRPOConfig.from_dict(
        {"max_steps": 6, "prompts_per_step": 2, "num_generations": 2, "nonfinite_stop_after": 3}
        | {"tensorboard": False, "learning_rate": 1e-3, "generation": {"max_completion_length": 4}}
    )
    trainer = GRPOTrainer(model, tok, reward, ["1+1=", "2+2="], cfg, run_dir=tmp_path, progress=False)
    loss_fn = trainer.loss

    def nan_loss(*args, **kwargs):  # a fault injected into every loss (e.g. a reward that overflowed)
        loss, stats = loss_fn(*args, **kwargs)
        return loss * float("nan"), {**stats, "loss": float("nan")}

    trainer.loss = nan_loss
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteError, match="emergency checkpoint") as err:
        trainer.train()
    assert "nonfinite_stop_after=3" in str(err.value)
    assert trainer.guard.skipped == 3 and trainer.step == 2  # two steps skipped, the third stopped it
    assert all((a == b).all() for a, b in zip(before, model.parameters()))  # nothing moved
    assert is_complete(tmp_path / "checkpoints" / "step_000000000002")
    again = GRPOTrainer.resume(tmp_path, reward, ["1+1=", "2+2="], progress=False)
    assert again.step == 2 and again.guard.in_a_row == 3 and isinstance(again, LMTrainer)


def test_an_lm_run_directory_has_one_writer(tmp_path):
    from ppokit.errors import RunDirError
    from ppokit.llm.config import TinyModelConfig
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model
    from ppokit.train.rundir import RunDirLock

    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0)
    cfg = GRPOConfig.from_dict(
        {
            "max_steps": 1,
            "prompts_per_step": 2,
            "num_generations": 2,
            "tensorboard": False,
            "max_completion_length": 4,
        }
    )
    reward = lambda prompts, completions, **_: [float(len(c)) for c in completions]
    prompts = ["1+1=", "2+2="]  # prompts_per_step=2 needs two rows (issue 34)
    trainer = GRPOTrainer(model, tok, reward, prompts, cfg, run_dir=tmp_path, progress=False)
    other = RunDirLock(tmp_path)  # another writer holds the run directory
    with pytest.raises(RunDirError, match="in use by another ppokit process"):
        trainer.train()
    other.release()
    assert trainer.train()["steps"] == 1  # free again; and train() releases it when done
    RunDirLock(tmp_path).release()
