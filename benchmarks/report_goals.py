"""The sections of docs/benchmarks.md for issue 17's goals 1-5: tables, ratios per seed and their
median, idle and under load, and a plain verdict per goal (holds / misses by how much / cannot tell).

A run that did not reach its target within its budget or wall-clock cap is *censored*: its time is
only known to be larger than what it ran. A ratio with a censored side is a bound (``<`` or ``>``),
and a verdict counts a seed as holding or missing only when the bound decides it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from parse import first_eval_reaching

LOADS = ("idle", "load")
LOAD_NAME = {"idle": "idle", "load": "under load"}
NOISE = 0.10  # goal 1: auto within 10 % of one thread's time counts as "not slower" (run-to-run noise)


@dataclass
class Val:
    """A measured value (``kind`` "="), or a bound: the true value is larger (">") or smaller ("<")."""

    value: float
    kind: str = "="

    def __str__(self) -> str:
        return ("" if self.kind == "=" else self.kind) + f"{self.value:.2f}"


def ratio(a: Val | None, b: Val | None) -> Val | None:
    """``a / b`` with bounds carried through; None when unknown (both censored or missing)."""
    if a is None or b is None or b.value <= 0:
        return None
    if a.kind == "=" and b.kind == "=":
        return Val(a.value / b.value)
    if a.kind == "=" and b.kind == ">":
        return Val(a.value / b.value, "<")
    if a.kind == ">" and b.kind == "=":
        return Val(a.value / b.value, ">")
    return None


def median(vals: list[Val | None]) -> float | None:
    known = [v.value for v in vals if v is not None]
    return statistics.median(known) if known else None


def med_text(vals: list[Val | None], fmt: str = "{:.2f}") -> str:
    """The median, and how many of the values are bounds (censored runs) or unknown."""
    m = median(vals)
    bounds = sum(1 for v in vals if v is None or v.kind != "=")
    return "-" if m is None else fmt.format(m) + (f" ({bounds} of {len(vals)} censored)" if bounds else "")


def per_seed(vals: list[Val | None]) -> str:
    return ", ".join("?" if v is None else str(v) for v in vals) or "-"


def verdict(vals: list[Val | None], target: float, at_most: bool) -> tuple[str, bool | None]:
    """'holds' when more than half the seeds decidedly meet the target, 'misses' when more than half
    decidedly do not, else 'cannot tell'. With the median and how far it is from the target."""
    if not vals:
        return "not measured", None
    if all(v is None for v in vals):
        return "**cannot tell** (every seed censored on both sides, or failed)", None
    meets = lambda v: v.value <= target if at_most else v.value >= target  # noqa: E731
    ok = sum(1 for v in vals if v is not None and meets(v) and v.kind in ("=", "<" if at_most else ">"))
    bad = sum(1 for v in vals if v is not None and not meets(v) and v.kind in ("=", ">" if at_most else "<"))
    m, n = median(vals), len(vals)
    if ok > n / 2:
        return f"**holds** (median {m:.2f}×, {ok}/{n} seeds)", True
    if bad > n / 2:
        factor = m / target if at_most else target / m
        return f"**misses** by {factor:.2f}× (median {m:.2f}×, {bad}/{n} seeds miss)", False
    return f"**cannot tell** ({ok} meet, {bad} miss, {n - ok - bad} censored or failed, of {n})", None


def select(jobs: list[dict], **match) -> list[dict]:
    return [j for j in jobs if all(j.get(k) == v for k, v in match.items())]


def by_seed(jobs: list[dict]) -> dict[int, dict]:
    """Records by seed, leaving out runs the harness skipped (a part not installed)."""
    return {j["seed"]: j["record"] for j in jobs if "skipped" not in j["record"]}


def done(rec: dict | None) -> bool:
    return bool(rec) and rec.get("rc") == 0


def num(v, fmt: str = "{:,.0f}") -> str:
    return "-" if v is None else fmt.format(v)


# -- goal 1 ----------------------------------------------------------------------------------------
def goal1(jobs: list[dict], plan: dict) -> tuple[list[str], dict]:
    threads = select(jobs, group="threads")
    presets = list(dict.fromkeys(j["item"] for j in threads))
    lines = [
        "## Goal 1: threads chosen automatically, never slower than one thread",
        "",
        "Each preset trains a few rollouts (no evaluation) with `torch_threads: 0` (auto, the default)",
        "and with `torch_threads: 1`, idle and beside a busy loop; "
        f"{plan['threads_repeats']} repeat(s), {plan['threads_repeats_two']} for presets whose auto setting",
        "may take a second thread. Ratio: training-loop time of auto over one thread's (= steps/s of",
        f"1 thread / steps/s of auto; > 1: auto slower). Holds when the median is ≤ {1 + NOISE:.2f} (noise",
        "allowance).",
        "Where auto ran one thread throughout, both runs are the same program and a gap is noise.",
        "",
        "| preset | steps | idle: steps/s auto / 1 thread | idle: ratio per repeat | idle: median | "
        "load: steps/s auto / 1 thread | load: ratio per repeat | load: median "
        "| threads auto used (idle; load) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    worst: dict[str, list] = {load: [] for load in LOADS}
    for name in presets:
        cells, used = [], []
        for load in LOADS:
            auto = by_seed(select(threads, item=name, load=load, label="auto"))
            one = by_seed(select(threads, item=name, load=load, label="1 thread"))
            vals = [
                ratio(Val(one[s]["fps"]), Val(auto[s]["fps"])) if done(auto[s]) and done(one.get(s)) else None
                for s in auto
            ]
            seen = sorted({t for r in auto.values() if done(r) for t in r.get("torch_threads_seen") or []})
            used.append(str(seen) if seen else "-")
            fps_a = median([Val(r["fps"]) for r in auto.values() if done(r)])
            fps_1 = median([Val(r["fps"]) for r in one.values() if done(r)])
            m = median(vals)
            if m is not None:
                worst[load].append((m, name, seen == [1]))
            cells += [f"{num(fps_a)} / {num(fps_1)}", per_seed(vals), num(m, "{:.2f}")]
        steps = next(
            (j["record"].get("total_timesteps") for j in select(threads, item=name) if done(j["record"])),
            None,
        )
        lines.append(f"| {name} | {num(steps)} | " + " | ".join(cells) + f" | {'; '.join(used)} |")
    summary = {}
    for load in LOADS:
        ms = sorted(worst[load], reverse=True)
        if not ms:
            summary[load] = ("not measured", None)
            continue
        slow = [f"{n} {m:.2f}×" for m, n, one_thread in ms if m > 1 + NOISE and not one_thread]
        noise = [f"{n} {m:.2f}×" for m, n, one_thread in ms if m > 1 + NOISE and one_thread]
        text = f"worst median {ms[0][0]:.2f}× ({ms[0][1]}) of {len(ms)} preset(s)"
        if noise:
            text += f"; beyond {1 + NOISE:.2f}× only as noise where auto ran one thread: {', '.join(noise)}"
        summary[load] = (
            (f"**misses**: slower in {', '.join(slow)}; {text}", False)
            if slow
            else (f"**holds**: {text}", True)
        )
    pinned = "Presets that pin `torch_threads` (configs/ALE/*.yaml: 1) never use auto and are not run."
    return lines + ["", pinned, ""], summary


# -- goals 2 and 3 -------------------------------------------------------------------------------
def time_to_475(rec: dict | None) -> Val | None:
    """Seconds from launch to a last-100 training mean of 475; censored at the run's end if never."""
    if not done(rec):
        return None
    if rec.get("time_to_target") is not None:
        return Val(rec["time_to_target"])
    return Val(rec["train_end_s"], ">")


