"""What ``side_by_side.py`` runs for issue 17's goals: the plans (budgets, seeds, caps) and the jobs.

Goal 3 needs no runs of its own: it reads the steps/s of goal 2's runs with the zoo's CartPole
hyperparameters. Goals 6 (GPU) and 7 (torchrun scale-out) need a GPU machine and are not run here.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from common import ROOT

BENCH = ROOT / "benchmarks"
CONFIGS = ROOT / "configs"
PPOKIT_PY = sys.executable  # make bench runs the harness with ppokit's own venv

# rl-baselines3-zoo hyperparams/ppo.yml, entry CartPole-v1, written as a ppokit config (goal 2's
# "ppokit zoo-HP" contestant when the preset is not these, and goal 3's "same hyperparameters").
ZOO_CARTPOLE = {
    "env_id": "CartPole-v1",
    "num_envs": 8,
    "total_timesteps": 100_000,
    "n_steps": 32,
    "batch_size": 256,
    "n_epochs": 20,
    "gamma": 0.98,
    "gae_lambda": 0.8,
    "learning_rate": 1e-3,
    "lr_schedule": "linear",
    "clip_range": 0.2,
    "clip_range_schedule": "linear",
    "ent_coef": 0.0,
}

# Goal 4: env -> (evaluation target, ppokit presets to try). SB3 runs the zoo's tuned entry for the
# env (benchmarks/peers/sb3_run.py).
MUJOCO = {
    "HalfCheetah-v5": (3000.0, ["HalfCheetah-v5-fast", "HalfCheetah-v5"]),
    "Hopper-v5": (2500.0, ["Hopper-v5"]),
}

CLEANRL = "CleanRL-style"  # goal 4's third contestant (benchmarks/peers/cleanrl_style_ppo_continuous.py)

FULL = {
    "seeds": [0, 1, 2, 3, 4],  # goals 2-3: every contestant, idle and under load, per seed
    "threads_repeats": 1,  # goal 1: every preset x {auto, 1 thread} x {idle, load}
    "threads_repeats_two": 3,  # ... presets whose auto setting may take a second thread
    "threads_min_steps": 8192,
    "threads_min_rollouts": 2,  # (1 when a rollout alone is >= 16384 steps)
    "threads_presets": None,  # None: every configs/*.yaml and configs/ALE/*.yaml
    "cartpole_steps": None,  # None: each contestant's own budget (zoo 100k, presets their own)
    "cartpole_ckpt": 25_000,
    "mujoco_seeds": 1,
    "mujoco_loads": ["idle"],
    "mujoco_envs": list(MUJOCO),
    "mujoco_cap_s": 420,
    "mujoco_steps": None,  # None: the presets' own budgets (1M), cut by the cap
    # checkpoint spacing in steps: a few seconds of training each (the resolution of the time to target)
    "mujoco_ckpt": {
        "HalfCheetah-v5-fast": 81_920,
        "HalfCheetah-v5": 20_480,
        "Hopper-v5": 20_480,
        "sb3": 20_480,
    },
    "mujoco_eval_episodes": 10,
    "mujoco_cleanrl": True,
    "cnn_envs": [1, 4, 8, 16],
    "cnn_widths": [128, 2048],  # plus 512, the num_envs=8 point of the envs sweep
    "cnn_min_steps": 2048,
    "timeout_s": 900,
}
SHORT = {  # make bench BENCH_ARGS="--plan short": every goal's path, small budgets (~10-15 min)
    **FULL,
    "seeds": [0],
    "threads_repeats_two": 1,
    "threads_min_steps": 2048,
    "threads_min_rollouts": 1,
    "threads_presets": ["CartPole-v1", "CartPole-v1-fast", "Pendulum-v1", "HalfCheetah-v5-fast"],
    "mujoco_envs": ["HalfCheetah-v5"],
    "mujoco_cap_s": 30,
    "mujoco_steps": 20_480,
    "mujoco_ckpt": {"HalfCheetah-v5-fast": 8192, "HalfCheetah-v5": 4096, "sb3": 4096},
    "mujoco_eval_episodes": 3,
    "cnn_envs": [1, 8],
    "cnn_widths": [128],
    "cnn_min_steps": 512,
    "timeout_s": 600,
}
CI = {  # --quick, the smoke test CI runs (tests/test_bench_harness.py): every code path, seconds per run
    **SHORT,
    "threads_min_steps": 512,
    "threads_presets": ["CartPole-v1"],
    "cartpole_steps": 4096,
    "cartpole_ckpt": 2048,
    "cartpole_loads": ["idle"],
    "mujoco_presets": ["HalfCheetah-v5-fast"],
    "mujoco_cap_s": 6,  # ppokit and SB3 both stop at the cap (or, if ppokit is slow to start, at the steps)
    "mujoco_steps": 4096,
    "mujoco_ckpt": {"HalfCheetah-v5-fast": 2048, "sb3": 1024},
    "mujoco_eval_episodes": 2,
    "cnn_envs": [1],
    "cnn_widths": [],
    "cnn_min_steps": 128,
    "cnn_loads": ["idle"],
    "timeout_s": 300,
}
PLANS: dict[str, dict] = {"full": FULL, "short": SHORT, "ci": CI}

# Steps/s of two rollouts of each preset on the shared 2-core dev machine (load average ~3,
# 2026-11-29; CartPole's and HalfCheetah-fast's are of longer runs): only for the printed estimate.
RATES = {
    "Acrobot-v1": 5_200, "Ant-v5": 1_800, "BipedalWalker-v3": 1_600, "CartPole-v1-fast": 40_000,
    "CartPole-v1": 15_000, "HalfCheetah-v5-fast": 8_000, "HalfCheetah-v5": 1_000, "Hopper-v5": 1_800,
    "Humanoid-v5": 900, "InvertedDoublePendulum-v5": 2_200, "InvertedPendulum-v5": 3_500,
    "LunarLander-v3": 6_500, "LunarLanderContinuous-v3": 5_300, "MountainCar-v0": 10_000,
    "MountainCarContinuous-v0": 650, "Pendulum-v1": 6_700, "Reacher-v5": 4_200, "Swimmer-v5": 2_700,
    "Walker2d-v5": 2_100, "ppo-paper-mujoco": 1_400, "ALE/Pong-v5": 260, "ALE/Breakout-v5": 220,
}  # fmt: skip
STARTUP_S = 3.0


@dataclass
class Job:
    """One benchmark process: what it measures, the command, where its files land, its record."""

    goal: str  # "1", "2" (also read by goal 3), "4", "5"
    group: str  # threads | cartpole | mujoco | cnn-envs | cnn-width
    label: str  # the contestant, as shown in tables
    library: str  # ppokit | stable-baselines3
    seed: int
    load: str  # idle | load (a busy loop on one core runs beside it)
    cmd: list[str]
    out: str
    item: str = ""  # goal 1: the preset; goal 4: the env id
    x: int | None = None  # goal 5: num_envs or CNN width
    est_s: float = 0.0
    needs: list[str] = field(default_factory=list)  # e.g. ppokit:mujoco, peers:sb3 (else skipped)
    record: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.group}|{self.item}|{self.label}|{self.seed}|{self.load}|{self.x}"


def ppokit_job(goal, group, label, seed, load, out: Path, args: list[str], **kw) -> Job:
    cmd = [PPOKIT_PY, str(BENCH / "ppokit_run.py"), "--seed", str(seed), "--run-dir", str(out)]
    return Job(goal, group, label, "ppokit", seed, load, cmd + ["--no-progress", *args], str(out), **kw)


def sb3_job(peers_py, script, goal, group, label, seed, load, out: Path, args: list[str], **kw) -> Job:
    cmd = [str(peers_py), str(BENCH / "peers" / script), "--seed", str(seed), "--out", str(out)]
    return Job(goal, group, label, "stable-baselines3", seed, load, cmd + args, str(out), **kw)


def preset_names(plan: dict) -> list[str]:
    """Goal 1's presets: every configs/*.yaml and configs/ALE/*.yaml (or the plan's list)."""
    if plan["threads_presets"] is not None:
        return list(plan["threads_presets"])
    files = sorted(CONFIGS.glob("*.yaml")) + sorted((CONFIGS / "ALE").glob("*.yaml"))
    return [str(p.relative_to(CONFIGS).with_suffix("")) for p in files]


def preset_facts(name: str) -> dict:
    """Rollout size, pinned thread count and whether auto may take a second thread."""
    from ppokit.rl.config import PPOConfig
    from ppokit.train.threads import TWO_THREADS_FROM

    cfg = PPOConfig.from_dict(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()))
    work = cfg.batch_size * max(cfg.network.hidden_sizes)
    return {
        "rollout": cfg.rollout_size,
        "pinned": cfg.torch_threads,
        "two": work >= TWO_THREADS_FROM,
        "needs": env_needs(cfg.env_id),
    }


def env_needs(env_id: str) -> list[str]:
    """The optional packages ppokit's venv needs for ``env_id`` (from its registered entry point)."""
    if env_id.startswith("ALE/"):
        return ["ppokit:ale"]
    import gymnasium

    spec = gymnasium.envs.registration.registry.get(env_id)
    entry = str(spec.entry_point) if spec is not None else ""
    return [f"ppokit:{kind}" for kind in ("mujoco", "box2d") if kind in entry]


