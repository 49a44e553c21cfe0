"""docs/results.md and the learning-curve plots, generated from the raw results of benchmarks/suite.py.

Reads every OUT/<suite>/<preset>/seed<K>/result.json (+ metrics.csv), benchmarks/published.yaml and
OUT/random_scores.json; nothing else. Called by `python benchmarks/suite.py` after its runs, or alone
by `python benchmarks/bench.py report specs/suite.yaml`.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml
from aggregate import normalise, stratified_bootstrap_ci
from common import ROOT, machine, machine_lines, pyplot, save_figure, table_head, today, versions
from suite import SUITES
from table1 import objective_table, table1_section

PUBLISHED = ROOT / "benchmarks" / "published.yaml"
SUITE_ORDER = ["classic", "box2d", "mujoco", "other"]


def load_results(out: Path) -> dict[str, dict[str, list[dict]]]:
    """{suite: {preset: [result, ...] sorted by seed}} from OUT/<suite>/<preset>/seed*/result.json."""
    found: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(out.glob("*/*/seed*/result.json")):
        if path.parts[-4] == "table1":
            continue
        r = json.loads(path.read_text())
        r["_dir"] = path.parent
        found[r["suite"]][r["preset"]].append(r)
    for presets in found.values():
        for runs in presets.values():
            runs.sort(key=lambda r: r["seed"])
    return found


def load_curve(run_dir: Path) -> dict[str, np.ndarray]:
    """Steps, seconds and training return of one run (rows without a return yet are dropped)."""
    with (run_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["rollout/ep_rew_mean"] not in ("", "nan")]
    return {
        "steps": np.array([float(r["time/total_timesteps"]) for r in rows]),
        "seconds": np.array([float(r["time/elapsed_s"]) for r in rows]),
        "return": np.array([float(r["rollout/ep_rew_mean"]) for r in rows]),
    }


def fmt(x: float | None, digits: int = 1) -> str:
    """A number with thousands separators, '-' for None."""
    return "-" if x is None else f"{x:,.{digits}f}"


def best_published(env: str, published: dict) -> dict | None:
    """The highest published value listed for ``env`` (with its source key), or None."""
    results = published["envs"].get(env, {}).get("results", [])
    return max(results, key=lambda r: r["value"]) if results else None


def best_cell(best: dict | None) -> str:
    """The best published number as a table cell: value (source, budget)."""
    return f"{fmt(best['value'])} ({best['source']}, {best['budget'] / 1e6:g}M)" if best else "none found"


def env_summary(runs: list[dict], published: dict) -> dict:
    """Mean, std and median over seeds of the final evaluations, wall-clock, and the target's miss."""
    scores = [r["eval_mean"] for r in runs]
    env = runs[0]["env"]
    target = published["envs"].get(env, {}).get("target")
    mean = statistics.fmean(scores)
    return {
        "env": env,
        "preset": runs[0]["preset"],
        "seeds": [r["seed"] for r in runs],
        "steps": runs[0]["steps"],
        "scale": runs[0].get("budget_scale", 1.0),
        "mean": mean,
        "std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
        "median": statistics.median(scores),
        "wall": [r["wall_s"] for r in runs],
        "target": target,
        "miss": None if target is None else min(0.0, mean - target),
        "best": best_published(env, published),
    }


