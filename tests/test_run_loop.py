"""The one run loop (``ppokit.train.loop``): the ``Trainable`` protocol, the callback contract both
sides share, the checkpoint cadence, the emergency checkpoint, a signal's stop and the atomic log
trim (issue 29)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppokit.errors import ConfigError, NonFiniteError
from ppokit.rl.ppo import PPO
from ppokit.tracking import trim_log
from ppokit.train.callbacks import as_loop_callback
from ppokit.train.loop import RunLoop, Trainable

SMALL = dict(num_envs=2, n_steps=8, batch_size=16, n_epochs=1, tensorboard=False)


class Counter:
    """The smallest ``Trainable``: a counter whose checkpoints are directories named by its step."""

    def __init__(self, target: int, fail_at: int | None = None):
        self.n, self.target, self.fail_at = 0, target, fail_at
        self.stop_requested: int | None = None

    def position(self) -> tuple[int, int]:
        return self.n, self.target

    def run_step(self) -> dict[str, float]:
        if self.n == self.fail_at:
            raise NonFiniteError("loss is NaN 3 times in a row")
        self.n += 1
        return {"n": float(self.n)}

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, sd: dict) -> None:
        self.n = sd["n"]

    def save_checkpoint(self, root: Path) -> Path:
        path = Path(root) / f"step_{self.n}"
        path.mkdir(parents=True)
        return path


def test_the_trainers_implement_the_protocol():
    model = PPO("CartPole-v1", **SMALL)
    assert isinstance(model, Trainable) and isinstance(Counter(1), Trainable)
    model.close()


def test_cadence_by_steps_final_checkpoint_and_no_duplicate(tmp_path):
    t = Counter(7)
    loop = RunLoop(t, every=3, seconds=0, logs={})
    loop.attach(tmp_path, tensorboard=False)
    assert loop.run() == "done"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_3", "step_6", "step_7"]
    assert loop.checkpoint() == tmp_path / "checkpoints" / "step_7"  # reused: the same step
    loop.detach()


def test_emergency_checkpoint_names_itself_in_the_error(tmp_path):
    loop = RunLoop(Counter(9, fail_at=4), every=0, seconds=0, logs={}, nonfinite_hint="; lower lr")
    loop.attach(tmp_path, tensorboard=False)
    with pytest.raises(
        NonFiniteError, match=r"NaN 3 times in a row; emergency checkpoint .*step_4; lower lr"
    ):
        loop.run()
    loop.detach()
    without = RunLoop(Counter(9, fail_at=1), every=0, seconds=0, logs={})
    with pytest.raises(NonFiniteError, match="no run directory, so no checkpoint was written"):
        without.run()


def test_a_stop_request_ends_after_the_step_with_a_checkpoint(tmp_path):
    t = Counter(100)
    loop = RunLoop(t, every=0, seconds=0, logs={})
    loop.attach(tmp_path, tensorboard=False)

    def stop_at_five(trainable, metrics):  # stands in for SIGTERM arriving during step 5
        if metrics["n"] == 5:
            trainable.stop_requested = 15

    assert loop.run(stop_at_five) == "signal" and t.n == 5
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_5"]
    loop.detach()


class Hooks:
    def __init__(self, stop_at: int | None = None):
        self.calls: list[str] = []
        self.stop_at = stop_at

    def on_start(self, trainable):
        self.calls.append("start")

    def on_step(self, trainable, metrics):
        self.calls.append(f"step {int(metrics['n'])}")
        return False if metrics["n"] == self.stop_at else None

    def on_end(self, trainable):
        self.calls.append("end")


def test_every_callback_form_and_false_stops():
    seen = []
    only_end = type("OnlyEnd", (), {"on_end": lambda self, t: seen.append("only_end")})()
    hooks = Hooks(stop_at=2)
    t = Counter(5)
    ended = RunLoop(t, 0, 0, {}).run([lambda tr, m: seen.append(m["n"]), hooks, only_end])
    assert ended == "callback" and t.n == 2
    assert hooks.calls == ["start", "step 1", "step 2", "end"] and seen == [1.0, 2.0, "only_end"]
    assert RunLoop(Counter(3), 0, 0, {}).run(lambda tr, m: False) == "callback"
    assert RunLoop(Counter(3), 0, 0, {}).run(None) == "done"
    with pytest.raises(ConfigError, match=r"callback=42 is not allowed; give a function"):
        as_loop_callback([42])


def test_ppo_learn_takes_a_hook_object_and_stops_on_false():
    model = PPO("CartPole-v1", **SMALL)
    calls = []

    class Stop:
        def on_start(self, ppo):
            calls.append(("start", ppo.num_timesteps))

        def on_step(self, ppo, metrics):
            calls.append(("step", metrics["time/total_timesteps"]))
            return False

        def on_end(self, ppo):
            calls.append(("end", ppo.num_timesteps))

    model.learn(64, callback=Stop())
    assert calls == [("start", 0), ("step", 16), ("end", 16)] and model.num_timesteps == 16
    model.close()


def test_the_log_trim_is_one_atomic_function_for_csv_and_jsonl(tmp_path):
    csv_path, jsonl = tmp_path / "metrics.csv", tmp_path / "completions.jsonl"
    csv_path.write_text("step,x\n1,a\n2,b\n3,c\n,d\n")
    jsonl.write_text("".join(json.dumps({"step": s, "text": str(s)}) + "\n" for s in (1, 2, 3)) + "{}\n")
    for path in (csv_path, jsonl):
        inode = path.stat().st_ino
        trim_log(path, "step", 2)
        assert path.stat().st_ino != inode  # a new file renamed into place, never rewritten in place
    assert csv_path.read_text().splitlines() == ["step,x", "1,a", "2,b", ",d"]
    assert [json.loads(ln).get("step") for ln in jsonl.read_text().splitlines()] == [1, 2, None]
    assert not list(tmp_path.glob(".*.tmp"))
    trim_log(tmp_path / "missing.csv", "step", 2)  # a missing log is left alone