def rate_of(name: str) -> float:
    return RATES.get(name, 2_000)


def threads_jobs(plan: dict, rep: int, load: str, run: Path) -> list[Job]:
    """Goal 1, repeat ``rep``: each preset with torch_threads 0 (auto) and 1, no evaluation."""
    jobs = []
    for name in preset_names(plan):
        facts = preset_facts(name)
        if facts["pinned"]:  # the preset fixes its thread count: auto is never used, nothing to run
            continue
        if rep >= (plan["threads_repeats_two"] if facts["two"] else plan["threads_repeats"]):
            continue
        roll = facts["rollout"]
        k = max(
            math.ceil(plan["threads_min_steps"] / roll), plan["threads_min_rollouts"] if roll < 16384 else 1
        )
        steps = roll * k
        order = [("auto", 0), ("1 thread", 1)]
        for label, threads in order if rep % 2 == 0 else order[::-1]:
            slug = name.replace("/", "-")
            out = run / "threads" / f"{slug}-{threads}t-{load}-r{rep}"
            args = ["--config", str(CONFIGS / f"{name}.yaml"), "--total-timesteps", str(steps), "--no-eval"]
            args += ["--curve-episodes", "0", "--set", f"torch_threads={threads}"]
            est = STARTUP_S + steps / rate_of(name)
            kw = dict(item=name, est_s=est, needs=facts["needs"])
            jobs.append(ppokit_job("1", "threads", label, rep, load, out, args, **kw))
    return jobs


