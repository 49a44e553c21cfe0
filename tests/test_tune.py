"""``ppokit tune`` (rl/tune.py): an Optuna study in a real SQLite database that resumes, a sampler whose
proposals are valid configs, and a report with the best config as a loadable preset (issue 30)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import optuna  # the `tune` extra (also in `dev`, so `make test` has it)
import pytest

from ppokit.errors import ConfigError
from ppokit.rl.config import PPOConfig
from ppokit.rl.tune import TuneSettings, n_steps_choices, open_study, sample_ppo_params

TINY = ["--env", "CartPole-v1", "--budget", "1024", "--evaluations", "2", "--eval-episodes", "2"]
TINY += ["--num-envs", "4"]  # the preset's batch_size 256 > 32 x 4: the trials sample their own


def tune(tune_dir, n_trials: int) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "ppokit",
        "tune",
        *TINY,
        "--n-trials",
        str(n_trials),
        "--tune-dir",
        str(tune_dir),
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"}
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_a_six_trial_study_is_stored_in_sqlite_and_resumes(tmp_path):
    out = tmp_path / "tune"
    first = tune(out, 3)  # the "interrupted" study: 3 trials of 6
    assert first.stdout.count("trial ") >= 3 and "resuming" not in first.stdout
    second = tune(out, 6)
    assert "resuming study 'ppokit-CartPole-v1'" in second.stdout and ": 3 trials finished" in second.stdout
    # the database is a real SQLite file holding all six trials, and the second run added only three
    with sqlite3.connect(out / "study.db") as db:
        states = [s for (s,) in db.execute("SELECT state FROM trials ORDER BY number")]
    assert len(states) == 6 and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert [line for line in second.stdout.splitlines() if line.startswith("trial ")][0].startswith(
        "trial 3:"
    )
    # the report: a Markdown and a CSV table of the six trials, a PNG plot, the best config as a preset
    table = (out / "trials.md").read_text().splitlines()
    assert table[0].startswith("| trial | state | value |") and len(table) == 2 + 6
    assert len((out / "trials.csv").read_text().splitlines()) == 1 + 6
    assert (out / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = PPOConfig.load_yaml(out / "best.yaml")
    study = optuna.load_study(study_name="ppokit-CartPole-v1", storage=f"sqlite:///{out / 'study.db'}")
    params = study.best_trial.user_attrs["config_params"]
    assert (best.learning_rate, best.n_steps, best.gamma) == (
        params["learning_rate"],
        params["n_steps"],
        params["gamma"],
    )
    assert best.total_timesteps == 100_000  # the preset's budget, not the trial's
    assert "ppokit tune's best trial" in (out / "best.yaml").read_text().splitlines()[0]


def test_a_trial_left_running_by_a_dead_process_is_marked_failed_on_resume(tmp_path):
    settings = TuneSettings(base=PPOConfig(), out_dir=tmp_path)
    study = open_study(settings)
    study.ask()  # what a killed process leaves behind: a trial that will never report
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING
    again = open_study(settings)
    assert [t.state for t in again.trials] == [optuna.trial.TrialState.FAIL]


def test_every_sampled_proposal_is_a_valid_config():
    for num_envs, budget in ((1, 512), (4, 1024), (8, 20_000)):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=num_envs))
        choices = n_steps_choices(budget, num_envs, evaluations=4)
        assert choices and all(n * num_envs <= budget // 4 for n in choices)
        for _ in range(30):
            params = sample_ppo_params(study.ask(), num_envs, choices)
            cfg = PPOConfig.from_dict({**params, "num_envs": num_envs})  # validates batch_size | rollout
            assert cfg.batch_size <= cfg.n_steps * cfg.num_envs


def test_a_study_resumes_only_with_the_settings_it_was_run_with(tmp_path):
    open_study(TuneSettings(base=PPOConfig(), out_dir=tmp_path, budget=1024))
    with pytest.raises(ConfigError, match="budget=2048 is not allowed .* it was run with budget=1024"):
        open_study(TuneSettings(base=PPOConfig(), out_dir=tmp_path, budget=2048))
    open_study(TuneSettings(base=PPOConfig(), out_dir=tmp_path, budget=1024))  # the same: fine


def test_bad_tune_options_are_one_line_errors(tmp_path):
    cmd = [sys.executable, "-m", "ppokit", "tune", "--n-trials", "0", "--tune-dir", str(tmp_path / "t")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--n-trials=0 is not allowed; must be >= 1" in r.stderr
    assert not (tmp_path / "t").exists()


def test_a_trial_the_pruner_stops_ends_early_and_is_recorded_as_pruned(tmp_path):
    from ppokit.rl.tune import objective

    base = PPOConfig(num_envs=4, batch_size=32)
    settings = TuneSettings(base=base, out_dir=tmp_path, budget=2048, evaluations=4, eval_episodes=1)
    # a pruner that stops every trial at its first report: the trial must stop there, not train on
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    study.optimize(lambda t: objective(settings, t), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]


def test_ctrl_c_keeps_the_finished_trials_writes_the_report_and_the_study_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "ppokit", "tune", *TINY, "--n-trials", "500", "--tune-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finished_sql = "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
    deadline, done = time.monotonic() + 120, 0
    while done < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if (out / "study.db").exists():
            with sqlite3.connect(out / "study.db") as db:
                try:
                    done = db.execute(finished_sql).fetchone()[0]
                except sqlite3.OperationalError:  # the tables are being created
                    pass
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "run the same command to resume" in stdout and (out / "trials.md").is_file()
    with sqlite3.connect(out / "study.db") as db:
        kept = db.execute(finished_sql).fetchone()[0]
    assert 2 <= kept < 500
    tune(out, kept + 2)
    with sqlite3.connect(out / "study.db") as db:
        states = [s for (s,) in db.execute("SELECT state FROM trials")]
    # the trial cut off by Ctrl-C is failed, not counted; the resumed run added exactly two more
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == kept + 2 and "RUNNING" not in states
