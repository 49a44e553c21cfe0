"""Issue 16's adversarial probe (it was benchmarks/reliability_probe.py): bad inputs and faults through
the real ``ppokit`` command (one subprocess each), one parametrized test per case, marked ``slow``.

    pytest -m slow tests/test_reliability_probe.py                   # every case (~20 min on 2 cores)
    pytest -m slow tests/test_reliability_probe.py -k "flags or kills"

Each case's verdict is one of the issue's categories, and the test asserts it is ``ok``: otherwise
``traceback`` (a Python traceback on a user error); ``silently wrong`` (exit 0 where the input cannot
work); ``hang`` (past the case's time limit); ``degraded`` (exit 2 but not one line, or a line over
1000 characters); ``data lost`` (no usable checkpoint after a kill, or a resume that fails);
``corrupted`` (two writers mixed in one run directory); ``other`` (any other exit code, or an error
line without the text the case expects). A set-up that fails is the test's error, with its traceback.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# a launcher that registers the test environments (tests/bad_envs.py, tests/faulty_envs.py) first
LAUNCH = (
    "import sys; sys.path.insert(0, {tests!r}); import bad_envs, faulty_envs; "
    "from ppokit.cli import main; sys.exit(main())"
)
PPO_FAST = ["--no-progress", "--no-eval", "--set", "tensorboard=false", "--set", "n_steps=32"]
LM_FAST = [
    "--no-progress",
    *("--set", "torch_threads=1", "--set", "tensorboard=false", "--set", "eval_prompts=4"),
    *("--set", "warm_start.steps=0", "--set", "prompts_per_step=2", "--set", "max_completion_length=4"),
    *("--set", "tiny_model.n_layer=1", "--set", "tiny_model.n_embd=16", "--set", "tiny_model.n_head=2"),
]
GRPO_FAST = [*LM_FAST, "--set", "num_generations=2"]
RLHF_FAST = [*LM_FAST, "--set", "num_mini_batches=1"]

REWARDS = """
import math
def raises(prompts, completions, **kw):
    if len(completions) > 1 or "1" in str(prompts[0]):
        raise ZeroDivisionError("division by zero in my reward")
    return [1.0] * len(completions)
def nones(prompts, completions, **kw): return [None] * len(completions)
def nans(prompts, completions, **kw): return [math.nan] * len(completions)
def infs(prompts, completions, **kw): return [math.inf] + [0.0] * (len(completions) - 1)
def strings(prompts, completions, **kw): return ["1.0"] * len(completions)
def short(prompts, completions, **kw): return [1.0]
def scalar(prompts, completions, **kw): return 1.0
def nested(prompts, completions, **kw): return [[1.0, 2.0]] * len(completions)
def length(prompts, completions, **kw): return [float(len(c)) for c in completions]
"""


@dataclass
class Case:
    """One probe: ``argv`` of ``ppokit`` (``{tmp}`` is the case's folder), ``expect`` ``"error"`` (exit
    2, one line) or ``"ok"`` (exit 0), an optional ``setup(tmp)`` and ``check(tmp, result) -> verdict``."""

    area: str
    name: str
    argv: list[str]
    expect: str = "error"
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, dict], str | None] | None = None
    timeout: float = 240.0
    run: Callable[[Path, Case], dict] | None = None  # a custom driver (kills, two processes)
    match: str | None = None  # a text the error line must hold (else the verdict is "other")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(TESTS), e.get("PYTHONPATH", "")])
    return e


def cmd(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", LAUNCH.format(tests=str(TESTS)), *argv]


def run_cli(argv: list[str], tmp: Path, timeout: float) -> dict[str, Any]:
    start = time.monotonic()
    try:
        p = subprocess.run(
            cmd(argv), cwd=tmp, env=env(), capture_output=True, text=True, timeout=timeout, errors="replace"
        )
        return {"rc": p.returncode, "out": p.stdout, "err": p.stderr, "s": time.monotonic() - start}
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {"rc": None, "out": "", "err": err, "s": time.monotonic() - start}


def verdict(case: Case, r: dict[str, Any]) -> str:
    """The issue's category for one finished command."""
    if r["rc"] is None:
        return "hang"
    err = r["err"]
    # an async worker's traceback of the USER's environment code, printed under the one-line error on
    # purpose (docs/reliability.md; tests/test_reliability_faults.py requires it), is not ppokit's
    if r["rc"] == 2 and "worker traceback of environment" in err:
        err = err.split("worker traceback of environment")[0]
        r = {**r, "err": err}
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if case.expect == "ok":
        return "ok" if r["rc"] == 0 else "other"
    if r["rc"] == 0:
        return "silently wrong"
    if r["rc"] != 2:
        return "other"
    # a library's warning (a line naming the warning, then its indented source line) is not ppokit's
    lines = [
        ln for ln in r["err"].splitlines() if ln.strip() and not ln[0].isspace() and "Warning:" not in ln
    ]
    if len(lines) != 1 or len(lines[0]) > 1000 or "error:" not in lines[0]:
        return "degraded"
    if case.match and case.match not in lines[0]:
        return "other"
    return "ok"


