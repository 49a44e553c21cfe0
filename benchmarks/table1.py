"""The PPO paper's Table 1 (surrogate objectives on MuJoCo), reproduced by one command.

    python benchmarks/bench.py run specs/table1.yaml          # 4 objectives x 7 envs x seeds 0 1 2, 1M steps
    python benchmarks/bench.py run specs/table1.yaml --set 'options.envs=[Hopper-v5]'   # one env

Setting (configs/ppo-paper-mujoco.yaml): the paper's hyperparameters (Schulman et al. 2017, section
6.1 and Table 3) on the MuJoCo v5 versions of its seven tasks, 1M steps, seeds 0-2, one objective per
run: no clipping or penalty (`none`), clipping epsilon = 0.2 (`clip`), adaptive KL with d_targ = 0.01
(`kl_adaptive`, initial beta 1), fixed KL with beta = 1 (`kl_penalty`).

Score, as the paper: the mean return of the last 100 training episodes of a run (`rollout/ep_rew_mean`
at the end), shifted and scaled per env so that the random policy scores 0 (OUT/random_scores.json)
and the best of the four objectives (its mean over seeds) scores 1; a row of the table is the mean of
its normalised scores over all envs and seeds (21 runs in the paper). Each run also gets the suite's
deterministic 10-episode evaluation. Runs use benchmarks/suite.py's machinery: the same per-run files
(OUT/table1/<env>/<objective>/seed<K>/), the same resumability and progress lines.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from common import ROOT, machine_lines, table_head
from suite import CURVE_COLUMNS, parser
from suite import main as suite_main

ENVS = [
    "HalfCheetah-v5",
    "Hopper-v5",
    "InvertedDoublePendulum-v5",
    "InvertedPendulum-v5",
    "Reacher-v5",
    "Swimmer-v5",
    "Walker2d-v5",
]
OBJECTIVES = {
    "none": ["objective=none"],
    "clip": ["objective=clip", "clip_range=0.2"],
    "kl_adaptive": ["objective=kl_adaptive", "kl_target=0.01", "kl_beta=1.0"],
    "kl_penalty": ["objective=kl_penalty", "kl_beta=1.0"],
}
LABELS = {
    "none": "No clipping or penalty",
    "clip": "Clipping, ε = 0.2",
    "kl_adaptive": "Adaptive KL, d_targ = 0.01",
    "kl_penalty": "Fixed KL, β = 1",
}
BASE = ROOT / "configs" / "ppo-paper-mujoco.yaml"
TRAIN_COLUMNS = ["train/kl_coef", "train/approx_kl", "train/clip_fraction", "train/entropy"]


def plan(envs: list[str], objectives: list[str], seeds: list[int], out: Path) -> list[dict]:
    """One job per (env, objective, seed): the base config with env_id and the objective set."""
    jobs = []
    for env in envs:
        for obj in objectives:
            for seed in seeds:
                jobs.append(
                    {
                        "preset": f"table1/{env}/{obj}",
                        "seed": seed,
                        "suite": "table1",
                        "config_path": BASE,
                        "sets": [f"env_id={env}", *OBJECTIVES[obj]],
                        "extra": {"objective": obj},
                        # what the objectives do to the policy, kept per update (beta, KL, clipping)
                        "columns": [*CURVE_COLUMNS, *TRAIN_COLUMNS],
                        "dest": out / "table1" / env / obj / f"seed{seed}",
                    }
                )
    return jobs


def load(table1_dir: Path) -> dict[str, dict[str, list[dict]]]:
    """{env: {objective: [result, ...]}} from OUT/table1/<env>/<objective>/seed*/result.json."""
    found: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(table1_dir.glob("*/*/seed*/result.json")):
        r = json.loads(path.read_text())
        found[r["env"]][r["objective"]].append(r)
    return found


def all_runs(found: dict) -> list[dict]:
    """Every result in ``load``'s {env: {objective: [result, ...]}}, flattened."""
    return [r for by_obj in found.values() for runs in by_obj.values() for r in runs]