def summary_table(suites: dict, published: dict) -> list[str]:
    """The one-line-per-env table (README pastes it)."""
    lines = table_head(
        "suite | env (preset) | seeds | steps | eval mean ± std | median | best published PPO "
        "| target | wall-clock per run"
    )
    for suite in SUITE_ORDER:
        for preset, runs in sorted(suites.get(suite, {}).items()):
            s = env_summary(runs, published)
            name = s["env"] if preset == s["env"] else f"{s['env']} ({preset})"
            if s["scale"] != 1.0:
                name += f" (budget ×{s['scale']:g})"
            best = best_cell(s["best"])
            if s["target"] is None:
                target = "-"
            elif s["miss"] == 0.0:
                target = f"≥ {fmt(s['target'], 0)}: met"
            else:
                target = f"≥ {fmt(s['target'], 0)}: missed by {fmt(-s['miss'])}"
            if len(runs) < 3:  # the targets are means over 3 seeds: say when fewer are in
                target += f" ({len(runs)} seed{'s' if len(runs) > 1 else ''} so far)" if s["target"] else ""
            spread = fmt(s["std"]) if len(runs) > 1 else "n/a"
            wall = f"{statistics.fmean(s['wall']):,.0f} s ({min(s['wall']):,.0f}–{max(s['wall']):,.0f})"
            lines.append(
                f"| {suite} | {name} | {len(runs)} | {s['steps']:,} | {fmt(s['mean'])} ± {spread} "
                f"| {fmt(s['median'])} | {best} | {target} | {wall} |"
            )
        # a preset of the suite without any result is listed, so a gap in the table is never silent
        ran = {runs[0]["env"] for runs in suites.get(suite, {}).values()}
        for env in SUITES.get(suite, []):
            if env not in ran:
                best, target = (
                    best_cell(best_published(env, published)),
                    published["envs"].get(env, {}).get("target"),
                )
                goal = f"≥ {fmt(target, 0)}: not run yet" if target is not None else "-"
                lines.append(f"| {suite} | {env} | 0 | - | not run yet | - | {best} | {goal} | - |")
    return lines


def aggregate_table(suites: dict, published: dict, randoms: dict) -> list[str]:
    """IQM of normalised scores per suite with 95 % stratified-bootstrap intervals."""
    lines = table_head(
        "suite | envs | runs | IQM of normalised score [95 % CI] "
        "| envs left out (no random score or reference)"
    )
    for suite in SUITE_ORDER:
        per_task, left_out = [], []
        for preset, runs in sorted(suites.get(suite, {}).items()):
            env = runs[0]["env"]
            if preset != env:  # one preset per env: the wall-clock variants (-fast) are not aggregated
                continue
            b = best_published(env, published)
            if env not in randoms or b is None:
                left_out.append(env)
                continue
            per_task.append(
                [float(normalise(r["eval_mean"], randoms[env]["mean"], b["value"])) for r in runs]
            )
        if not per_task:
            continue
        point, low, high = stratified_bootstrap_ci(per_task)
        runs_n = sum(len(t) for t in per_task)
        lines.append(
            f"| {suite} | {len(per_task)} | {runs_n} | {point:.2f} [{low:.2f}, {high:.2f}] | "
            f"{', '.join(left_out) or '-'} |"
        )
    return lines


def env_details(suite: str, preset: str, runs: list[dict], published: dict, randoms: dict) -> list[str]:
    """Published numbers beside ours and one row per run, for one preset."""
    env = runs[0]["env"]
    lines = [f"### {preset}", ""]
    pub = published["envs"].get(env, {}).get("results", [])
    if pub:
        srcs = published["sources"]
        lines += table_head("published | value | budget | note")
        for p in pub:
            val = (
                ("~" if p.get("approx") else "")
                + fmt(p["value"])
                + (f" ± {fmt(p['std'])}" if "std" in p else "")
            )
            src = f"[{srcs[p['source']]['name']}]({srcs[p['source']]['url']})"
            lines.append(f"| {src} | {val} | {p['budget']:,} | {p.get('note', '')} |")
        lines.append("")
    else:
        lines += ["No published PPO number found for this env.", ""]
    rnd = randoms.get(env)
    if rnd:
        lines += [f"Random policy: {fmt(rnd['mean'])} ± {fmt(rnd['std'])} ({rnd['episodes']} episodes).", ""]
    lines += table_head(
        "seed | eval mean ± std (episodes) | steps | train s | wall s | date | library commit | command"
    )
    for r in runs:
        lines.append(
            f"| {r['seed']} | {fmt(r['eval_mean'])} ± {fmt(r['eval_std'])} ({r['eval_episodes']}) "
            f"| {r['steps']:,} | {r['train_s']:,.0f} | {r['wall_s']:,.0f} | {r['date']} "
            f"| {r['library_commit'][:10]} | `{r['command']}` |"
        )
    return lines + ["", *machine_lines(runs), ""]


