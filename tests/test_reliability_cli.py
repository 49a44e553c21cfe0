"""The command line's error boundary and run directories (issue 16, groups 2, 5, 6, 7 and 8).

- Every user-fixable failure is ONE line on stderr, exit code 2, no traceback (``--debug`` shows it):
  run-directory I/O errors, argparse errors, non-UTF-8 and multi-line-YAML config files, env faults
  under the default sync vectorization; a fuzz test over random bad flags, values and files (an alias
  bomb and a 10 MB value among them) checks that, in bounded time.
- A failed start leaves nothing at ``--run-dir``; two processes on one run directory: the second gets
  the one-line lock error and nothing is mixed; ``resume`` refuses an edited config, a negative
  budget, and restarts a run killed before its first checkpoint.
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import bad_envs  # noqa: F401  (registers PPOKitBad/<Mode>-v0)
import pytest

from ppokit.cli import main
from ppokit.config import short
from ppokit.errors import ConfigError, EnvStepError, RunDirError
from ppokit.rl.config import PPOConfig
from ppokit.train.rundir import claim

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--no-progress", "--no-eval", "--set", "tensorboard=false", "--set", "n_steps=32"]
SRC_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}


def one_line_error(capsys, *argv: str) -> str:
    """Run ``ppokit argv`` in-process; it must exit 2 with exactly one line on stderr and no
    traceback. Returns that line. (No wall-clock bound: pytest-timeout catches a hang.)"""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert info.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert len(lines[0]) <= 1000, f"{len(lines[0])} characters"
    return lines[0]


def alias_bomb(depth: int) -> str:
    """A YAML file of a few hundred bytes whose value expands to 9**depth strings."""
    lines = ["learning_rate:", '  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for n in "bcdefghij"[: depth - 1]:
        lines.append(f"  - &{n} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = n
    return "\n".join(lines) + "\n"


# -- messages ---------------------------------------------------------------------------------------


@pytest.mark.timeout(60)  # expanding the bomb would hang far longer; no wall-clock assertion
def test_values_in_messages_are_shortened_and_an_alias_bomb_returns_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(7))  # 9**7 = 4.8 million strings when printed in full
    assert path.stat().st_size < 600
    with pytest.raises(ConfigError) as info:
        PPOConfig.load_yaml(path)
    assert len(str(info.value)) < 1000 and "learning_rate=" in str(info.value)
    big = tmp_path / "big.yaml"
    big.write_text("env_id: " + "z" * 10_000_000 + "\n")  # a 10 MB value: refused before parsing
    with pytest.raises(ConfigError, match="is 10,000,009 bytes; a config is a few kB") as info:
        PPOConfig.load_yaml(big)
    assert len(str(info.value)) < 300
    big.write_text("env_id: " + "z" * 500_000 + "\n")
    with pytest.raises(ConfigError, match="500000 characters, at most 4096") as info:
        PPOConfig.load_yaml(big)
    assert len(str(info.value)) < 300
    assert short(list(range(100))).endswith("...]") and len(short("x" * 10**6)) < 100


def test_config_file_problems_are_one_line(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"learning_rate: 0.001\nenv_id: caf\xe9\n")
    assert "is not UTF-8 text" in one_line_error(capsys, "train", "--config", str(bad))
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: [1, 2\nseed: 3\n")  # PyYAML's message spans 5 lines
    assert "is not valid YAML" in one_line_error(capsys, "train", "--config", str(broken))
    assert "is a directory" in one_line_error(capsys, "train", "--config", str(tmp_path))
    long_name = "n" * 5000
    assert "cannot be read" in one_line_error(capsys, "train", "--config", long_name)


def test_argparse_errors_are_one_line_and_shortened(capsys):
    assert "invalid int value" in one_line_error(capsys, "train", "--seed", "x" * 100_000)
    assert "unrecognized arguments" in one_line_error(capsys, "train", "--lerning-rate", "1")
    assert "invalid choice" in one_line_error(capsys, "trian")


# -- run directories -------------------------------------------------------------------------------


def test_run_directory_io_errors_are_one_line(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in one_line_error(capsys, "train", "--run-dir", str(a_file), *FAST)
    assert "is a file" in one_line_error(capsys, "grpo", "--run-dir", str(a_file), "--no-progress")
    ro = unwritable(tmp_path)
    err = one_line_error(capsys, "train", "--run-dir", str(ro / "run"), "--total-timesteps", "64", *FAST)
    assert "not permitted" in err or "Permission denied" in err
    with pytest.raises(PermissionError):  # --debug: the traceback instead
        main(["--debug", "train", "--run-dir", str(ro / "run"), "--total-timesteps", "64", *FAST])


def unwritable(tmp_path: Path) -> Path:
    """A directory this process cannot create anything in (root ignores permissions: /sys then)."""
    if os.geteuid() == 0:
        return Path("/sys/ppokit-test")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
    return ro


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "CartPol-v1"], "did you mean"),
        (["--device", "cuda:x"], "device="),
        (["--env", "PPOKitBad/RaiseMake-v0"], "could not be made"),
        (["--env", "PPOKitBad/EmptyBox-v0"], "is empty"),
    ],
)
def test_a_failed_start_leaves_nothing_at_the_run_dir(args, message, tmp_path, capsys):
    run = tmp_path / "run"
    assert message in one_line_error(capsys, "train", "--run-dir", str(run), "--total-timesteps", "64", *args)
    assert not run.exists()


def test_claim_is_exclusive_and_abandon_undoes_it(tmp_path):
    from ppokit.train.rundir import RunDirLock

    first = claim(tmp_path / "run", "x", "seed: 1\n", "ppokit resume run")
    # while the winner holds it: the lock (decided first, issue 29); after: the exclusive config.yaml
    with pytest.raises(RunDirError, match="in use by another ppokit process"):
        claim(tmp_path / "run", "x", "seed: 2\n", "ppokit resume run")
    first.lock.release()
    with pytest.raises(ConfigError, match="already holds a run; use `ppokit resume run`"):
        claim(tmp_path / "run", "x", "seed: 2\n", "ppokit resume run")
    assert (tmp_path / "run" / "config.yaml").read_text() == "seed: 1\n"
    held = RunDirLock(tmp_path / "busy")  # a process holds the lock (e.g. a resume): no config written
    with pytest.raises(RunDirError, match="in use by another ppokit process"):
        claim(tmp_path / "busy", "x", "seed: 2\n", "hint")
    held.release()
    assert not (tmp_path / "busy" / "config.yaml").exists()
    again = claim(tmp_path / "other", "x", "seed: 3\n", "hint")
    again.abandon()
    assert not (tmp_path / "other").exists()


def test_two_processes_on_one_run_directory(tmp_path):
    """Started together: exactly one trains; the other exits 2 with one line; config.yaml is the
    winner's and metrics.csv has no repeated row."""
    run = tmp_path / "run"
    argv = lambda seed: [
        sys.executable,
        *("-m", "ppokit", "train", "--run-dir", str(run), "--total-timesteps", "512", "--seed", seed),
        *FAST,
    ]
    procs = [subprocess.Popen(argv(s), env=SRC_ENV, stderr=subprocess.PIPE, text=True) for s in ("1", "2")]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], errs
    loser = errs[codes.index(2)]
    lines = [ln for ln in loser.splitlines() if ln.strip()]
    assert len(lines) == 1 and ("already holds a run" in lines[0] or "in use by another" in lines[0]), loser
    winner_seed = ("1", "2")[codes.index(0)]
    assert f"seed: {winner_seed}\n" in (run / "config.yaml").read_text()
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == len(set(rows)) == 512 // (32 * 8)
    # a resume while another process holds the run is refused before it touches the logs
    from ppokit.train.rundir import RunDirLock

    with open(run / "metrics.csv", "a") as f:
        f.write(f"{','.join(['9999999'] * len(rows[0].split(',')))}\n")  # a row the resume would trim
    before = (run / "metrics.csv").read_bytes()
    held = RunDirLock(run)
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "ppokit",
                "resume",
                str(run),
                "--total-timesteps",
                "1024",
                "--no-progress",
            ],
            env=SRC_ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        held.release()
    assert r.returncode == 2 and f"in use by another ppokit process (pid {os.getpid()})" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (run / "metrics.csv").read_bytes() == before


