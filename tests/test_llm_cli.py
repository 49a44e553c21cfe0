"""``ppokit grpo``: help, one-line errors, a short built-in run, a user model + prompts + reward, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ppokit.cli import main
from ppokit.llm.config import TinyModelConfig
from ppokit.llm.models import build_char_tokenizer, build_tiny_model, save_pretrained

FAST = ["--no-progress", "--set", "torch_threads=1", "--set", "tensorboard=false", "--set", "eval_prompts=20"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_importing_the_cli_does_not_import_transformers():
    code = (
        "import sys, ppokit.cli, ppokit.cli.lm; ppokit.cli.build_parser(); "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_grpo_option_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["grpo", "--help"])
    text = capsys.readouterr().out
    for flag in ("--task", "--model", "--prompts", "--reward", "--run-dir", "--config", "--set", "--resume"):
        assert flag in text
    from ppokit.cli import build_parser

    grpo = build_parser()._subparsers._group_actions[0].choices["grpo"]
    assert all(a.help for a in grpo._actions)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "kl_coef=-1"], "kl_coef=-1"),
        (["--set", "beta=-1"], "kl_coef=-1"),  # TRL's name, an alias
        (["--set", "loss_typ=dapo"], "did you mean 'loss_type'"),
        (["--task", "chess"], "not a built-in task"),
        (["--model", "/nonexistent/dir"], "config.json"),
        (["--prompts", "p.jsonl"], "needs at least one --reward"),
        (["--prompts", "p.jsonl", "--reward", "math:sqrt"], "does not exist"),
        (["--reward", "nomodule_xyz:fn"], "cannot import"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["grpo", "--run-dir", str(tmp_path / "run"), *argv, *FAST])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_builtin_task_run_writes_the_run_directory_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "grpo",
        "--run-dir",
        str(run),
        "--max-steps",
        "3",
        "--set",
        "warm_start.steps=5",
        "--set",
        "eval_every=2",
    ]
    assert main(args + FAST) == 0
    summary = last_json(capsys)
    for key in ("accuracy_before", "accuracy_after", "run_dir", "warm_start_accuracy_after"):
        assert key in summary
    assert 0.0 <= summary["accuracy_after"] <= 1.0 and summary["steps"] == 3
    assert {"config.yaml", "metrics.csv", "samples.md", "plots", "checkpoints"} <= {
        p.name for p in run.iterdir()
    }
    assert {p.name for p in (run / "plots").iterdir()} == {
        "reward.png",
        "accuracy.png",
        "kl.png",
        "completion_length.png",
    }
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in (
        "reward",
        "reward_std",
        "rewards/exact_match/mean",
        "frac_reward_zero_std",
        "kl",
        "entropy",
        "train/clip_fraction",
        "train/clipped_fraction",
        "train/clipped_fraction_low",
        "train/clipped_fraction_high",
        "completions/mean_length",
        "completions/clipped_ratio",
        "num_tokens",
        "step_time",
    ):
        assert name in header, name
    assert main(["grpo", "--resume", str(run), "--max-steps", "5", "--no-progress"]) == 0
    resumed = last_json(capsys)
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 5
    assert resumed["accuracy_before"] == summary["accuracy_before"]


def test_own_model_prompts_and_reward(tmp_path, capsys):
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=32, n_head=2), tok, seed=0)
    save_pretrained(model, tok, tmp_path / "my-model")
    (tmp_path / "prompts.jsonl").write_text(
        "\n".join(json.dumps({"prompt": p, "target": "7"}) for p in "abcd")
    )
    (tmp_path / "my_reward.py").write_text(
        "def sevens(prompts, completions, target, **kw):\n"
        "    return [c.count(t) / max(len(c), 1) for c, t in zip(completions, target)]\n"
    )
    argv = [
        "grpo",
        "--model",
        str(tmp_path / "my-model"),
        "--prompts",
        str(tmp_path / "prompts.jsonl"),
        "--reward",
        f"{tmp_path / 'my_reward.py'}:sevens",
        "--run-dir",
        str(tmp_path / "run"),
        "--max-steps",
        "2",
        "--set",
        "learning_rate=1e-3",
        "--set",
        "generation.max_completion_length=4",
        "--set",  # the file has 4 rows: more per step is refused (issue 34)
        "prompts_per_step=4",
    ]
    assert main(argv + FAST) == 0
    summary = last_json(capsys)
    assert summary["steps"] == 2 and summary["model"] == str(tmp_path / "my-model")
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "rewards/sevens/mean" in header
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(summary["checkpoint"] + "/model", local_files_only=True)