def plot_suite(suite: str, presets: dict[str, list[dict]], path: Path) -> None:
    """Mean and min–max over seeds of the training return, against steps and against wall-clock."""
    plt = pyplot()
    names = sorted(presets)
    # constrained layout leaves room for the suptitle (tight_layout drew it over the first row's titles)
    fig, axes = plt.subplots(
        len(names), 2, figsize=(10, 2.6 * len(names)), squeeze=False, layout="constrained"
    )
    for row, preset in zip(axes, names):
        curves = [load_curve(r["_dir"]) for r in presets[preset]]
        curves = [c for c in curves if c["steps"].size > 1]
        if not curves:
            continue
        for ax, key, label in ((row[0], "steps", "environment steps"), (row[1], "seconds", "wall-clock s")):
            # mean and band where every seed has data; each seed's own curve drawn thin beside them
            grid = np.linspace(max(c[key][0] for c in curves), min(c[key][-1] for c in curves), 200)
            ys = np.array([np.interp(grid, c[key], c["return"]) for c in curves])
            for c in curves:
                ax.plot(c[key], c["return"], lw=0.5, alpha=0.4, color="grey")
            ax.plot(grid, ys.mean(axis=0), lw=1.5, color="C0")
            ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), alpha=0.25, color="C0")
            ax.set_xlabel(label)
            ax.set_title(f"{preset} ({len(curves)} seed{'s' if len(curves) > 1 else ''})", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("training return")
    fig.suptitle(f"{suite}: mean (line) and min–max (band) over seeds; grey: each seed", fontsize=10)
    save_figure(fig, path, dpi=80, tight=False)


def update_readme(readme: Path, table: list[str], aggregate: list[str], table1: list[str] = ()) -> None:
    """Put the summary and aggregate tables (and Table 1's rows) between README's suite-summary markers."""
    begin, end = "<!-- suite-summary:begin -->", "<!-- suite-summary:end -->"
    text = readme.read_text()
    if begin not in text or end not in text:
        return
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    body = [
        "",
        *table,
        "",
        *aggregate,
        "",
        *(
            ["The PPO paper's Table 1 (`python benchmarks/bench.py run specs/table1.yaml`):", "", *table1, ""]
            if table1
            else []
        ),
        "Details, sources and commands: [docs/results.md](docs/results.md).",
        "",
    ]
    readme.write_text(head + begin + "\n".join(body) + end + tail)


def random_provenance(data: dict) -> list[str]:
    """One line saying how, when and where the random-policy scores were measured."""
    if not data["envs"]:
        return ["- No random-policy scores measured yet: no normalised scores."]
    dates = sorted(e["date"] for e in data["envs"].values())
    return [
        f"- Random-policy scores: `{data.get('command', '?')}` ({data.get('policy', '?')}), "
        f"{dates[0]} to {dates[-1]}, {data.get('machine', '?')}; {data.get('versions', '?')}."
    ]


def write_report(out: Path, markdown: Path, readme: Path | None = None) -> None:
    """Regenerate ``markdown`` and OUT/<suite>_curves.png from the raw results under ``out``.

    With ``readme``, its suite-summary block gets the summary and aggregate tables too.
    """
    published = yaml.safe_load(PUBLISHED.read_text())
    randoms_path = out / "random_scores.json"
    random_data = json.loads(randoms_path.read_text()) if randoms_path.exists() else {"envs": {}}
    randoms = random_data["envs"]
    suites = load_results(out)
    summary, aggregate = summary_table(suites, published), aggregate_table(suites, published, randoms)
    if readme is not None:
        update_readme(readme, summary, aggregate, objective_table(out / "table1", published))
    rel = lambda p: p.relative_to(ROOT) if p.is_relative_to(ROOT) else p  # noqa: E731
    lines = [
        "# Results: PPO presets across the standard suites",
        "",
        "Generated by `python benchmarks/bench.py report specs/suite.yaml` from the raw results under "
        f"`{rel(out)}/` "
        f"(one `result.json` + `metrics.csv` per run); regenerated {today()}. Do not edit by hand.",
        "",
        "- **Score**: the mean return of 10 deterministic evaluation episodes (evaluation seed 10000) of the",
        "  final policy of each run; per env, the mean ± std (population std over seeds) and the median of",
        "  those per-seed scores. `steps` is the training budget (the preset's `total_timesteps`, rounded up",
        "  to whole rollouts).",
        "- **Wall-clock** is the whole `ppokit train` process per run (start-up included, evaluation not).",
        "  The runs were made on a shared 2-core machine, one or two at a time (one per core) and with",
        "  other work beside them, so the times are upper bounds; each run's `note` in its result.json",
        "  says what ran beside it.",
        "- **Published** numbers (benchmarks/published.yaml) come with their source, budget and metric. They",
        "  do not all measure the same thing: Tianshou reports the best 10-seed mean over training, the",
        "  zoo one agent, CleanRL the training return; ours is the final policy's deterministic return.",
        "- **Normalised score** = (score − random) / (reference − random): the random policy (uniform",
        "  actions, `python benchmarks/bench.py run specs/suite.yaml --set options.random_scores=true`)",
        "  scores 0 and the best published PPO number listed for the env scores 1. **IQM** is the",
        "  interquartile mean over all runs of a suite's envs pooled, with a 95 % stratified-bootstrap",
        "  percentile interval (2000 resamples of runs within each env), as rliable computes it",
        "  (benchmarks/aggregate.py); only the preset named after the env counts (wall-clock variants such",
        "  as `-fast` are listed but not aggregated).",
        *random_provenance(random_data),
        "",
        "## Summary",
        "",
        *summary,
        "",
        "## Aggregate scores",
        "",
        *aggregate,
        "",
        "## Learning curves",
        "",
    ]
    for suite in SUITE_ORDER:
        if suite in suites:
            png = out / f"{suite}_curves.png"
            plot_suite(suite, suites[suite], png)
            link = png.relative_to(markdown.parent) if png.is_relative_to(markdown.parent) else png
            lines += [f"![{suite} learning curves]({link})", ""]
    lines += ["## Per environment", ""]
    for suite in SUITE_ORDER:
        for preset, runs in sorted(suites.get(suite, {}).items()):
            lines += env_details(suite, preset, runs, published, randoms)
    lines += table1_section(out / "table1", published)
    # Results measured by other harnesses, kept in their own pages (linked, not regenerated here).
    others = {
        "results_recurrent_masking.md": "Recurrent policies (CartPole without velocities, a memory task) and "
        "invalid-action masking, each against its control",
        "results_envs.md": "Every environment a user brings: Pong speed against SB3's CnnPolicy and the "
        "Pong learning run",
        "benchmarks_spine.md": "The training spine's speed before and after (same work, one run)",
    }
    found = [(name, what) for name, what in others.items() if (markdown.parent / name).is_file()]
    if found:
        lines += ["## Other results", ""] + [f"- {what}: [{name}]({name})" for name, what in found] + [""]
    markdown.write_text("\n".join(lines) + "\n")


def measure_random_scores(out: Path, envs: list[str], episodes: int = 10, seed: int = 10_000) -> None:
    """Mean return of uniformly random actions per env, into OUT/random_scores.json (kept entries stay)."""
    import gymnasium as gym

    path = out / "random_scores.json"
    data = json.loads(path.read_text()) if path.exists() else {"envs": {}}
    for env_id in envs:
        if env_id in data["envs"]:
            continue
        try:
            env = gym.make(env_id)
        except Exception as e:  # noqa: BLE001 - a missing optional package (box2d) leaves the env out
            print(f"random score of {env_id}: skipped ({type(e).__name__}: {e})", flush=True)
            continue
        env.action_space.seed(seed)
        returns = []
        for i in range(episodes):
            env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env.close()
        data["envs"][env_id] = {
            "mean": statistics.fmean(returns),
            "std": statistics.pstdev(returns),
            "episodes": episodes,
            "date": today(),
        }
        print(f"random score of {env_id}: {data['envs'][env_id]['mean']:.1f}", flush=True)
    data["command"] = "python benchmarks/bench.py run specs/suite.yaml --set options.random_scores=true"
    data["machine"] = machine()
    data["versions"] = versions(["gymnasium", "mujoco", "box2d", "numpy"])
    data["policy"] = f"uniform random actions (action_space.sample, seeded {seed}), reset seeds {seed}+i"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