# ---------------------------------------------------------------------------------------- set-ups
def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def alias_bomb(depth: int = 7) -> str:
    lines = ["learning_rate:", '  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for n in "bcdefghij"[: depth - 1]:
        lines.append(f"  - &{n} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = n
    return "\n".join(lines) + "\n"


def readonly_dir(tmp: Path) -> None:
    """``tmp/ro``: a folder this process cannot write (for root, which ignores permissions, a link to
    /sys, where even root may not create anything)."""
    if os.geteuid() == 0:
        os.symlink("/sys", tmp / "ro")
        return
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", stat.S_IRUSR | stat.S_IXUSR)


def trained_run(tmp: Path, extra: list[str] | None = None) -> Path:
    """A small finished PPO run at ``tmp/run`` (made once per case that needs it)."""
    argv = ["train", "--run-dir", "run", "--total-timesteps", "256", *PPO_FAST, *(extra or [])]
    r = run_cli(argv, tmp, 300)
    if r["rc"] != 0:
        raise RuntimeError(f"set-up run failed: {r['err'][-500:]}")
    return tmp / "run"


def edit_config(key: str, value: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        run = trained_run(tmp)
        text = (run / "config.yaml").read_text().splitlines()
        (run / "config.yaml").write_text(
            "\n".join(f"{key}: {value}" if ln.startswith(f"{key}:") else ln for ln in text) + "\n"
        )

    return setup


def make_model_dir(tmp: Path, tokenizer: str) -> None:
    """A tiny saved causal LM at tmp/model: ``tokenizer`` = "none" (no tokenizer files) or "nopad"
    (a tokenizer with neither pad nor EOS)."""
    code = f"""
import os, sys
from ppokit.llm.models import build_char_tokenizer, build_tiny_model
from ppokit.llm.config import TinyModelConfig
tok = build_char_tokenizer()
model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, seed=0)
model.save_pretrained("model")
if {tokenizer!r} == "nopad":
    from transformers import PreTrainedTokenizerFast
    bare = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer)
    bare.save_pretrained("model")
"""
    subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env(), check=True, capture_output=True)


def prompts(rows: list[Any]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / "p.jsonl").write_text("\n".join(json.dumps({"prompt": r}) for r in rows) + "\n")
        (tmp / "rw.py").write_text(REWARDS)

    return setup


def with_rewards(tmp: Path) -> None:
    (tmp / "rw.py").write_text(REWARDS)


# ---------------------------------------------------------------------------------------- drivers
def newest_checkpoint(run: Path) -> Path | None:
    sys.path.insert(0, str(ROOT / "src"))
    from ppokit.train.checkpoint import latest_checkpoint

    return latest_checkpoint(run / "checkpoints")


def kill_and_resume(verb: list[str], kill_window: tuple[float, float], sig: int, evaluate: bool) -> Callable:
    """Start ``verb`` at tmp/run, send ``sig`` at a random moment after its first checkpoint appeared
    (within ``kill_window`` seconds of it), then: the newest checkpoint must exist and be complete,
    ``eval`` must print a result (PPO), and ``resume`` must finish (exit 0)."""

    def drive(tmp: Path, case: Case) -> dict[str, Any]:
        p = subprocess.Popen(cmd(verb), cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + case.timeout
        while newest_checkpoint(tmp / "run") is None and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(random.uniform(*kill_window))
        finished = p.poll() is not None
        if not finished:
            p.send_signal(sig)
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            return {"verdict": "hang", "detail": "did not stop after the signal"}
        err = err.decode(errors="replace")
        if "Traceback (most recent call last)" in err:
            return {"verdict": "traceback", "detail": err[-300:]}
        if sig == signal.SIGTERM and not finished and p.returncode != 143:
            return {"verdict": "other", "detail": f"exit {p.returncode} after SIGTERM"}
        if newest_checkpoint(tmp / "run") is None:
            return {"verdict": "data lost", "detail": "no complete checkpoint after the signal"}
        if evaluate:
            r = run_cli(["eval", "run", "--episodes", "2", "--json"], tmp, 200)
            if r["rc"] != 0:
                return {"verdict": "data lost", "detail": f"eval after kill: {r['err'][-300:]}"}
        more = ["--total-timesteps", "4096"] if evaluate else ["--max-steps", "8"]
        r = run_cli(["resume", "run", *more, "--no-progress"], tmp, case.timeout)
        if r["rc"] != 0:
            return {"verdict": "data lost", "detail": f"resume after kill: {r['err'][-300:]}"}
        return {"verdict": "ok", "detail": f"signal {sig} {'after the end' if finished else 'sent'}"}

    return drive


def two_writers(first: list[str], second: list[str], setup_run: bool) -> Callable:
    """Start two commands on one run directory together: exactly one may write it; the other must exit
    2 with one line; the run's config.yaml must be the writer's, and no metrics row may repeat."""

    def drive(tmp: Path, case: Case) -> dict[str, Any]:
        if setup_run:
            trained_run(tmp)
        procs = [
            subprocess.Popen(cmd(a), cwd=tmp, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for a in (first, second)
        ]
        outs = [p.communicate(timeout=case.timeout) for p in procs]
        codes = sorted(p.returncode for p in procs)
        errs = [o[1].decode(errors="replace") for o in outs]
        if any("Traceback (most recent call last)" in e for e in errs):
            return {"verdict": "traceback", "detail": " | ".join(e[-200:] for e in errs)}
        if codes != [0, 2]:
            return {"verdict": "corrupted", "detail": f"exit codes {codes}: both wrote the run"}
        import csv

        with open(tmp / "run" / "metrics.csv", newline="") as f:
            steps = [r["time/total_timesteps"] for r in csv.DictReader(f)]
        if len(steps) != len(set(steps)):
            return {"verdict": "corrupted", "detail": "repeated metrics rows"}
        winner = [a for a, p in zip((first, second), procs) if p.returncode == 0][0]
        seed = winner[winner.index("--seed") + 1] if "--seed" in winner else None
        if seed is not None and f"seed: {seed}\n" not in (tmp / "run" / "config.yaml").read_text():
            return {"verdict": "corrupted", "detail": "config.yaml is the loser's"}
        return {"verdict": "ok", "detail": "one writer, one error line"}

    return drive


# ---------------------------------------------------------------------------------------- the cases
def cases() -> list[Case]:
    c: list[Case] = []
    T = lambda *a: ["train", "--run-dir", "run", "--total-timesteps", "64", *PPO_FAST, *a]  # noqa: E731
    # --- flags and values
    for name, args, match in [
        ("negative total", ["--total-timesteps", "-5"], "total_timesteps=-5"),
        ("total not a number", ["--total-timesteps", "lots"], "invalid int value"),
        ("negative seed", ["--seed", "-1"], "seed=-1"),
        ("zero envs", ["--num-envs", "0"], "num_envs=0"),
        ("cuda on a CPU machine", ["--device", "cuda"], "CUDA is not available"),
        ("unknown device", ["--device", "tpu"], "device='tpu'"),
        ("unknown env", ["--env", "CartPol-v1"], "did you mean"),
        ("empty env id", ["--env", ""], "empty value"),
        ("negative learning rate", ["--set", "learning_rate=-1"], "learning_rate=-1"),
        ("unknown key", ["--set", "learnin_rate=1e-3"], "did you mean 'learning_rate'"),
        ("NaN value", ["--set", "learning_rate=nan"], "finite"),
        ("zero width", ["--set", "network.hidden_sizes=[0]"], "hidden_sizes"),
        ("batch above rollout", ["--set", "batch_size=999999"], "batch_size=999999"),
        ("override without =", ["--set", "learning_rate"], "key=value"),
        ("override into a value", ["--set", "learning_rate.x=1"], "not a section"),
        ("100 kB value", ["--set", "env_id=" + "x" * 100_000], "100000 characters"),
        ("100 kB flag", ["--env", "y" * 100_000], "env_id="),
        ("unknown flag", ["--lerning-rate", "1"], "unrecognized arguments"),
        ("unknown activation", ["--set", "network.activation=relu7"], "relu7"),
    ]:
        c.append(Case("flags", f"train {name}", T(*args), match=match))
    c.append(Case("flags", "eval --episodes 0", ["eval", "run", "--episodes", "0"], setup=trained_run))
    c.append(
        Case(
            "flags",
            "resume --total-timesteps -5",
            ["resume", "run", "--total-timesteps", "-5"],
            setup=trained_run,
        )
    )
    c.append(
        Case(
            "flags",
            "grpo num_generations=1",
            ["grpo", "--run-dir", "run", *GRPO_FAST, "--set", "num_generations=1"],
        )
    )
    c.append(
        Case("flags", "grpo --max-steps -5", ["grpo", "--run-dir", "run", *GRPO_FAST, "--max-steps", "-5"])
    )
    c.append(Case("flags", "unknown task", ["grpo", "--task", "chess", *GRPO_FAST]))
    # --- config files
    for name, content in [
        ("alias bomb", alias_bomb(7)),
        ("10 MB value", "env_id: " + "z" * 10_000_000 + "\n"),
        ("10 MB key", "k" * 10_000_000 + ": 1\n"),
        ("not a mapping", "- 1\n- 2\n"),
        ("bad YAML", "learning_rate: [1, 2\nseed: 3\n"),
        ("non-UTF-8", b"learning_rate: 0.001\nenv_id: caf\xe9\n"),
        ("wrong type", "gamma: many\n"),
        ("tab indented", "network:\n\thidden_sizes: [64]\n"),
    ]:
        c.append(
            Case(
                "files",
                f"train --config {name}",
                T("--config", "c.yaml"),
                setup=write("c.yaml", content),
                timeout=60,
            )
        )
    c.append(
        Case(
            "files",
            "grpo --config alias bomb",
            ["grpo", *GRPO_FAST, "--config", "c.yaml"],
            setup=write("c.yaml", alias_bomb(7)),
            timeout=90,
        )
    )
    c.append(Case("files", "train --config missing", T("--config", "nope.yaml")))
    c.append(
        Case(
            "files",
            "train --config a directory",
            T("--config", "."),
        )
    )
    c.append(
        Case(
            "files",
            "grpo prompts not UTF-8",
            ["grpo", *GRPO_FAST, "--prompts", "p.jsonl", "--reward", "rw.py:length"],
            setup=lambda t: (write("p.jsonl", b'{"prompt": "caf\xe9"}\n')(t), with_rewards(t)),
        )
    )
    c.append(
        Case(
            "files",
            "grpo reward file does not import",
            ["grpo", *GRPO_FAST, "--prompts", "p.jsonl", "--reward", "bad.py:f"],
            setup=lambda t: (prompts(["1+1="])(t), write("bad.py", "def f(:\n")(t)),
        )
    )
    c.append(
        Case(
            "files",
            "grpo reward module missing",
            ["grpo", *GRPO_FAST, "--prompts", "p.jsonl", "--reward", "no_such_module:f"],
            setup=prompts(["1+1="]),
        )
    )
    # --- run directories and I/O
    c.append(Case("run dirs", "--run-dir is a file", T(), setup=write("run", "x")))
    c.append(
        Case(
            "run dirs",
            "--run-dir under a read-only dir",
            ["train", "--run-dir", "ro/run", "--total-timesteps", "64", *PPO_FAST],
            setup=readonly_dir,
        )
    )
    c.append(Case("run dirs", "--run-dir holds a run", T(), setup=trained_run))
    c.append(Case("run dirs", "--run-dir name too long", ["train", "--run-dir", "n" * 300, *PPO_FAST]))
    c.append(
        Case(
            "run dirs",
            "grpo --run-dir is a file",
            ["grpo", "--run-dir", "run", *GRPO_FAST],
            setup=write("run", "x"),
        )
    )
    c.append(
        Case(
            "run dirs",
            "grpo --run-dir read-only",
            ["grpo", "--run-dir", "ro/run", *GRPO_FAST],
            setup=readonly_dir,
        )
    )
    c.append(Case("run dirs", "eval a missing run", ["eval", "nope"]))
    c.append(Case("run dirs", "eval a file", ["eval", "f"], setup=write("f", "x")))
    c.append(Case("run dirs", "plot a missing run", ["plot", "nope"]))
    c.append(Case("run dirs", "resume a missing run", ["resume", "nope"]))
    c.append(
        Case(
            "run dirs",
            "resume an edited invalid config",
            ["resume", "run", "--no-progress"],
            setup=edit_config("learning_rate", "-1"),
        )
    )
    c.append(
        Case(
            "run dirs",
            "resume an edited valid config",
            ["resume", "run", "--no-progress"],
            setup=edit_config("learning_rate", "0.123"),
        )
    )

    def ro_run(tmp: Path) -> None:  # eval.json cannot be written (a directory there: even for root)
        (trained_run(tmp) / "eval.json").mkdir()

    c.append(
        Case(
            "run dirs",
            "eval a run it cannot write",
            ["eval", "run", "--episodes", "2"],
            expect="ok",
            setup=ro_run,
        )
    )

    def failed_start(tmp: Path) -> None:  # a run killed before its first checkpoint
        (tmp / "run").mkdir()
        (tmp / "run" / "config.yaml").write_text("env_id: CartPole-v1\ntotal_timesteps: 256\nn_steps: 32\n")

    c.append(
        Case(
            "run dirs",
            "resume a run with no checkpoint",
            ["resume", "run", "--no-progress"],
            expect="ok",
            setup=failed_start,
        )
    )

    def no_dir_left(tmp: Path, r: dict) -> str | None:
        return "silently wrong" if (tmp / "run").exists() else None

    for name, args in [
        ("mistyped env", ["--env", "CartPol-v1"]),
        ("bad device", ["--device", "cuda"]),
        ("env raising at make", ["--env", "PPOKitBad/RaiseMake-v0"]),
    ]:
        c.append(Case("run dirs", f"failed start leaves nothing: {name}", T(*args), check=no_dir_left))
    # --- environments (default vectorization for these ids: sync)
    for mode in ("WrongShape", "RaiseStep", "RaiseReset", "OldApi", "ArrayReward", "EmptyBox", "RaiseMake"):
        c.append(Case("envs", f"sync env {mode}", T("--env", f"PPOKitBad/{mode}-v0")))
    c.append(
        Case(
            "envs",
            "async env RaiseStep",
            T("--env", "PPOKitBad/RaiseStep-v0", "--set", "vectorization=async", "--num-envs", "2")
            + ["--set", "batch_size=64"],
            match="raised RuntimeError",
        )
    )
    c.append(
        Case("envs", "float64 1e300 observation", T("--env", "PPOKitBad/HugeObs-v0"), match="non-finite")
    )
    c.append(
        Case(
            "envs", "missing optional dependency", T("--env", "PPOKitBad/MissingDep-v0"), match="pip install"
        )
    )
    c.append(
        Case(
            "envs",
            "env raising at step 40 (faulty_envs)",
            [
                "train",
                "--run-dir",
                "run",
                "--env",
                "PPOKitTest/RaiseAt40-v0",
                *PPO_FAST,
                "--total-timesteps",
                "512",
            ],
            match="at its step 40",
        )
    )
    # --- reward functions and prompts (GRPO and RLHF-PPO)
    for verb, fast in (("grpo", GRPO_FAST), ("rlhf-ppo", RLHF_FAST)):
        base = [verb, "--run-dir", "run", *fast, "--max-steps", "2", "--prompts", "p.jsonl"]
        for fn in ("raises", "nones", "nans", "infs", "strings", "short", "scalar", "nested"):
            c.append(
                Case(
                    "rewards",
                    f"{verb} reward {fn}",
                    [*base, "--reward", f"rw.py:{fn}"],
                    setup=prompts(["1+1=", "2+2=", "3+3="]),
                )
            )
        c.append(
            Case(
                "prompts",
                f"{verb} empty prompt",
                [*base, "--reward", "rw.py:length"],
                setup=prompts(["1+1=", ""]),
            )
        )
        c.append(
            Case(
                "prompts",
                f"{verb} non-string prompt",
                [*base, "--reward", "rw.py:length"],
                setup=prompts(["1+1=", 12]),
            )
        )
        c.append(
            Case(
                "prompts",
                f"{verb} prompt longer than the positions",
                [
                    *base,
                    "--reward",
                    "rw.py:length",
                    "--set",
                    "tiny_model.n_positions=16",
                    "--set",
                    "max_prompt_length=64",
                ],
                setup=prompts(["1+1=", "9" * 40]),
            )
        )
    c.append(
        Case(
            "models",
            "grpo model dir without tokenizer",
            ["grpo", *GRPO_FAST, "--model", "model", "--prompts", "p.jsonl", "--reward", "rw.py:length"],
            setup=lambda t: (prompts(["1+1="])(t), make_model_dir(t, "none")),
        )
    )
    c.append(
        Case(
            "models",
            "grpo tokenizer without pad or EOS",
            ["grpo", *GRPO_FAST, "--model", "model", "--prompts", "p.jsonl", "--reward", "rw.py:length"],
            setup=lambda t: (prompts(["1+1="])(t), make_model_dir(t, "nopad")),
        )
    )
    c.append(Case("models", "grpo model dir missing", ["grpo", *GRPO_FAST, "--model", "nope"]))
    # --- processes: kills, signals, two writers (default config; only the checkpoint interval shortened)
    ck = ["--set", "checkpoint_every_seconds=1"]
    train = ["train", "--run-dir", "run", "--total-timesteps", "100000", "--no-progress", "--no-eval", *ck]
    grpo = ["grpo", "--run-dir", "run", *GRPO_FAST, "--max-steps", "60", *ck]
    rlhf = ["rlhf-ppo", "--run-dir", "run", *RLHF_FAST, "--max-steps", "60", *ck]
    for i in range(3):
        c.append(
            Case(
                "kills",
                f"SIGKILL train #{i + 1}",
                [],
                run=kill_and_resume(train, (0, 3), signal.SIGKILL, True),
                timeout=400,
            )
        )
    for verb, argv in (("grpo", grpo), ("rlhf-ppo", rlhf)):
        for i in range(2):
            c.append(
                Case(
                    "kills",
                    f"SIGKILL {verb} #{i + 1}",
                    [],
                    run=kill_and_resume(argv, (0, 3), signal.SIGKILL, False),
                    timeout=400,
                )
            )
        c.append(
            Case(
                "kills",
                f"SIGTERM {verb}",
                [],
                run=kill_and_resume(argv, (0, 2), signal.SIGTERM, False),
                timeout=400,
            )
        )
    c.append(
        Case(
            "kills",
            "SIGTERM train",
            [],
            run=kill_and_resume(train, (0, 2), signal.SIGTERM, True),
            timeout=400,
        )
    )
    two = lambda seed: ["train", "--run-dir", "run", "--total-timesteps", "2048", "--seed", seed, *PPO_FAST]  # noqa: E731
    c.append(
        Case(
            "concurrency",
            "two trains on one run dir",
            [],
            run=two_writers(two("1"), two("2"), False),
            timeout=400,
        )
    )
    res = ["resume", "run", "--total-timesteps", "60000", "--no-progress", "--no-eval"]
    c.append(Case("concurrency", "two resumes of one run", [], run=two_writers(res, res, True), timeout=400))
    return c


def run_case(case: Case, tmp: Path) -> dict[str, Any]:
    """The verdict of one case run in the folder ``tmp``, and what it saw."""
    try:
        if case.setup:
            case.setup(tmp)
        if case.run:
            return case.run(tmp, case)
        r = run_cli(case.argv, tmp, case.timeout)
        v = verdict(case, r)
        if v == "ok" and case.check:
            v = case.check(tmp, r) or v
        last = (r["err"].strip().splitlines() or [""])[-1]
        return {"verdict": v, "detail": f"exit {r['rc']}, {r['s']:.1f} s: {last[:300]}"}
    finally:
        for p in tmp.rglob("*"):  # read-only folders must be removable
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, stat.S_IRWXU)


CASES = cases()


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [pytest.param(k, marks=pytest.mark.timeout(int(k.timeout) * 3 + 120)) for k in CASES],
    ids=[f"{k.area}: {k.name}" for k in CASES],
)
def test_probe_case(case: Case, tmp_path: Path) -> None:
    """Every case of the probe ends as it expects (an error line, or success), nothing worse."""
    random.seed(f"{case.area}/{case.name}")  # the kill moments: the same on every run of a case
    result = run_case(case, tmp_path)
    assert result["verdict"] == "ok", f"{result['verdict']}: {result['detail']}"


def test_probe_verdicts_by_hand() -> None:
    """The verdict of a finished command, from made-up results (what the cases' assertions rest on)."""
    err = Case("t", "error", [])
    assert verdict(err, {"rc": None, "err": ""}) == "hang"
    assert verdict(err, {"rc": 0, "err": ""}) == "silently wrong"
    assert verdict(err, {"rc": 1, "err": "error: x"}) == "other"
    assert verdict(err, {"rc": 2, "err": "Traceback (most recent call last):\n..."}) == "traceback"
    assert verdict(err, {"rc": 2, "err": "ppokit: error: a\nppokit: error: b"}) == "degraded"
    assert verdict(err, {"rc": 2, "err": "ppokit: error: " + "x" * 1000}) == "degraded"
    assert verdict(err, {"rc": 2, "err": "W: UserWarning: w\n  src\nppokit: error: bad"}) == "ok"
    assert verdict(Case("t", "m", [], match="seed=-1"), {"rc": 2, "err": "ppokit: error: other"}) == "other"
    assert verdict(Case("t", "ok", [], expect="ok"), {"rc": 0, "err": ""}) == "ok"
    worker = "ppokit: error: env raised\nworker traceback of environment\nTraceback (most recent call last):"
    assert verdict(err, {"rc": 2, "err": worker}) == "ok"
