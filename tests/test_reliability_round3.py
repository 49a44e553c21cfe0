"""Issue 34, the run-directory / command-line / run-loop cases: user code that exits, one resume rule
on both sides, run directories as untrusted input (imports, symbolic links), hangs and second
signals, degraded messages made clear, TRL callbacks that fire. Each test failed on the code before
issue 34's round three and passes now; docs/reliability.md lists them."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppokit.cli import main
from ppokit.errors import ConfigError, EnvStepError, RunDirError, StepTimeoutError, UserCodeError
from ppokit.llm.reward_checks import RewardFunctionError
from ppokit.rl.ppo import PPO
from ppokit.train.checkpoint import latest_checkpoint, list_checkpoints
from ppokit.train.rundir import RunDirLock

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
SMALL = dict(num_envs=2, n_steps=16, batch_size=16, n_epochs=1, tensorboard=False)
FAST = ["--num-envs", "2", "--no-progress", "--total-timesteps", "128"]
FAST += [
    a for kv in ("n_steps=16", "batch_size=16", "n_epochs=1", "tensorboard=false") for a in ("--set", kv)
]
LM = [
    "--no-progress",
    *("--set", "torch_threads=1", "--set", "tensorboard=false", "--set", "eval_prompts=8"),
    *("--set", "warm_start.steps=0", "--set", "eval_every=1", "--set", "prompts_per_step=4"),
    *("--set", "tiny_model.n_layer=1", "--set", "tiny_model.n_embd=16", "--set", "tiny_model.n_head=2"),
    *("--set", "num_generations=2"),
]


TINY_GRPO = {"prompts_per_step": 2, "num_generations": 2, "tensorboard": False}


def _tiny_lm():
    """A one-layer GPT-2 and character tokenizer built in code (the LM cases' model)."""
    from ppokit.llm.config import TinyModelConfig
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    return build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0), tok


def ppokit(*argv: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    """``ppokit ARGV`` in a child process with tests/ importable (round3_envs registers its ids)."""
    code = "import sys, round3_envs; from ppokit.cli import main; sys.exit(main(sys.argv[1:]))"
    environ = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=timeout,
    )