def cartpole_jobs(plan: dict, seed: int, load: str, run: Path, peers_py: Path, zoo_yaml: Path) -> list[Job]:
    """Goals 2-3: ppokit's default preset (= `ppokit train`), its fast preset, ppokit with the zoo's
    hyperparameters (only when the preset is not them), SB3 with the zoo's hyperparameters."""
    d, ckpt, own = run / "cartpole", plan["cartpole_ckpt"], plan["cartpole_steps"]
    curve = ["--set", f"checkpoint_every={ckpt}", "--set", "keep_checkpoints=100000"]
    preset = yaml.safe_load((CONFIGS / "CartPole-v1.yaml").read_text())
    fast = CONFIGS / "CartPole-v1-fast.yaml"
    fast_steps = yaml.safe_load(fast.read_text())["total_timesteps"]
    runs = [
        ("ppokit preset", "CartPole-v1", ["--env", "CartPole-v1"], preset["total_timesteps"]),
        ("ppokit fast preset", "CartPole-v1-fast", ["--config", str(fast)], fast_steps),
    ]
    if {k: v for k, v in preset.items() if k != "seed"} != ZOO_CARTPOLE:  # else the preset row is it
        runs.append(
            ("ppokit zoo-HP", "CartPole-v1", ["--config", str(zoo_yaml)], ZOO_CARTPOLE["total_timesteps"])
        )
    jobs = []
    for label, rate_key, src, steps in runs:
        steps = own or steps
        out = d / f"ppokit-{label.split(' ', 1)[1].replace(' ', '-')}-{load}-s{seed}"
        args = [*src, "--total-timesteps", str(steps), *curve]
        est = STARTUP_S + 2 + steps / rate_of(rate_key)
        jobs.append(ppokit_job("2", "cartpole", label, seed, load, out, args, item="CartPole-v1", est_s=est))
    steps = own or 100_000
    args = ["--hparams", "zoo", "--checkpoint-every", str(ckpt), "--total-timesteps", str(steps)]
    kw = dict(item="CartPole-v1", est_s=STARTUP_S + 3 + steps / 7_000, needs=["peers:sb3"])
    out = d / f"sb3-zoo-{load}-s{seed}"
    jobs.append(sb3_job(peers_py, "sb3_run.py", "2", "cartpole", "SB3 zoo-HP", seed, load, out, args, **kw))
    return jobs