def test_resume_refuses_an_edited_config_and_a_negative_budget_and_restarts_a_run_without_checkpoint(
    tmp_path, capsys
):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--total-timesteps", "256", *FAST]) == 0
    capsys.readouterr()
    err = one_line_error(capsys, "resume", str(run), "--total-timesteps", "-5")
    assert "--total-timesteps=-5 is not allowed" in err
    config = run / "config.yaml"
    original = config.read_text()
    assert "\nlearning_rate: 0.001\n" in original  # the CartPole preset's
    config.write_text(original.replace("\nlearning_rate: 0.001\n", "\nlearning_rate: -1\n"))
    assert "learning_rate=-1" in one_line_error(capsys, "resume", str(run))
    config.write_text(original.replace("\nlearning_rate: 0.001\n", "\nlearning_rate: 0.123\n"))
    assert "learning_rate: 0.001 -> 0.123" in one_line_error(capsys, "resume", str(run))
    # a run killed before its first checkpoint is not a dead end: resume trains it from its config
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text("total_timesteps: 256\nn_steps: 32\ntensorboard: false\n")
    assert main(["resume", str(fresh), "--no-progress", "--no-eval"]) == 0
    assert "training it from the start" in capsys.readouterr().out
    assert (fresh / "model").is_dir()


def test_eval_of_a_run_it_cannot_write_prints_its_result(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--total-timesteps", "256", *FAST]) == 0
    capsys.readouterr()
    (run / "eval.json").mkdir()  # unwritable even for root (a read-only run directory, for a user)
    assert main(["eval", str(run), "--episodes", "2", "--json"]) == 0
    out = capsys.readouterr()
    assert '"mean_return"' in out.out and "eval.json not written" in out.err


# -- environments under the default (sync) vectorization -------------------------------------------


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("WrongShape", "environment 0 at its step 3: returned an observation of shape (7,)"),
        ("RaiseStep", "environment 0 at its step 3: raised RuntimeError: injected failure in step"),
        ("RaiseReset", "environment 0 in reset (after 0 steps): raised ValueError"),
        ("OldApi", "returned 4 values instead of 5 (the old gym API"),
        ("ArrayReward", "returned reward array([1., 1., 1.]) of shape (3,)"),
    ],
)
def test_sync_env_faults_name_the_env_the_step_and_what_was_wrong(mode, message, tmp_path, capsys):
    from ppokit.rl.ppo import PPO

    with pytest.raises(EnvStepError) as info:
        PPO(f"PPOKitBad/{mode}-v0", num_envs=2, n_steps=8, batch_size=16, vectorization="sync").learn(64)
    assert message in str(info.value)
    run = tmp_path / "run"
    err = one_line_error(capsys, "train", "--env", f"PPOKitBad/{mode}-v0", "--run-dir", str(run), *FAST)
    assert message in err


