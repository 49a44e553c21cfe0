"""Learning checks of issue 13: recurrent policies on tasks that need memory, and action masking.

    nice -n 5 python benchmarks/recurrent_masking.py            # every task, 3 seeds, one run at a time
    python benchmarks/recurrent_masking.py --only memory --seeds 0
    python benchmarks/recurrent_masking.py --report             # rewrite the report from the JSON files

Tasks (envs in src/ppokit/rl/toy_envs.py), each a control against the feature:

- ``cartpole_novel``: ``ppokit/CartPoleNoVel-v1`` (CartPole-v1 without the velocities, as sb3-contrib
  benchmarks RecurrentPPO), MLP vs LSTM, rl-zoo-like CartPole settings.
- ``memory``: ``RememberFirst`` (a cue among 4 at the first step, 6 blank steps, then the query; reward 1
  for the cue, chance 0.25), MLP vs LSTM vs GRU.
- ``masking``: ``MaskedChoice`` (16 actions, 3 valid at each step, an invalid one ends the episode with
  -1; the best valid action pays 1, another 0.1; best return 16), masked vs unmasked
  (``action_masking=false``).

Every run writes ``docs/results/recurrent_masking/<task>-<variant>-seed<k>.json`` (its config, learning
curve, final evaluation, wall time, machine); ``--report`` turns them into
``docs/results_recurrent_masking.md`` and ``docs/img/recurrent_masking.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import numpy as np
import torch
from common import ROOT, git_commit, machine, pyplot, save_figure, save_json, table_head, today, versions

from ppokit.rl.ppo import PPO
from ppokit.rl.toy_envs import MaskedChoice, RememberFirst

RESULTS = ROOT / "docs" / "results" / "recurrent_masking"
REPORT = ROOT / "docs" / "results_recurrent_masking.md"
FIGURE = ROOT / "docs" / "img" / "recurrent_masking.png"
COMMAND = "nice -n 5 python benchmarks/recurrent_masking.py"
# the code this process runs (taken at start: commits made meanwhile do not count)
COMMIT = git_commit(short=True)

LSTM = {"recurrent": "lstm", "recurrent_hidden_size": 64}
GRU = {"recurrent": "gru", "recurrent_hidden_size": 64}
# rl-zoo's CartPole settings (configs/CartPole-v1.yaml), which sb3-contrib's CartPoleNoVel config shares
ZOO = dict(
    num_envs=8,
    n_steps=32,
    batch_size=256,
    n_epochs=20,
    gamma=0.98,
    gae_lambda=0.8,
    learning_rate=1e-3,
    lr_schedule="linear",
    clip_range_schedule="linear",
    normalize_obs=True,  # the pole angle spans +-0.21: without it one pilot LSTM run was far slower
)
MEMORY = dict(num_envs=8, n_steps=32, batch_size=128, n_epochs=10, learning_rate=2e-3, lr_schedule="linear")
MASKING = dict(num_envs=8, n_steps=64, batch_size=256, n_epochs=4, learning_rate=1e-3)

TASKS = {
    "cartpole_novel": {
        "env": "ppokit/CartPoleNoVel-v1",
        "steps": 50_000,
        "eval_episodes": 20,
        "variants": {"mlp": dict(ZOO), "lstm": dict(ZOO, network=LSTM)},
        "what": "CartPole-v1 without velocities; eval: mean return (max 500)",
    },
    "cartpole_novel_long": {  # the same at three times the budget, one seed: does the LSTM solve it?
        "env": "ppokit/CartPoleNoVel-v1",
        "steps": 150_000,
        "eval_episodes": 20,
        "seeds": [0],
        "variants": {"mlp": dict(ZOO), "lstm": dict(ZOO, network=LSTM)},
        "what": "as cartpole_novel, 3x the steps, seed 0 only",
    },
    "memory": {
        "env": functools.partial(RememberFirst, n_cues=4, delay=6),
        "env_name": "RememberFirst(n_cues=4, delay=6)",
        "steps": 20_000,
        "eval_episodes": 200,
        "variants": {
            "mlp": dict(MEMORY, ent_coef=0.01, network={"hidden_sizes": [64]}),
            "lstm": dict(MEMORY, ent_coef=0.01, network={"hidden_sizes": [64], **LSTM}),
            "gru": dict(MEMORY, ent_coef=0.01, network={"hidden_sizes": [64], **GRU}),
        },
        "what": "remember the first observation; eval: mean return = accuracy (chance 0.25)",
    },
    "masking": {
        "env": MaskedChoice,
        "env_name": "MaskedChoice(n_actions=16, n_valid=3, length=16)",
        "steps": 30_000,
        "eval_episodes": 50,
        "variants": {"masked": dict(MASKING), "unmasked": dict(MASKING, action_masking=False)},
        "what": "16 actions, 3 valid; eval: mean return (max 16)",
    },
}


def run(task: str, variant: str, seed: int) -> dict:
    """Train one (task, variant, seed) and return its record."""
    spec = TASKS[task]
    cfg = dict(spec["variants"][variant], seed=seed, tensorboard=False)
    torch.manual_seed(seed)
    model = PPO(spec["env"], **cfg)
    curve: list[list[float]] = []
    invalid = [0]  # invalid actions taken in training (masking: an invalid action pays -1)

    def callback(m: PPO, metrics: dict) -> None:
        curve.append([m.num_timesteps, metrics["rollout/ep_rew_mean"], time.time() - start])
        if task == "masking":
            invalid[0] += int(((m.buffer.rewards == -1) & m.buffer.valid).sum())

    start = time.time()
    model.learn(spec["steps"], callback=callback)
    train_s = time.time() - start
    result = model.evaluate(spec["eval_episodes"])
    model.close()
    record = {
        "task": task,
        "variant": variant,
        "seed": seed,
        "env": spec.get("env_name", spec["env"]),
        "total_timesteps": model.num_timesteps,
        "config": model.config.to_dict(),
        "train_s": round(train_s, 1),
        "manual_grad": model.manual_grad is not None,
        "eval_mean_return": result["mean_return"],
        "eval_std_return": result["std_return"],
        "eval_episodes": result["episodes"],
        "curve": [[int(s), None if np.isnan(r) else round(float(r), 4), round(t, 1)] for s, r, t in curve],
        "date": today(),
        "commit": COMMIT,
        "machine": machine(),
        "versions": versions(["torch", "gymnasium", "numpy"]),
        "note": "shared machine (other engineers' processes running); one training process at a time",
        "command": f"{COMMAND} --only {task} --variants {variant} --seeds {seed}",
    }
    if task == "masking":
        record["invalid_actions_in_training"] = invalid[0]
    return record


def _steps_to(curve: list, threshold: float) -> int | None:
    return next((s for s, r, _ in curve if r is not None and r >= threshold), None)


THRESHOLDS = {"cartpole_novel": 475.0, "cartpole_novel_long": 475.0, "memory": 0.9, "masking": 12.0}


def report() -> None:
    """Write the markdown section and the figure from the JSON records."""
    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    lines = [
        "# Recurrent policies and action masking: learning checks",
        "",
        "Produced by `python benchmarks/bench.py run specs/recurrent_masking.yaml` (this page: `python",
        "benchmarks/bench.py report specs/recurrent_masking.yaml`); raw per-run JSON (config, curve,",
        "evaluation, machine) in `docs/results/recurrent_masking/`. Each row gives, over its seeds (0, 1, 2",
        "unless said), the deterministic evaluation's mean return after training (mean ± std and per seed), "
        "the",
        "training steps at which the training curve (mean return of the last 100 episodes) first reached",
        "the threshold (per seed; - = never), and the training time of one run. Runs were made one at a",
        "time on a shared machine (other engineers' processes running), so times are indicative only.",
        "",
    ]
    for task, spec in TASKS.items():
        rows = [r for r in records if r["task"] == task]
        if not rows:
            continue
        env = rows[0]["env"]
        lines += [
            f"## {task}: {env}",
            "",
            f"{spec['what']}; {rows[0]['total_timesteps']:,} steps per run; threshold {THRESHOLDS[task]}.",
            "",
            *table_head(
                "variant | eval mean ± std over seeds | per seed | steps to threshold | train s (mean)",
                *(["invalid actions in training"] if task == "masking" else []),
            ),
        ]
        for variant in spec["variants"]:
            rs = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["seed"])
            if not rs:
                continue
            ev = [r["eval_mean_return"] for r in rs]
            reach = [_steps_to(r["curve"], THRESHOLDS[task]) for r in rs]
            row = (
                f"| {variant} | {np.mean(ev):.3g} ± {np.std(ev):.2g} | {', '.join(f'{e:.3g}' for e in ev)} | "
                f"{', '.join('-' if s is None else f'{s:,}' for s in reach)} | "
                f"{np.mean([r['train_s'] for r in rs]):.0f} |"
            )
            if task == "masking":
                row += f" {', '.join(str(r['invalid_actions_in_training']) for r in rs)} |"
            lines.append(row)
        lines.append("")
    first = records[0] if records else {}
    dates = sorted(r["date"] for r in records) or ["?"]
    commits = sorted({r["commit"] for r in records}) or ["?"]
    lines += [
        "![learning curves](img/recurrent_masking.png)",
        "",
        f"Machine: {first.get('machine', '?')}; {first.get('versions', '?')}; "
        f"commit {', '.join(commits)}; runs dated {dates[0]} to {dates[-1]}; shared machine.",
        "",
        "Per-run commands: `"
        + COMMAND
        + " --only TASK --variants VARIANT --seeds SEED` (each JSON records its own).",
        "",
    ]
    REPORT.write_text("\n".join(lines))
    _figure(records)


def _figure(records: list[dict]) -> None:
    fig, axes = pyplot().subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.6))
    for ax, (task, spec) in zip(axes, TASKS.items()):
        for variant in spec["variants"]:
            rs = [r for r in records if r["task"] == task and r["variant"] == variant]
            for i, r in enumerate(rs):
                pts = [(s, v) for s, v, _ in r["curve"] if v is not None]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(
                        xs,
                        ys,
                        color=f"C{list(spec['variants']).index(variant)}",
                        alpha=0.7,
                        label=variant if i == 0 else None,
                    )
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training return (last 100 episodes)")
        ax.legend()
    save_figure(fig, FIGURE, dpi=90)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        nargs="*",
        default=["masking", "memory", "cartpole_novel", "cartpole_novel_long"],
        choices=list(TASKS),
    )
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the JSON files")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not args.report:
        for task in args.only:
            for variant in args.variants or list(TASKS[task]["variants"]):
                for seed in TASKS[task].get("seeds", args.seeds):
                    record = run(task, variant, seed)
                    save_json(RESULTS / f"{task}-{variant}-seed{seed}.json", record)
                    print(
                        f"{task} {variant} seed {seed}: eval {record['eval_mean_return']:.3f} "
                        f"in {record['train_s']:.0f} s",
                        flush=True,
                    )
    report()


if __name__ == "__main__":
    main()