def until_cap(cfg: dict) -> int:
    """A preset's budget for goal 4: with constant schedules the step budget changes nothing but where
    the run stops, so it trains until the cap (HalfCheetah-fast's 1M steps take ~80 s on 2 cores); with
    a schedule annealed over its budget (Hopper's learning rate) it keeps its own."""
    annealed = any(cfg.get(k, "constant") != "constant" for k in ("lr_schedule", "clip_range_schedule"))
    return cfg["total_timesteps"] if annealed else 100_000_000


def mujoco_jobs(plan: dict, seed: int, load: str, run: Path, peers_py: Path) -> list[Job]:
    """Goal 4: each env's ppokit presets and SB3 zoo-HP, each stopped at the wall-clock cap; the
    checkpoints are evaluated after training, up to the first that reaches the env's target."""
    jobs, cap, episodes = [], plan["mujoco_cap_s"], str(plan["mujoco_eval_episodes"])
    for env in plan["mujoco_envs"]:
        target, presets = MUJOCO[env]
        presets = [p for p in presets if p in plan.get("mujoco_presets", presets)]
        stop = ["--time-limit-s", str(cap), "--curve-target", str(target)]
        for name in presets:
            cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
            every = plan["mujoco_ckpt"].get(name, 40_960)
            steps = plan["mujoco_steps"] or until_cap(cfg)
            args = ["--config", str(CONFIGS / f"{name}.yaml"), "--total-timesteps", str(steps), "--no-eval"]
            args += ["--set", f"checkpoint_every={every}", "--set", "keep_checkpoints=100000"]
            args += ["--curve-episodes", episodes, *stop]
            label = "ppokit " + ("fast preset" if name.endswith("-fast") else "preset")
            out = run / "mujoco" / f"{name}-{load}-s{seed}"
            kw = dict(
                item=env, est_s=STARTUP_S + min(cap, steps / rate_of(name)) + 60, needs=["ppokit:mujoco"]
            )
            jobs.append(ppokit_job("4", "mujoco", label, seed, load, out, args, **kw))
        steps = plan["mujoco_steps"] or 1_000_000
        args = ["--env", env, "--hparams", "zoo", "--total-timesteps", str(steps)]
        args += ["--eval-episodes", episodes, "--checkpoint-every", str(plan["mujoco_ckpt"]["sb3"]), *stop]
        out = run / "mujoco" / f"sb3-zoo-{env}-{load}-s{seed}"
        kw = dict(item=env, est_s=STARTUP_S + min(cap, steps / 800) + 60, needs=["peers:sb3", "peers:mujoco"])
        jobs.append(sb3_job(peers_py, "sb3_run.py", "4", "mujoco", "SB3 zoo-HP", seed, load, out, args, **kw))
        if plan.get("mujoco_cleanrl"):  # CleanRL's documented continuous-action defaults, our single file
            args = ["--env", env, "--total-timesteps", str(steps), "--eval-episodes", episodes]
            args += ["--checkpoint-every", str(plan["mujoco_ckpt"]["sb3"]), *stop]
            out = run / "mujoco" / f"cleanrl-style-{env}-{load}-s{seed}"
            kw["needs"] = ["peers:mujoco"]
            script = "cleanrl_style_ppo_continuous.py"
            job = sb3_job(peers_py, script, "4", "mujoco", CLEANRL, seed, load, out, args, **kw)
            job.library = "cleanrl-style"
            jobs.append(job)
    return jobs