def exit_code_and_err(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    """A finished 2-step GRPO run (copied by each test that changes it)."""
    run = tmp_path_factory.mktemp("grpo") / "run"
    assert main(["grpo", "--run-dir", str(run), "--max-steps", "2", *LM]) == 0
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    (out / ".lock").unlink(missing_ok=True)
    return out


# -- 1. user code that exits ------------------------------------------------------------------------
def test_sys_exit_in_a_callback_is_a_failure_with_a_checkpoint(tmp_path):
    model = PPO(
        "CartPole-v1", run_dir=tmp_path / "run", checkpoint_every=0, checkpoint_every_seconds=0, **SMALL
    )

    def callback(ppo, metrics):
        if ppo.num_updates == 2:
            sys.exit(0)  # exit status 0: a scheduler would have seen success

    with pytest.raises(UserCodeError, match=r"SystemExit\(0\).*checkpoint of the last completed step") as e:
        model.learn(320, callback=callback)
    model.close()
    newest = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert newest is not None and str(newest) in str(e.value) and newest.name == "step_000000000064"


def test_keyboard_interrupt_from_user_code_keeps_a_checkpoint(tmp_path):
    model = PPO(
        "CartPole-v1", run_dir=tmp_path / "run", checkpoint_every=0, checkpoint_every_seconds=0, **SMALL
    )

    def callback(ppo, metrics):
        if ppo.num_updates == 2:
            raise KeyboardInterrupt  # as Ctrl-C would: the run stops, exit 130, with a checkpoint

    with pytest.raises(KeyboardInterrupt) as e:
        model.learn(320, callback=callback)
    model.close()
    newest = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert newest is not None and newest.name == "step_000000000064"
    assert f"checkpoint of the last completed step: {newest}" == e.value.checkpoint_note


def test_sys_exit_in_user_code_outside_the_loop_exits_non_zero_with_a_message(tmp_path):
    # a gym_packages module that calls sys.exit(0) on import: the command line's boundary
    (tmp_path / "r3_exits.py").write_text("import sys\nsys.exit(0)\n")
    env = {"PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}{os.pathsep}{tmp_path}"}
    r = ppokit("train", "--gym-packages", "r3_exits", "--run-dir", str(tmp_path / "run"), *FAST, env=env)
    assert r.returncode == 2, r.stderr
    assert "sys.exit(0)" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # an environment's close() that calls sys.exit(0) after training: reported after plots and eval
    run = tmp_path / "run2"
    r = ppokit("train", "--env", "PPOKitR3/CloseExits-v0", "--run-dir", str(run), *FAST)
    assert r.returncode == 2 and "raised SystemExit" in r.stderr, r.stderr
    assert (run / "eval.json").is_file() and (run / "plots" / "returns.png").is_file()


def test_an_env_error_keeps_a_checkpoint_of_the_last_completed_update(tmp_path):
    sys.path.insert(0, str(TESTS))
    try:
        import faulty_envs  # noqa: F401  (registers PPOKitTest/RaiseAt40-v0)
    finally:
        sys.path.remove(str(TESTS))
    run = tmp_path / "run"
    model = PPO(
        "PPOKitTest/RaiseAt40-v0", run_dir=run, checkpoint_every=0, checkpoint_every_seconds=0, **SMALL
    )
    with pytest.raises(EnvStepError, match="injected failure.*checkpoint of the last completed step") as e:
        model.learn(512)
    model.close()
    newest = latest_checkpoint(run / "checkpoints")  # env 1 fails at its 40th step: in update 3
    assert newest is not None and newest.name == "step_000000000064" and str(newest) in str(e.value)


# -- 2. one rule for resume, atomic rewrites -----------------------------------------------------------
def test_an_lm_resume_refuses_an_edited_config_naming_the_key_and_allows_set(grpo_run, tmp_path, capsys):
    run = copy_run(grpo_run, tmp_path)
    config = run / "config.yaml"
    original = config.read_text()
    lr = next(line for line in original.splitlines() if line.startswith("learning_rate:"))
    config.write_text(original.replace(lr, "learning_rate: 0.5"))
    code, err = exit_code_and_err(capsys, "resume", str(run), "--max-steps", "3", "--no-progress")
    assert code == 2 and "learning_rate" in err and "0.5" in err and "--set" in err
    config.write_text(original)  # the edit undone; the same change given explicitly is applied and said
    assert main(["resume", str(run), "--max-steps", "3", "--no-progress", "--set", "learning_rate=0.5"]) == 0
    err = capsys.readouterr().err
    assert "--set changes the run's config: learning_rate" in err and "-> 0.5" in err
    # ppokit's own rewrite (with the --set value) is no edit: the next resume goes on
    assert main(["resume", str(run), "--max-steps", "4", "--no-progress"]) == 0


def test_an_lm_resume_replaces_config_yaml_atomically(grpo_run, tmp_path):
    run = copy_run(grpo_run, tmp_path)
    before = (run / "config.yaml").stat().st_ino
    assert main(["resume", str(run), "--max-steps", "3", "--no-progress"]) == 0
    after = run / "config.yaml"
    # a new file renamed into place (a kill mid-write leaves the old one), not truncated in place
    assert after.stat().st_ino != before and "max_steps: 3" in after.read_text()


def test_a_config_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    from ppokit.rl.config import PPOConfig

    target = tmp_path / "config.yaml"
    PPOConfig().save_yaml(target)
    before = target.read_text()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # the data cannot be made durable: nothing replaced
    with pytest.raises(OSError):
        PPOConfig(learning_rate=0.5).save_yaml(target)
    assert target.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


# -- 3. run directories as untrusted input --------------------------------------------------------------
MARKER_MODULE = """
import os, pathlib
pathlib.Path(os.environ["R3_MARKER"]).write_text("imported")
import round3_envs  # noqa: F401
"""


def _run_naming_a_module(tmp_path, monkeypatch) -> Path:
    """A finished PPO run whose gym_packages names the module `r3_shipped` (importable while it
    trained, from tmp_path/mods), with a copy of that module inside the run directory."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "r3_shipped.py").write_text(MARKER_MODULE)
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("R3_MARKER", str(tmp_path / "train-marker"))
    run = tmp_path / "run"
    model = PPO("PPOKitR3/Plain-v0", gym_packages=["r3_shipped"], run_dir=run, **SMALL)
    model.learn(64)
    model.save(run / "model")
    model.close()
    shutil.copy(mods / "r3_shipped.py", run / "r3_shipped.py")
    return run


def test_eval_inside_a_run_directory_does_not_import_what_it_ships(tmp_path, monkeypatch):
    run = _run_naming_a_module(tmp_path, monkeypatch)
    marker = tmp_path / "eval-marker"
    environ = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "R3_MARKER": str(marker)}
    argv = [sys.executable, "-m", "ppokit", "eval", ".", "--episodes", "1"]
    r = subprocess.run(argv, cwd=run, capture_output=True, text=True, env=environ, timeout=300)
    assert r.returncode == 2 and not marker.exists(), r.stderr
    assert "r3_shipped" in r.stderr and "--trust-run-dir" in r.stderr and "inside it" in r.stderr
    r = subprocess.run([*argv, "--trust-run-dir"], cwd=run, capture_output=True, text=True, env=environ)
    assert r.returncode == 0 and marker.exists() and "importing r3_shipped" in r.stderr, r.stderr


def test_a_file_in_the_run_directory_does_not_shadow_the_installed_module(tmp_path, monkeypatch):
    run = _run_naming_a_module(tmp_path, monkeypatch)
    benign = tmp_path / "installed"
    benign.mkdir()
    (benign / "r3_shipped.py").write_text("import round3_envs  # noqa: F401\n")
    marker = tmp_path / "eval-marker"
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(benign), str(TESTS)])}
    environ["R3_MARKER"] = str(marker)
    argv = [sys.executable, "-m", "ppokit", "eval", ".", "--episodes", "1"]
    r = subprocess.run(argv, cwd=run, capture_output=True, text=True, env=environ, timeout=300)
    assert r.returncode == 0 and not marker.exists(), r.stderr  # the installed r3_shipped, not the run's


def test_a_run_directory_of_another_user_needs_an_opt_in(tmp_path, monkeypatch, capsys):
    if os.getuid() != 0:
        pytest.skip("chown to another uid needs root")
    run = _run_naming_a_module(tmp_path, monkeypatch)
    (run / "r3_shipped.py").unlink()
    for path in [run, *run.rglob("*")]:
        os.chown(path, 12345, 12345, follow_symlinks=False)
    # r3_shipped is importable from nowhere now (the run's parent is on the path, the module is not)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path / "mods")])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "r3_shipped", raising=False)
    code, err = exit_code_and_err(capsys, "eval", str(run), "--episodes", "1")
    assert code == 2 and "owned by uid 12345" in err and "r3_shipped" in err and "--trust-run-dir" in err
    # the same module importable from the user's own environment: no opt-in needed
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    assert main(["eval", str(run), "--episodes", "1"]) == 0


def test_a_missing_module_hint_never_names_a_package_from_the_run(tmp_path, capsys):
    code, err = exit_code_and_err(capsys, "train", "--env", "r3_evil_pkg_name:Foo-v0", *FAST)
    assert code == 2 and "r3_evil_pkg_name" in err and "pip install" not in err


# -- 4. symbolic links in a run directory --------------------------------------------------------------
def test_eval_json_and_metrics_are_not_written_through_planted_links(tmp_path, capsys):
    run = tmp_path / "run"
    model = PPO("CartPole-v1", run_dir=run, **SMALL)
    model.learn(64)
    model.save(run / "model")
    model.close()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / "eval.json").symlink_to(victim)
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    assert victim.read_text() == "precious" and not (run / "eval.json").is_symlink()
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to(victim)
    with pytest.raises(RunDirError, match="symbolic link"):
        model = PPO.resume(run)
        model.learn(64, reset_num_timesteps=False)
    assert victim.read_text() == "precious"


def test_a_planted_checkpoints_link_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").symlink_to(outside)
    with pytest.raises(RunDirError, match="symbolic link"):
        PPO("CartPole-v1", run_dir=run, **SMALL)
    assert list(outside.iterdir()) == []


# -- 5. hangs and second signals -------------------------------------------------------------------------
def test_a_stuck_step_is_reported_and_a_second_sigterm_exits_143_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    code = "import sys, round3_envs; from ppokit.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["train", "--env", "PPOKitR3/Sleepy-v0", "--run-dir", str(run), *FAST, "--no-eval"]
    argv += ["--set", "checkpoint_every=0", "--set", "checkpoint_every_seconds=0"]
    environ = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "PPOKIT_STALL_SECONDS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    err = ""
    deadline = time.time() + 120
    while "no step finished" not in err and time.time() < deadline:  # env 0 sleeps at its 40th step
        line = proc.stderr.readline()
        if not line:
            break
        err += line
    assert "no step finished for" in err and "stuck in env.step" in err, err
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=120)
    assert proc.returncode == 143, err + rest
    assert "stopped at once" in out and "checkpoint of the last completed step" in out
    newest = latest_checkpoint(run / "checkpoints")
    assert newest is not None and newest.name == "step_000000000064"  # the two updates before the hang


def test_step_timeout_stops_a_hanging_env_step_with_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    import round3_envs  # noqa: F401  (registers PPOKitR3/Sleepy-v0: env 0 sleeps 120 s at its 40th step)

    run = tmp_path / "run"
    model = PPO("PPOKitR3/Sleepy-v0", run_dir=run, step_timeout=2, checkpoint_every_seconds=0, **SMALL)
    started = time.monotonic()
    with pytest.raises(StepTimeoutError, match=r"step_timeout=2 s.*checkpoint of the last completed step"):
        model.learn(512)
    model.close()
    assert time.monotonic() - started < 60
    newest = latest_checkpoint(run / "checkpoints")
    assert newest is not None and newest.name == "step_000000000064"
    with pytest.raises(ConfigError, match="step_timeout"):
        PPO("CartPole-v1", step_timeout=-1, **SMALL)


def test_step_timeout_stops_a_hanging_reward_function(tmp_path):
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig

    calls = []

    def hangs(prompts, completions, **_):
        calls.append(1)
        if len(calls) == 2:
            time.sleep(120)
        return [1.0] * len(completions)

    model, tok = _tiny_lm()
    cfg = GRPOConfig.from_dict(
        {
            **TINY_GRPO,
            "max_steps": 3,
            "step_timeout": 2,
            "generation": {"max_completion_length": 4},
        }
    )
    trainer = GRPOTrainer(
        model, tok, hangs, ["1+1=", "2+2=", "3+3=", "4+4="], cfg, run_dir=tmp_path / "run", progress=False
    )
    started = time.monotonic()
    with pytest.raises(RewardFunctionError, match="hangs.*step_timeout=2"):
        trainer.train()
    assert time.monotonic() - started < 60
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_000000000001"


# -- 6. degraded messages made clear ----------------------------------------------------------------------
def test_resume_says_which_damaged_checkpoint_it_skips_and_why(tmp_path, capsys):
    run = tmp_path / "run"
    model = PPO("CartPole-v1", run_dir=run, checkpoint_every=32, **SMALL)
    model.learn(96)
    model.close()
    newest = list_checkpoints(run / "checkpoints")[-1]
    with open(newest / "tensors.safetensors", "r+b") as f:
        f.truncate(100)
    assert main(["resume", str(run), "--total-timesteps", "96", "--no-progress", "--no-eval"]) == 0
    err = capsys.readouterr().err
    assert f"skipping {newest}: tensors.safetensors has 100 bytes" in err


def test_a_full_disk_at_start_names_the_path_and_leaves_no_lock(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError) as e:
        RunDirLock(tmp_path / "run")
    assert e.value.errno == errno.ENOSPC and str(tmp_path / "run" / ".lock") in str(e.value)
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_partial_metrics_row_is_dropped_on_resume(tmp_path):
    run = tmp_path / "run"
    model = PPO("CartPole-v1", run_dir=run, **SMALL)
    model.learn(64)
    model.close()
    with open(run / "metrics.csv", "a") as f:
        f.write("1,2,3")  # a row cut by a full disk: no newline
    model = PPO.resume(run)
    model.learn(96, reset_num_timesteps=False)
    model.close()
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len({len(r) for r in rows}) == 1 and len(rows) == 6  # header + 2 + 3 updates, one width


def test_checkpoint_files_share_one_mode(tmp_path):
    run = tmp_path / "run"
    model = PPO("CartPole-v1", run_dir=run, **SMALL)
    model.learn(32)
    model.close()
    ckpt = latest_checkpoint(run / "checkpoints")
    modes = {p.name: p.stat().st_mode & 0o777 for p in ckpt.iterdir()}
    assert modes["tensors.safetensors"] == modes["meta.json"], modes


def test_eval_and_plot_of_a_grpo_run(grpo_run, capsys):
    code, err = exit_code_and_err(capsys, "eval", str(grpo_run))
    assert code == 2 and "is a GRPO run" in err and "kind=None" not in err
    assert main(["plot", str(grpo_run)]) == 0
    assert "reward" in capsys.readouterr().out


def test_an_env_whose_close_raises_still_gets_plots_and_eval(tmp_path):
    run = tmp_path / "run"
    r = ppokit("train", "--env", "PPOKitR3/CloseRaises-v0", "--run-dir", str(run), *FAST)
    assert r.returncode == 2 and "close failed on purpose" in r.stderr, r.stderr
    assert (run / "plots" / "returns.png").is_file() and (run / "eval.json").is_file()


def test_a_corrupt_sources_json_is_one_line(grpo_run, tmp_path, capsys):
    run = copy_run(grpo_run, tmp_path)
    (run / "sources.json").write_text('{"prompts": ')
    code, err = exit_code_and_err(capsys, "resume", str(run), "--max-steps", "3", "--no-progress")
    assert code == 2 and "sources.json" in err and len(err.strip().splitlines()) == 1


def test_a_run_without_checkpoint_and_bad_yaml_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("env_id: [CartPole\n  : :\n")
    code, err = exit_code_and_err(capsys, "resume", str(run), "--no-progress")
    assert code == 2 and "not valid YAML" in err and len(err.strip().splitlines()) == 1


# -- 7. TRL callbacks ---------------------------------------------------------------------------------
def test_trl_on_save_and_on_evaluate_fire_and_log_history_fills(tmp_path):
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig

    seen = {"save": 0, "evaluate": []}

    class Recorder:  # a transformers TrainerCallback in all but its base class
        def on_save(self, args, state, control, **kwargs):
            seen["save"] += 1

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            seen["evaluate"].append(metrics)

    model, tok = _tiny_lm()
    cfg = GRPOConfig.from_dict(
        {
            **TINY_GRPO,
            "max_steps": 2,
            "checkpoint_every": 1,
            "eval_every": 1,
            "generation": {"max_completion_length": 4},
        }
    )
    prompts = ["1+1=", "2+2=", "3+3=", "4+4="]
    trainer = GRPOTrainer(
        model,
        tok,
        lambda prompts, completions, **_: [float(len(c)) for c in completions],
        prompts,
        cfg,
        eval_prompts=prompts,
        run_dir=tmp_path / "run",
        progress=False,
        callbacks=[Recorder()],
    )
    trainer.train()
    assert seen["save"] == 2  # a checkpoint per step; the final one is step 2's
    assert len(seen["evaluate"]) == 2 and all(any(k.startswith("eval/") for k in m) for m in seen["evaluate"])
    history = trainer.state.log_history
    assert [row["step"] for row in history] == [1, 2] and all("epoch" in row for row in history)