def normalised_rows(found: dict, randoms: dict) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """Per objective, the normalised scores of all its runs; per env, the raw means, the best and each
    objective's normalised mean (``scores``; only where all four objectives ran)."""
    rows: dict[str, list[float]] = defaultdict(list)
    per_env, complete = {}, set(complete_envs(found))
    for env, by_obj in sorted(found.items()):
        if env not in randoms:
            continue
        means = {o: statistics.fmean(r["last_train_return"] for r in runs) for o, runs in by_obj.items()}
        best, rnd = max(means.values()), randoms[env]["mean"]
        per_env[env] = {"means": means, "best": best, "random": rnd}
        # "best = 1" needs all four objectives: with fewer, the best of those run would score 1
        if env not in complete:
            continue

        def normalise(x: float, best: float = best, rnd: float = rnd) -> float:
            return (x - rnd) / (best - rnd) if best != rnd else 0.0

        per_env[env]["scores"] = {o: normalise(m) for o, m in means.items()}
        for obj, runs in by_obj.items():
            rows[obj].extend(normalise(r["last_train_return"]) for r in runs)
    return rows, per_env


def scaled_note(found: dict) -> list[str]:
    """A warning line when some runs used a scaled (smaller) budget than the paper's 1M steps."""
    scales = {r.get("budget_scale", 1.0) for r in all_runs(found)}
    if scales == {1.0} or not scales:
        return []
    return ["", f"**Not the paper's budget**: some runs used budget scales {sorted(scales)} (× 1M steps)."]


def complete_envs(found: dict) -> list[str]:
    """The envs where every objective has at least one run (only these can be normalised)."""
    return [env for env, by_obj in sorted(found.items()) if set(by_obj) == set(OBJECTIVES)]


def run_time_note(found: dict) -> str:
    """The measured wall-clock per run so far, and what all 84 runs take one at a time."""
    walls = [r["wall_s"] for r in all_runs(found)]
    if not walls:
        return "no run has finished yet."
    mean = statistics.fmean(walls)
    return (
        f"the {len(walls)} run(s) so far took {mean / 60:.1f} min each on average on the machines listed "
        "under the per-run table "
        f"({min(walls) / 60:.1f}-{max(walls) / 60:.1f} min), ~{84 * mean / 3600:.0f} h for all 84 "
        "one at a time."
    )


def _inputs(table1_dir: Path) -> tuple[dict, dict, dict, dict]:
    """The results found, the random scores, the normalised rows and the per-env means."""
    randoms_path = table1_dir.parent / "random_scores.json"
    randoms = json.loads(randoms_path.read_text())["envs"] if randoms_path.exists() else {}
    found = load(table1_dir) if table1_dir.exists() else {}
    rows, per_env = normalised_rows(found, randoms)
    return found, randoms, rows, per_env


def objective_table(table1_dir: Path, published: dict) -> list[str]:
    """Our normalised rows beside the paper's and the ordering (README shows these lines too)."""
    found, _, rows, per_env = _inputs(table1_dir)
    differences = difference_lines(per_env, published, largest_update_kl(table1_dir))
    return objective_lines(found, rows, published) + ([""] + differences if differences else [])


def objective_lines(found: dict, rows: dict, published: dict) -> list[str]:
    """``objective_table`` from results already loaded."""
    paper = published["table1"]["rows"]
    lines = table_head("objective | paper | ours (mean normalised score) | runs")
    for obj in OBJECTIVES:
        ours = rows.get(obj, [])
        value = f"{statistics.fmean(ours):.2f}" if ours else "not yet (no env with all four objectives)"
        lines.append(f"| {LABELS[obj]} | {paper[obj]:.2f} | {value} | {len(ours)} |")
    paper_order = sorted(OBJECTIVES, key=lambda o: -paper[o])
    ours_done = {o: statistics.fmean(v) for o, v in rows.items() if v}
    if len(ours_done) == len(OBJECTIVES):
        our_order = sorted(ours_done, key=lambda o: -ours_done[o])
        same = our_order == paper_order
        lines += [
            "",
            f"Ordering, best first: paper {' > '.join(paper_order)}; ours {' > '.join(our_order)} "
            f"({'the same' if same else 'different'}).",
        ]
    n_runs = len(all_runs(found))
    complete = complete_envs(found)
    lines += [
        "",
        f"{n_runs} of the 84 runs so far; normalised over {len(complete)} of the paper's 7 envs "
        f"({', '.join(complete) or 'none yet'}), seeds {', '.join(seeds_run(found)) or 'none'}.",
    ]
    return lines