def goal2(jobs: list[dict]) -> tuple[list[str], dict]:
    cart = select(jobs, group="cartpole")
    labels = list(dict.fromkeys(j["label"] for j in cart))
    lines = [
        "## Goal 2: CartPole-v1, launch to a last-100 training mean of 475, ≤ 1/5 of SB3's time",
        "",
        "| contestant | load | runs | reached 475 | seconds to 475, per seed | median "
        "| steps to 475 (median) | steps/s (median) | final eval, 20 ep. (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        for load in LOADS:
            recs = by_seed(select(cart, label=label, load=load))
            if not recs:
                continue
            vals = [time_to_475(r) for r in recs.values()]
            reached = sum(1 for v in vals if v is not None and v.kind == "=")
            ok = [r for r in recs.values() if done(r)]

            def med(key: str, ok: list[dict] = ok) -> float | None:
                return median([Val(r[key]) for r in ok if r.get(key) is not None])

            lines.append(
                f"| {label} | {LOAD_NAME[load]} | {len(recs)} | {reached}/{len(recs)} | {per_seed(vals)} "
                f"| {med_text(vals)} | {num(med('steps_to_target'))} | {num(med('fps'))} "
                f"| {num(med('eval_mean'), '{:.1f}')} |"
            )
    lines += ["", "| ratio of seconds to 475 | load | per seed (same seed) | median | target | verdict |"]
    lines += ["|---|---|---|---|---|---|"]
    summary = {}
    for label in [lab for lab in labels if lab.startswith("ppokit") and lab != "ppokit zoo-HP"]:
        for load in LOADS:
            mine, sb3 = (by_seed(select(cart, label=lab, load=load)) for lab in (label, "SB3 zoo-HP"))
            if not mine:
                continue
            vals = [ratio(time_to_475(mine[s]), time_to_475(sb3.get(s))) for s in mine]
            text, ok = verdict(vals, 0.2, at_most=True) if sb3 else ("SB3 not run", None)
            summary[(label, load)] = (per_seed(vals), med_text(vals, "{:.2f}×"), text, ok)
            lines.append(
                f"| {label} / SB3 zoo-HP | {LOAD_NAME[load]} | {per_seed(vals)} | "
                f"{med_text(vals, '{:.2f}×')} | ≤ 0.20× | {text} |"
            )
    lines += ["", "A `>`/`<` value is a bound: that run did not reach 475 within its budget.", ""]
    return lines, summary


def goal3(jobs: list[dict]) -> tuple[list[str], dict]:
    cart = select(jobs, group="cartpole")
    mine = "ppokit zoo-HP" if select(cart, label="ppokit zoo-HP") else "ppokit preset"
    lines = [
        "## Goal 3: the same work with the same hyperparameters (the zoo's CartPole), ≥ 3× SB3's steps/s",
        "",
        f"ppokit row: `{mine}`"
        + (" (configs/CartPole-v1.yaml *is* the zoo's hyperparameters)." if mine == "ppokit preset" else "."),
        "Steps/s = environment steps / seconds of the training loop (no start-up, no evaluation).",
        "",
        "| load | ppokit steps/s per seed | SB3 steps/s per seed | ratio per seed | median "
        "| both reached 475 | target | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for load in LOADS:
        a, b = (
            by_seed(select(cart, label=mine, load=load)),
            by_seed(select(cart, label="SB3 zoo-HP", load=load)),
        )
        if not a:
            continue
        vals = [
            ratio(Val(a[s]["fps"]), Val(b[s]["fps"])) if done(a[s]) and done(b.get(s)) else None for s in a
        ]
        both = sum(
            1
            for s in a
            if done(a[s]) and done(b.get(s)) and a[s].get("time_to_target") and b[s].get("time_to_target")
        )
        text, ok = verdict(vals, 3.0, at_most=False) if b else ("SB3 not run", None)
        summary[load] = (per_seed(vals), num(median(vals), "{:.2f}×"), text, ok)
        fps = lambda d: ", ".join(num(r.get("fps")) if done(r) else "failed" for r in d.values()) or "not run"  # noqa: E731
        lines.append(
            f"| {LOAD_NAME[load]} | {fps(a)} | {fps(b)} | {per_seed(vals)} | {num(median(vals), '{:.2f}×')} "
            f"| {both}/{len(a)} | ≥ 3× | {text} |"
        )
    return lines + [""], summary


# -- goal 4 --------------------------------------------------------------------------------------
def time_to_eval(rec: dict | None, target: float) -> Val | None:
    if not done(rec):
        return None
    t, _ = first_eval_reaching(rec.get("eval_curve") or [], target)
    return Val(t) if t is not None else Val(rec["train_end_s"], ">")


def goal4(jobs: list[dict], meta: dict) -> tuple[list[str], dict]:
    from bench_plan import CLEANRL, MUJOCO

    muj, plan = select(jobs, group="mujoco"), meta["plan"]
    # the scope from the records (a resumed run may have added seeds, loads or contestants)
    seeds = sorted({j["seed"] for j in muj if done(j["record"])})
    loads = [x for x in LOADS if any(j["load"] == x and done(j["record"]) for j in muj)]
    few = len(seeds) < 3 or len(loads) < 2
    caps = sorted(
        {int(j["cmd"][j["cmd"].index("--time-limit-s") + 1]) for j in muj if "--time-limit-s" in j["cmd"]}
    )
    cap = " or ".join(str(c) for c in caps) or plan["mujoco_cap_s"]  # a resume may have set another cap
    scope = f"**Seeds {', '.join(map(str, seeds))}; {' and '.join(LOAD_NAME[x] for x in loads)}**"
    scope += (
        " (to fit the plan's ~1 h; `--mujoco-seeds 3 --mujoco-loads idle load` runs more)"
        if few
        else " (each contestant's seeds and loads are in the table below)"
    )
    scope += "."
    lines = [
        "## Goal 4: wall-clock to a good MuJoCo policy, ≤ 1/5 of SB3's time",
        "",
        f"Seconds from launch until a checkpoint's deterministic evaluation ({plan['mujoco_eval_episodes']} "
        "episodes, evaluated after the run) first reaches HalfCheetah 3,000 / Hopper 2,500. Every run stops "
        f"at {cap} s after launch (or at its step budget); a run that never reached the target is reported "
        "as not reached, with its best evaluation, and its time is only a lower bound. ppokit presets "
        "without an annealed schedule train until the cap (their budget only says where a run stops); "
        "Hopper's preset anneals its learning rate over its 1M steps and keeps that budget. "
        f"{scope} "
        "The CleanRL-style runner (`benchmarks/peers/cleanrl_style_ppo_continuous.py`: our single file with "
        "the defaults CleanRL documents for `ppo_continuous_action.py`, not CleanRL's code) runs where the "
        "table lists it; the goal's ≤ 1/5 is against SB3, the CleanRL-style ratio is shown beside it.",
        "",
        "| env | contestant | load | seed | target reached at | steps run | best eval (at s) | steps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for env in dict.fromkeys(j["item"] for j in muj):
        target = MUJOCO[env][0]
        for j in select(muj, item=env):
            r, v = j["record"], time_to_eval(j["record"], target)
            if not done(r):
                lines.append(
                    f"| {env} | {j['label']} | {LOAD_NAME[j['load']]} | {j['seed']} | "
                    f"{r.get('skipped') or 'failed'} | | | |"
                )
                continue
            curve = r.get("eval_curve") or []
            best = max(curve, key=lambda c: c[1]) if curve else None
            reached = f"{v.value:.1f} s" if v.kind == "=" else f"not reached within {r['train_end_s']:.0f} s"
            lines.append(
                f"| {env} | {j['label']} | {LOAD_NAME[j['load']]} | {j['seed']} | {reached} "
                f"| {num(r.get('total_timesteps'))} | "
                f"{f'{best[1]:,.0f} ({best[0]:.0f} s)' if best else '-'} | {num(r.get('fps'))} |"
            )
        for label in dict.fromkeys(j["label"] for j in select(muj, item=env, library="ppokit")):
            for load in LOADS:
                a = by_seed(select(muj, item=env, label=label, load=load))
                if not a:
                    continue
                for peer in ("SB3 zoo-HP", CLEANRL):
                    b = by_seed(select(muj, item=env, label=peer, load=load))
                    if not b and peer == CLEANRL:
                        continue
                    vals = [ratio(time_to_eval(a[s], target), time_to_eval(b.get(s), target)) for s in a]
                    text, ok = verdict(vals, 0.2, at_most=True) if b else ("SB3 not run", None)
                    key = (env, label, load) if peer == "SB3 zoo-HP" else (env, f"{label} / {peer}", load)
                    summary[key] = (per_seed(vals), med_text(vals, "{:.2f}×"), text, ok)
    lines += ["", "| env | ratio of seconds to target | load | per seed | median | target | verdict |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for (env, label, load), (seeds, med, text, _) in summary.items():
        pair = label if CLEANRL in label else f"{label} / SB3 zoo-HP"
        lines.append(f"| {env} | {pair} | {LOAD_NAME[load]} | {seeds} | {med} | ≤ 0.20× | {text} |")
    lines += [
        "",
        "`<x`: SB3 did not reach the target by its cap, so the real ratio is smaller than x; "
        "`>x`: ppokit did not, so it is larger; `?`: neither did (or a run failed).",
        "",
    ]
    return lines, summary


# -- goal 5 --------------------------------------------------------------------------------------
def goal5(jobs: list[dict], meta: dict) -> tuple[list[str], dict]:
    lines = [
        "## Goal 5: growth of the CNN policy (Pong) with num_envs and with the CNN's width",
        "",
        "Training steps/s, ppokit (`configs/ALE/Pong-v5.yaml`: ALE's C++ vector env) against SB3's "
        "`CnnPolicy` (`make_atari_env` + `VecFrameStack`, the same hyperparameters), one run per point "
        f"(seed {meta['plan']['seeds'][0]}), 4 minibatches per epoch, one torch thread each. Width = the "
        "features of the linear layer after the Nature CNN's convolutions (512 as shipped). `ppokit bf16`: "
        "the same runs with `bf16: true` (the policy's forward passes under bfloat16 autocast; this "
        "CPU has AMX-BF16); its ratio is against SB3 in float32, so it is not the same arithmetic.",
        "",
    ]
    summary = {}
    for group, knob in (("cnn-envs", "num_envs (width 512)"), ("cnn-width", "CNN width (8 envs)")):
        rows = select(jobs, group=group)
        if group == "cnn-width":  # the num_envs=8 point is the width-512 point
            rows += [
                {**j, "x": 512} for j in select(jobs, group="cnn-envs", x=8) if j["label"] != "ppokit bf16"
            ]
        if not rows:
            continue
        bf16 = bool(select(rows, label="ppokit bf16"))  # the num_envs sweep also runs ppokit with bf16
        head = (
            f"| {knob} | load | ppokit steps/s | SB3 steps/s | ratio |"
            + " ppokit bf16 steps/s | ratio |" * bf16
        )
        lines += [head, "|---|---|---|---|---|" + "---|---|" * bf16]
        ratios = {load: [] for load in LOADS}
        for x in sorted({j["x"] for j in rows}):
            for load in LOADS:
                a = next((j["record"] for j in select(rows, x=x, load=load, label="ppokit")), None)
                b = next(
                    (j["record"] for j in select(rows, x=x, load=load, library="stable-baselines3")), None
                )
                if a is None and b is None:
                    continue
                fa, fb = (r.get("fps") if done(r) else None for r in (a, b))
                rv = ratio(Val(fa), Val(fb)) if fa and fb else None
                if rv:
                    ratios[load].append(rv.value)
                cell = lambda r, f: num(f) if f else ((r or {}).get("skipped") or "failed")  # noqa: E731
                rtext = num(rv.value if rv else None, "{:.2f}×")
                row = f"| {x} | {LOAD_NAME[load]} | {cell(a, fa)} | {cell(b, fb)} | {rtext} |"
                if bf16:
                    c = next((j["record"] for j in select(rows, x=x, load=load, label="ppokit bf16")), None)
                    fc = c.get("fps") if c and done(c) else None
                    rc = ratio(Val(fc), Val(fb)) if fc and fb else None
                    row += f" {cell(c, fc)} | {num(rc.value if rc else None, '{:.2f}×')} |"
                lines.append(row)
        lines.append("")
        for load in LOADS:
            rs = ratios[load]
            summary[(group, load)] = f"{min(rs):.2f}–{max(rs):.2f}×" if rs else "-"
    lines += ["![CNN steps/s against num_envs and width](benchmarks/cnn_growth.png)", ""]
    return lines, summary