def test_a_missing_optional_dependency_is_one_line_with_the_install_command(tmp_path, capsys):
    run = tmp_path / "run"
    err = one_line_error(capsys, "train", "--env", "PPOKitBad/MissingDep-v0", "--run-dir", str(run), *FAST)
    assert "Box2D is not installed" in err and 'pip install "gymnasium[box2d]"' in err
    assert not run.exists()


# -- fuzz ------------------------------------------------------------------------------------------

# every value here is wrong for every key below (no 0, null or empty string: valid for some keys)
BAD_VALUES = ["-5", "nan", "inf", "-inf", "1e999", "[1, 2", "x" * 50_000, "[]", "🙂", "{a: 1}"]
KEYS = ["learning_rate", "n_steps", "batch_size", "clip_range", "seed", "network.hidden_sizes", "gamma",
        "num_envs", "n_epochs", "device", "vectorization", "env_kwargs", "target_kl", "nonfinite_stop_after",
        "learnin_rate", "network.activaton", "checkpoint_every_seconds"]  # fmt: skip
FLAGS = ["--total-timesteps", "--seed", "--num-envs", "--device", "--env"]


def _random_bad_argv(rng: random.Random, tmp: Path, i: int) -> list[str]:
    kind = rng.choice(["set", "flag", "file", "file", "alias"])
    base = ["train", "--run-dir", str(tmp / f"run{i}"), "--total-timesteps", "64", *FAST]
    if kind == "set":
        return [*base, "--set", f"{rng.choice(KEYS)}={rng.choice(BAD_VALUES)}"]
    if kind == "flag":
        return [*base, rng.choice(FLAGS), rng.choice(BAD_VALUES[:9] + ["-1", "CartPol-v1", "cuda:9"])]
    path = tmp / f"c{i}.yaml"
    if kind == "alias":
        path.write_text(alias_bomb(rng.choice([6, 7, 8])))
    else:
        key = rng.choice([k for k in KEYS if k != "n_steps"]).split(".")[0]  # FAST's --set n_steps wins
        value = rng.choice(BAD_VALUES + ["z" * 10_000_000, "\t- 1", "&a [*a]"])
        raw = rng.choice([f"{key}: {value}\n".encode(), b"seed: \xff\xfe\n", b"- a\n- b\n", b"a: [\n"])
        path.write_bytes(raw)
    return [*base, "--config", str(path)]


def test_fuzz_random_bad_cli_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """40 random bad flags, values and files: each exits 2 with one line, no traceback, and leaves no
    run directory (everything is checked before an environment is built)."""
    monkeypatch.chdir(tmp_path)
    rng = random.Random(16)
    seen = set()
    for i in range(40):
        argv = _random_bad_argv(rng, tmp_path, i)
        line = one_line_error(capsys, *argv)
        seen.add(line.split(":")[2].split("=")[0].strip()[:20])
        assert not (tmp_path / f"run{i}").exists(), argv[-2:]  # and left no run directory behind
    assert len(seen) >= 8, seen  # the cases reached many different checks