def cnn_jobs(plan: dict, seed: int, load: str, run: Path, peers_py: Path) -> list[Job]:
    """Goal 5: steps/s of ppokit (configs/ALE/Pong-v5.yaml) and SB3's CnnPolicy (Pong, the same
    hyperparameters) against num_envs (CNN width 512) and against the CNN's width (8 envs); 4
    minibatches per epoch as the preset (batch = rollout / 4); no evaluation."""
    points = [("cnn-envs", n, 512) for n in plan["cnn_envs"]]
    points += [("cnn-width", 8, w) for w in plan["cnn_widths"]]
    jobs = []
    for group, n, width in points:
        rollout = 128 * n
        steps = rollout * max(2, math.ceil(plan["cnn_min_steps"] / rollout))
        x = n if group == "cnn-envs" else width
        name, batch = f"{group}-{x}-{load}", str(rollout // 4)
        est = STARTUP_S + 2 + steps / RATES["ALE/Pong-v5"]
        args = ["--config", str(CONFIGS / "ALE" / "Pong-v5.yaml"), "--no-eval", "--curve-episodes", "0"]
        args += ["--total-timesteps", str(steps), "--num-envs", str(n), "--set", f"batch_size={batch}"]
        args += ["--set", f"network.cnn_features={width}"]
        kw = dict(x=x, est_s=est, needs=["ppokit:ale"])
        jobs.append(ppokit_job("5", group, "ppokit", seed, load, run / "cnn" / f"ppokit-{name}", args, **kw))
        if group == "cnn-envs":  # the same run with bf16 autocast (config bf16; AMX/AVX512-BF16 CPUs)
            out = run / "cnn" / f"ppokit-bf16-{name}"
            jobs.append(
                ppokit_job("5", group, "ppokit bf16", seed, load, out, [*args, "--set", "bf16=true"], **kw)
            )
        args = ["--total-timesteps", str(steps), "--num-envs", str(n), "--batch-size", batch]
        args += ["--features-dim", str(width)]
        kw = dict(x=x, est_s=est * 1.3, needs=["peers:sb3", "peers:ale"])
        out = run / "cnn" / f"sb3-{name}"
        jobs.append(
            sb3_job(peers_py, "sb3_atari_run.py", "5", group, "SB3 CnnPolicy", seed, load, out, args, **kw)
        )
    return jobs


def build_jobs(plan: dict, goals: list[str], run: Path, peers_py: Path, zoo_yaml: Path) -> list[Job]:
    """Every job, in the order they run: round r uses seed r (goal 1: repeat r); within a round,
    the idle block and the load block alternate which goes first, so drift touches both alike."""
    seeds = plan["seeds"]
    rounds = max(len(seeds), plan["threads_repeats_two"], plan["threads_repeats"], plan["mujoco_seeds"])
    jobs: list[Job] = []
    for r in range(rounds):
        seed = seeds[r] if r < len(seeds) else seeds[-1] + r
        for load in ("idle", "load") if r % 2 == 0 else ("load", "idle"):
            if "1" in goals:
                jobs += threads_jobs(plan, r, load, run)
            if ({"2", "3"} & set(goals)) and r < len(seeds) and load in plan.get("cartpole_loads", [load]):
                jobs += cartpole_jobs(plan, seed, load, run, peers_py, zoo_yaml)
            if "5" in goals and r == 0 and load in plan.get("cnn_loads", [load]):
                jobs += cnn_jobs(plan, seed, load, run, peers_py)
            if "4" in goals and r < plan["mujoco_seeds"] and load in plan["mujoco_loads"]:
                jobs += mujoco_jobs(plan, seed, load, run, peers_py)
    return jobs