def difference_lines(per_env: dict, published: dict, largest_kl: dict) -> list[str]:
    """Where our Table 1 differs from the paper's, from the results: each pair of objectives in the
    opposite order to the paper's, the envs that put it there, the order without the env of the widest
    gap and how far that env's runs moved the policy in one update (``largest_kl``: {(env, objective):
    [largest approx KL per run]}); then the rows whose value is far (> 0.1) from the paper's."""
    paper = published["table1"]["rows"]
    scores = {env: e["scores"] for env, e in per_env.items() if "scores" in e}
    if not scores:
        return []

    def overall(envs: list[str]) -> dict[str, float]:
        # the same mean as the table's rows: every env has the same number of seeds per objective
        return {o: statistics.fmean(scores[e][o] for e in envs) for o in OBJECTIVES}

    ours, envs, lines = overall(list(scores)), list(scores), []
    for hi, lo in [(a, b) for a in OBJECTIVES for b in OBJECTIVES if paper[a] > paper[b]]:
        if ours[hi] >= ours[lo]:
            continue
        by_env = ", ".join(
            f"{e} {scores[e][lo]:.2f} vs {scores[e][hi]:.2f}" for e in envs if scores[e][lo] > scores[e][hi]
        )
        line = (
            f"- The paper puts {hi} above {lo}; ours puts {lo} ({ours[lo]:.2f}) above {hi} ({ours[hi]:.2f}). "
            f"Envs where {lo} scores higher ({lo} vs {hi}): {by_env}."
        )
        widest = max(envs, key=lambda e: scores[e][lo] - scores[e][hi])
        if len(envs) > 1:
            rest = overall([e for e in envs if e != widest])
            line += f" Without {widest}, the widest gap: {lo} {rest[lo]:.2f}, {hi} {rest[hi]:.2f}."
        kls = largest_kl.get((widest, hi))
        if kls:
            line += f" On {widest} the largest per-update KL of the {hi} runs was {max(kls):.1f}."
        lines.append(line)
    for o in OBJECTIVES:
        if abs(ours[o] - paper[o]) > 0.1:
            lines.append(
                f"- {LABELS[o]}: ours {ours[o]:.2f}, the paper {paper[o]:.2f} ({ours[o] - paper[o]:+.2f})."
            )
    if not lines:
        return ["Ours matches the paper's ordering and its rows within 0.1."]
    return ["Where ours differs from the paper (computed from the runs):", "", *lines]


def env_score_table(per_env: dict) -> list[str]:
    """The normalised score of each objective on each env with all four run."""
    lines = ["Normalised score per env (mean over seeds):", ""]
    lines += table_head("env", *OBJECTIVES)
    for env, e in per_env.items():
        if "scores" in e:
            lines.append(f"| {env} | " + " | ".join(f"{e['scores'][o]:.2f}" for o in OBJECTIVES) + " |")
    return lines


def seeds_run(found: dict) -> list[str]:
    """The seeds with at least one finished run."""
    return sorted({str(r["seed"]) for r in all_runs(found)})


def table1_section(table1_dir: Path, published: dict) -> list[str]:
    """The markdown section: our Table 1 beside the paper's, and the per-env raw scores."""
    found, _, rows, per_env = _inputs(table1_dir)
    lines = [
        "## The PPO paper's Table 1",
        "",
        "`python benchmarks/bench.py run specs/table1.yaml` (benchmarks/table1.py): the paper's MuJoCo "
        "hyperparameters",
        "(configs/ppo-paper-mujoco.yaml), one objective per run, normalised as the paper does (random",
        "policy = 0, best objective per env = 1, score = mean return of the last 100 training episodes),",
        "averaged over envs and seeds. The paper's values are from its Table 1 "
        f"([arXiv:1707.06347]({published['table1']['url']})), 7 MuJoCo v1 tasks × 3 seeds at 1M steps.",
        "",
        f"Envs run so far: {', '.join(per_env) or 'none'} (the paper: {len(published['table1']['envs'])}); "
        "in the normalised rows, those with all four objectives run: "
        f"{', '.join(complete_envs(found)) or 'none yet'}. "
        "A full reproduction is 84 runs of 1M steps with 320 minibatch steps per 2,048 samples from one",
        f"env; {run_time_note(found)}",
        "",
        "The paper's fixed-KL row for β = 1 is 0.71; its best fixed-KL row (β = 3) is 0.72. The KL rows",
        "penalise ppokit's per-sample k3 estimate of KL(π_old ‖ π) (README, Notes on the algorithm): the",
        "same expectation as the closed-form Gaussian KL of the paper's equation 8, with sampling noise.",
        *scaled_note(found),
        "",
        *objective_lines(found, rows, published),
        "",
        *difference_lines(per_env, published, largest_update_kl(table1_dir)),
        "",
        *env_score_table(per_env),
    ]
    lines += ["", *table_head("env", "random", *OBJECTIVES)]
    for env, e in per_env.items():
        cells = [f"{e['means'][o]:,.1f}" if o in e["means"] else "-" for o in OBJECTIVES]
        lines.append(f"| {env} | {e['random']:,.1f} | " + " | ".join(cells) + " |")
    lines += ["", "(raw: mean over seeds of the last-100-episode training return)", ""]
    return lines + diagnostics_table(table1_dir) + runs_table(found)


def runs_table(found: dict) -> list[str]:
    """Every run with its score, evaluation, wall-clock, date, library commit, command and machine."""
    runs = sorted(all_runs(found), key=lambda r: (r["env"], r["objective"], r["seed"]))
    if not runs:
        return []
    lines = [
        "Every run: the score above is its last-100-episode training return; the evaluation is the",
        "suite's (deterministic policy, 10 episodes). Commands run from the repository root; the",
        "full record of each run is its result.json under docs/results/table1/.",
        "",
        *table_head(
            "env | objective | seed | last-100 training return | eval mean ± std | wall min | date "
            "| library commit | command"
        ),
    ]
    for r in runs:
        lines.append(
            f"| {r['env']} | {r['objective']} | {r['seed']} | {r['last_train_return']:,.1f} "
            f"| {r['eval_mean']:,.1f} ± {r['eval_std']:,.1f} | {r['wall_s'] / 60:.1f} | {r['date']} "
            f"| {r['library_commit'][:10]} | `{r['command']}` |"
        )
    return lines + ["", *machine_lines(runs), ""]


def update_columns(table1_dir: Path):
    """(env, objective, seed, rows) for each run whose metrics.csv kept the per-update TRAIN_COLUMNS."""
    for path in sorted(table1_dir.glob("*/*/seed*/metrics.csv")):
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("train/approx_kl") not in (None, "", "nan")]
        if rows:  # runs from before the columns were kept have none
            yield path.parts[-4], path.parts[-3], path.parts[-2].removeprefix("seed"), rows


def largest_update_kl(table1_dir: Path) -> dict[tuple[str, str], list[float]]:
    """{(env, objective): the largest per-update approx KL of each run that kept the column}."""
    found = defaultdict(list)
    for env, obj, _, rows in update_columns(table1_dir):
        found[(env, obj)].append(max(float(r["train/approx_kl"]) for r in rows))
    return dict(found)


def diagnostics_table(table1_dir: Path) -> list[str]:
    """What each objective did to the policy, from the per-update columns of the runs that kept them
    (TRAIN_COLUMNS): the KL(pi_old || pi) an update moved the policy by, how often the ratio left the
    clip range, and the KL coefficient beta over the run."""
    lines = []
    for env, obj, seed, rows in update_columns(table1_dir):
        kl = [float(r["train/approx_kl"]) for r in rows]
        clip = [float(r["train/clip_fraction"]) for r in rows]
        beta = [float(r["train/kl_coef"]) for r in rows]
        beta_cell = f"{beta[-1]:.3g} ({min(beta):.3g}–{max(beta):.3g})" if obj.startswith("kl_") else "-"
        lines.append(
            f"| {env} | {obj} | {seed} | {statistics.fmean(kl):.4f} | {max(kl):.4f} "
            f"| {statistics.fmean(clip):.3f} | {beta_cell} |"
        )
    if not lines:
        return []
    head = [
        "Per update, over each run (runs that kept these columns): the mean and largest approximate",
        "KL(π_old ‖ π) of its minibatches, the fraction of samples with the ratio outside [1 − 0.2, 1 + 0.2]",
        "(measured for every objective), and β at the end (its range over the run) for the KL objectives.",
        "",
        *table_head("env | objective | seed | mean KL | max KL | clip fraction | β: final (range)"),
    ]
    return head + lines + [""]


def main(argv: list[str] | None = None) -> None:
    """suite.py's command line and machinery, with the paper's envs and one run per objective."""
    p = parser()
    p.description = __doc__
    p.add_argument("--objectives", nargs="*", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    p.set_defaults(envs=ENVS)
    suite_main(argv, p, lambda a: plan(a.envs, a.objectives, a.seeds, a.out))


if __name__ == "__main__":
    main()
