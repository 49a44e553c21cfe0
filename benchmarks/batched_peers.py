"""Issue 32: ppokit, rsl_rl and skrl side by side on one of ppokit's batched torch envs; writes
docs/benchmarks_batched.md (``bench.py run specs/batched_peers.yaml``).

Every library trains PPO on the same env (``ppokit/PointMassTorch-v0`` by default: N instances
stepped as torch tensors, ``src/ppokit/rl/torch_envs/``) with the same hyperparameters and the same
network (``SHARED``). ppokit runs in the interpreter that runs this file; rsl_rl (``rsl-rl-lib``) and
skrl run in the peers venv ``benchmarks/.peers`` (``peers/venv.py``, pinned versions), which imports
only ``ppokit.rl.torch_envs`` from this tree (plain torch + Gymnasium). The thin adapters below show
the env to each library the way its users plug in a simulator: ppokit takes the Gymnasium VectorEnv
of tensors as it is, rsl_rl gets its VecEnv interface (``RslRlVecEnv`` with the observation groups as
a TensorDict), skrl a ``Wrapper`` that passes the tensors through.

Measured, identically for every library: the env itself counts steps and finished episodes' returns
(``Recorder``, a few tensor ops per step, one host read per rollout) and stamps the start and the end
of every rollout, so steps/s, the rollout/update split and the return curves come from the same code
whatever the library logs. Two kinds of run, each its own process, timed from its launch:

- ``speed``: steps/s of training at each ``--speed-envs`` count (one seed), counted over whole
  iterations after ``--warmup-iters`` (the first iterations hold one-off costs);
- ``curve``: ``--seeds`` runs at ``--curve-envs`` for ``--curve-steps`` env steps each; seconds from
  the training's start (and from the launch) until the mean return of the last ``num_envs`` finished
  episodes reaches ``--target``.

The libraries' runs are interleaved (a round per env count or seed, the library order rotated each
round) so that a neighbour's load hits all alike; the load average is recorded with every run.
Results: one JSON file per finished run in ``--out`` (a rerun skips them: resumable; a run that
failed or whose library is not installed is tried again), then the page and its figure.

    python benchmarks/bench.py run specs/batched_peers.yaml                 # the published runs
    python benchmarks/bench.py run specs/batched_peers_gpu.yaml             # on a CUDA machine
    python benchmarks/batched_peers.py --report-only                        # the page from --out
"""

from __future__ import annotations

import os
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))  # first, before the slow imports below

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import ROOT, launch  # noqa: E402

PEERS_PY = ROOT / "benchmarks" / ".peers" / "bin" / "python"
LIBRARIES = ("ppokit", "rsl_rl", "skrl")
PACKAGES = {"ppokit": "ppokit", "rsl_rl": "rsl-rl-lib", "skrl": "skrl"}
ENVS = {"point_mass": "PointMassTorch", "pendulum": "PendulumTorch"}  # continuous: rsl_rl is Gaussian-only

# The settings every library gets. Where a library spells a rule differently, the adapters below set
# it to the same rule; the differences that remain are listed in DIFFERENCES (and on the page).
SHARED = {
    "n_steps": 16,  # per env per iteration (rsl_rl num_steps_per_env, skrl rollouts)
    "n_epochs": 5,
    "minibatches": 4,
    "learning_rate": 1e-3,  # constant (no KL-adaptive rate: skrl adapts per epoch, the others per minibatch)
    "adam_eps": 1e-8,  # torch's default, which rsl_rl and skrl use
    "gamma": 0.9,  # Pendulum's usual discount (docs/batched-envs.md's measured Pendulum run)
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "value_coef": 1.0,  # on (V - R)^2 (ppokit's mse is 0.5 (V - R)^2, so its vf_coef is twice this)
    "max_grad_norm": 1.0,
    "hidden": [64, 64],  # separate actor and critic MLPs
    "activation": "elu",
    "init_std": 1.0,  # state-independent log-std parameter, initial std 1
}
DIFFERENCES = [
    "advantages are normalised per minibatch in ppokit and rsl_rl (`normalize_advantage_per_mini_batch`), "
    "over the whole rollout in skrl (it has no per-minibatch option)",
    "time-outs bootstrap with V(s) of the last observation in ppokit (`timeout_bootstrap: value_of_obs`) and "
    "rsl_rl (`extras['time_outs']`); skrl's `time_limit_bootstrap` takes V of the observation the step "
    "returned (after a same-step reset, the next episode's first)",
    "gradient norms are clipped over all parameters in ppokit and skrl, for actor and critic apart in rsl_rl",
    "initial weights: ppokit's orthogonal initialisation (its default), rsl_rl's and skrl's PyTorch defaults",
    "on a CPU ppokit's update uses its hand-written gradient (`manual_grad: auto`), the others autograd",
]


# -- measuring, the same for every library --------------------------------------------------------
class Budget(Exception):
    """Raised by the recorder at a rollout's end once the run's budget is spent (ends any library's loop)."""


class Recorder:
    """Counts env steps and finished episodes' returns on the env's device; every ``period`` steps
    (one rollout) one row ``[env_steps, t_rollout_start, t_rollout_end, episodes, sum_of_returns]``
    (seconds since ``start()``); raises ``Budget`` at a rollout's end once ``max_steps`` are done."""

    def __init__(self, num_envs: int, device, period: int, max_steps: int):
        import torch

        self.torch, self.n, self.period, self.max_steps = torch, num_envs, period, max_steps
        self.ret = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.fin_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.fin_n = torch.zeros((), dtype=torch.long, device=device)
        self.calls, self.rows, self.t0, self.t_begin = 0, [], None, 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def add(self, reward, done) -> None:
        torch = self.torch
        if self.t0 is None:  # steps before training (none of the libraries here takes any)
            return
        if self.calls % self.period == 0:
            self.t_begin = time.perf_counter() - self.t0
        self.ret = self.ret + reward.reshape(-1).double()
        self.fin_sum = self.fin_sum + torch.where(done, self.ret, 0.0).sum()
        self.fin_n = self.fin_n + done.sum()
        self.ret = torch.where(done, 0.0, self.ret)
        self.calls += 1
        if self.calls % self.period == 0:
            n, total = int(self.fin_n), float(self.fin_sum)  # the one host read per rollout
            self.rows.append([self.calls * self.n, round(self.t_begin, 5),
                              round(time.perf_counter() - self.t0, 5), n, total])  # fmt: skip
            self.fin_sum, self.fin_n = self.fin_sum * 0.0, self.fin_n * 0
            if self.calls * self.n >= self.max_steps:
                raise Budget


def make_env(name: str, num_envs: int, device: str, seed: int, recorder: Recorder):
    """ppokit's torch env ``name`` with ``recorder`` watching every step (the env of every library)."""
    import ppokit.rl.torch_envs as torch_envs

    env = getattr(torch_envs, ENVS[name])(num_envs=num_envs, device=device)
    env.reset(seed=seed)
    step = env.step

    def recorded_step(actions):
        out = step(actions)
        recorder.add(out[1], out[2] | out[3])
        return out

    env.step = recorded_step  # an instance attribute: the libraries call env.step as usual
    return env


# -- the three libraries: one training run each, with the thin adapters ---------------------------
def run_ppokit(env, job: dict, recorder: Recorder) -> None:
    """ppokit's ``PPO`` on the Gymnasium VectorEnv of tensors as it is."""
    from ppokit import PPO

    s, n = SHARED, job["num_envs"]
    model = PPO(
        env, num_envs=n, n_steps=s["n_steps"], batch_size=n * s["n_steps"] // s["minibatches"],
        n_epochs=s["n_epochs"], learning_rate=s["learning_rate"], adam_eps=s["adam_eps"], gamma=s["gamma"],
        gae_lambda=s["gae_lambda"], clip_range=s["clip_range"], ent_coef=s["ent_coef"],
        vf_coef=2 * s["value_coef"], max_grad_norm=s["max_grad_norm"], normalize_advantage=True,
        timeout_bootstrap="value_of_obs", init_at_random_ep_len=True, seed=job["seed"], device=job["device"],
        torch_threads=job["threads"], total_timesteps=10**12, tensorboard=False,
        network={"hidden_sizes": s["hidden"], "activation": s["activation"], "log_std_init": 0.0},
    )  # fmt: skip
    if job["compile"]:
        model.policy.compile()  # the update's forward (the rollout uses the policy's no-autograd path)
    recorder.start()
    try:
        model.learn()
    except Budget:
        pass


def run_rsl_rl(env, job: dict, recorder: Recorder) -> None:
    """rsl_rl's ``OnPolicyRunner`` on ``RslRlVecEnv`` (observation groups as the TensorDict it insists on)."""
    import torch
    from rsl_rl.runners import OnPolicyRunner
    from tensordict import TensorDict

    from ppokit.rl.torch_envs import RslRlVecEnv

    class Adapter(RslRlVecEnv):
        def get_observations(self):
            return TensorDict(super().get_observations(), batch_size=[self.num_envs])

    s = SHARED
    mlp = {"class_name": "MLPModel", "hidden_dims": s["hidden"], "activation": s["activation"],
           "obs_normalization": False}  # fmt: skip
    cfg = {
        "num_steps_per_env": s["n_steps"], "save_interval": 10**9, "check_for_nan": True,
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "torch_compile_mode": "default" if job["compile"] else None,
        "algorithm": {
            "class_name": "PPO", "num_learning_epochs": s["n_epochs"], "num_mini_batches": s["minibatches"],
            "clip_param": s["clip_range"], "gamma": s["gamma"], "lam": s["gae_lambda"],
            "value_loss_coef": s["value_coef"], "entropy_coef": s["ent_coef"],
            "learning_rate": s["learning_rate"], "max_grad_norm": s["max_grad_norm"],
            "use_clipped_value_loss": False, "schedule": "fixed", "desired_kl": None,
            "normalize_advantage_per_mini_batch": True,
        },
        "actor": {**mlp, "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": s["init_std"],
                                              "std_type": "log"}},
        "critic": mlp,
    }  # fmt: skip
    torch.manual_seed(job["seed"])
    runner = OnPolicyRunner(Adapter(env, seed=job["seed"]), cfg, log_dir=None, device=job["device"])
    recorder.start()
    try:
        runner.learn(num_learning_iterations=10**9, init_at_random_ep_len=True)
    except Budget:
        pass


def run_skrl(env, job: dict, recorder: Recorder) -> None:
    """skrl's ``PPO`` agent and ``SequentialTrainer`` on a ``Wrapper`` that passes the tensors through."""
    import torch
    from skrl.agents.torch.ppo import PPO, PPO_CFG
    from skrl.envs.wrappers.torch.base import Wrapper
    from skrl.memories.torch import RandomMemory
    from skrl.models.torch import DeterministicMixin, GaussianMixin, Model
    from skrl.trainers.torch import SequentialTrainer

    class Adapter(Wrapper):
        observation_space = property(lambda self: self._env.single_observation_space)
        action_space = property(lambda self: self._env.single_action_space)

        def reset(self):
            return self._obs, {}

        def step(self, actions):
            obs, reward, terminated, truncated, info = self._env.step(actions)
            self._obs = obs
            return obs, reward.view(-1, 1), terminated.view(-1, 1), truncated.view(-1, 1), info

        def state(self):
            return None

        def render(self, *args, **kwargs):
            return None

        def close(self):
            self._env.close()

    s = SHARED

    def body(n_in: int) -> torch.nn.Sequential:
        layers, width = [], n_in
        for h in s["hidden"]:
            layers += [torch.nn.Linear(width, h), torch.nn.ELU()]
            width = h
        return torch.nn.Sequential(*layers)

    class Policy(GaussianMixin, Model):
        def __init__(self, observation_space, action_space, device):
            Model.__init__(
                self, observation_space=observation_space, action_space=action_space, device=device
            )
            GaussianMixin.__init__(
                self, clip_actions=False, clip_log_std=True, min_log_std=-20, max_log_std=2
            )
            self.net = torch.nn.Sequential(
                body(self.num_observations), torch.nn.Linear(s["hidden"][-1], self.num_actions)
            )
            self.log_std = torch.nn.Parameter(torch.full((self.num_actions,), float(torch.log(
                torch.tensor(s["init_std"])))))  # fmt: skip

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {"log_std": self.log_std}

    class Value(DeterministicMixin, Model):
        def __init__(self, observation_space, action_space, device):
            Model.__init__(
                self, observation_space=observation_space, action_space=action_space, device=device
            )
            DeterministicMixin.__init__(self, clip_actions=False)
            self.net = torch.nn.Sequential(body(self.num_observations), torch.nn.Linear(s["hidden"][-1], 1))

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {}

    torch.manual_seed(job["seed"])
    wrapped = Adapter(env)
    wrapped._obs = env._obs()
    # skrl has no option for it: each instance starts at a random step of its time limit, as the
    # others' init_at_random_ep_len does (else all N episodes end in the same step)
    env.episode_length_buf = torch.randint_like(env.episode_length_buf, high=env.max_episode_steps)
    dev = job["device"]
    models = {"policy": Policy(wrapped.observation_space, wrapped.action_space, dev),
              "value": Value(wrapped.observation_space, wrapped.action_space, dev)}  # fmt: skip
    cfg = PPO_CFG(
        rollouts=s["n_steps"], learning_epochs=s["n_epochs"], mini_batches=s["minibatches"],
        discount_factor=s["gamma"], gae_lambda=s["gae_lambda"], learning_rate=s["learning_rate"],
        grad_norm_clip=s["max_grad_norm"], ratio_clip=s["clip_range"], value_clip=0.0,
        entropy_loss_scale=s["ent_coef"], value_loss_scale=s["value_coef"], time_limit_bootstrap=True,
        experiment={"write_interval": 0, "checkpoint_interval": 0, "directory": job["tmp"]},
    )  # fmt: skip
    memory = RandomMemory(memory_size=s["n_steps"], num_envs=job["num_envs"], device=dev)
    agent = PPO(models=models, memory=memory, observation_space=wrapped.observation_space,
                action_space=wrapped.action_space, device=dev, cfg=cfg)  # fmt: skip
    trainer = SequentialTrainer(env=wrapped, agents=agent,
                                cfg={"timesteps": 10**12, "headless": True, "disable_progressbar": True,
                                     "close_environment_at_exit": False})  # fmt: skip
    recorder.start()
    try:
        trainer.train()
    except Budget:
        pass


RUNNERS = {"ppokit": run_ppokit, "rsl_rl": run_rsl_rl, "skrl": run_skrl}


def one_run(job: dict) -> dict:
    """Train once as ``job`` says (in this process) and return the record."""
    import torch
    from common import provenance

    torch.set_num_threads(job["threads"])
    n = job["num_envs"]
    recorder = Recorder(n, job["device"], SHARED["n_steps"], job["steps"])
    env = make_env(job["env"], n, job["device"], job["seed"], recorder)
    started = time.time()
    RUNNERS[job["library"]](env, job, recorder)
    rows = recorder.rows
    record = {
        **job,
        **provenance(ROOT / "src", ("torch", PACKAGES[job["library"]], "tensordict", "gymnasium", "numpy")),
        "rows": rows, "train_start_offset_s": round(started - T0, 4),
        "torch_threads_seen": torch.get_num_threads(),
    }  # fmt: skip
    w = job["warmup_iters"]
    if len(rows) > w + 1:
        (s0, _, t0, _, _), (s1, _, t1, _, _) = rows[w], rows[-1]
        record["steps_per_s"] = (s1 - s0) / (t1 - t0)
        rollout = sum(r[2] - r[1] for r in rows[w + 1 :])
        record["rollout_share"] = rollout / (t1 - t0)  # the rest: the update, GAE and bookkeeping
    return record


# -- the plan, the runs, the page -----------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--libraries", nargs="*", default=list(LIBRARIES), choices=LIBRARIES)
    p.add_argument("--env", default="pendulum", choices=sorted(ENVS))
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ...")
    p.add_argument("--compile", default="off", choices=["off", "on", "both"],
                   help="torch.compile: ppokit's policy forward, rsl_rl's own option.")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run.")
    p.add_argument("--speed-envs", nargs="*", type=int, default=[256, 1024, 4096])
    p.add_argument(
        "--speed-iters", type=int, default=12, help="Iterations of a speed run (warm-up included)..."
    )
    p.add_argument(
        "--speed-min-steps", type=int, default=300_000, help="... and at least this many env steps."
    )
    p.add_argument("--warmup-iters", type=int, default=2, help="Iterations left out of steps/s.")
    p.add_argument("--curve-envs", type=int, default=1024)
    p.add_argument("--curve-steps", type=int, default=1_500_000, help="Env steps of a return-curve run.")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--target", type=float, default=-200.0, help="Return the curve runs are timed to.")
    p.add_argument("--peers", type=Path, default=PEERS_PY, help="The peers venv's python (rsl_rl, skrl).")
    p.add_argument("--no-install", action="store_true", help="Never pip-install the peers.")
    p.add_argument("--timeout-s", type=float, default=900.0, help="Wall-clock limit of one run.")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "batched_peers")
    p.add_argument("--page", type=Path, default=ROOT / "docs" / "benchmarks_batched.md")
    p.add_argument("--dry-run", action="store_true", help="Print the runs, run nothing.")
    p.add_argument("--report-only", action="store_true", help="Only rewrite the page from --out.")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run's job (JSON), the record to stdout
    return p.parse_args(argv)


def plan(a: argparse.Namespace) -> list[dict]:
    """Every run, in the order they run: a round per (kind, env count or seed), libraries rotated."""
    compiles = {"off": [False], "on": [True], "both": [False, True]}[a.compile]
    rounds = [("speed", n, a.seeds[0] if a.seeds else 0) for n in a.speed_envs]
    rounds += [("curve", a.curve_envs, s) for s in a.seeds]
    jobs = []
    for i, (kind, n, seed) in enumerate(rounds):
        k = i % len(a.libraries)
        for lib in a.libraries[k:] + a.libraries[:k]:
            for comp in compiles if lib != "skrl" else [False]:  # skrl has no compile option
                per_iter = n * SHARED["n_steps"]
                iters = max(a.speed_iters, -(-a.speed_min_steps // per_iter))
                steps = iters * per_iter if kind == "speed" else a.curve_steps
                name = f"{kind}-{lib}{'-compiled' if comp else ''}-{a.device.replace(':', '')}-n{n}-s{seed}"
                jobs.append({"name": name, "kind": kind, "library": lib, "num_envs": n, "seed": seed,
                             "steps": steps, "env": a.env, "device": a.device, "compile": comp,
                             "threads": a.threads, "warmup_iters": a.warmup_iters})  # fmt: skip
    return jobs


def peer_ok(python: Path, library: str) -> bool:
    """Whether ``python`` imports ``library`` (and torch, tensordict for rsl_rl)."""
    if not python.exists():
        return False
    code = {"rsl_rl": "import rsl_rl, tensordict, torch", "skrl": "import skrl.agents.torch.ppo, torch"}[
        library
    ]
    return subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


def run_all(a: argparse.Namespace) -> None:
    """Run the runs that have no finished record yet (resumable), one process each."""
    jobs = plan(a)
    todo = [j for j in jobs if not done(a.out / f"{j['name']}.json")]
    print(f"{len(todo)} of {len(jobs)} runs to do; results in {a.out}", flush=True)
    if a.dry_run:
        for j in todo:
            print(f"  {j['name']}: {j['steps']:,} env steps")
        return
    peers_needed = {j["library"] for j in todo} - {"ppokit"}
    if peers_needed and not a.no_install:
        from peers.venv import ensure_batched_peers

        ensure_batched_peers(a.peers)
    have = {"ppokit": True, **{lib: peer_ok(a.peers, lib) for lib in peers_needed}}
    a.out.mkdir(parents=True, exist_ok=True)
    for i, job in enumerate(todo, 1):
        path = a.out / f"{job['name']}.json"
        lib = job["library"]
        if not have[lib]:
            write(path, {**job, "skipped": f"not installed: {PACKAGES[lib]} in {a.peers}"})
            print(f"[{i}/{len(todo)}] {job['name']}: skipped ({PACKAGES[lib]} not installed)", flush=True)
            continue
        python = sys.executable if lib == "ppokit" else str(a.peers)
        job = {**job, "tmp": str(a.out / ".tmp")}
        load_before = os.getloadavg()
        path_env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        res = launch([python, __file__, "--one", json.dumps(job)], timeout=a.timeout_s, env=path_env)
        rec = {**job, "rc": res.rc, "process_wall_s": res.wall_s, "cpu_s": res.cpu_s,
               "loadavg_before": load_before, "loadavg_after": os.getloadavg()}  # fmt: skip
        if res.rc == 0:
            rec.update(json.loads(res.stdout.strip().splitlines()[-1]))
        else:
            rec["error"] = (res.stderr or res.stdout)[-3000:]
        write(path, rec)
        fps = rec.get("steps_per_s")
        print(f"[{i}/{len(todo)}] {job['name']}: rc={res.rc} wall {res.wall_s:.1f}s "
              f"steps/s {fps or 0:,.0f} load {load_before[0]:.2f}", flush=True)  # fmt: skip


def done(path: Path) -> bool:
    """A finished run's record exists (failed and not-installed runs are tried again)."""
    try:
        return json.loads(path.read_text()).get("rc") == 0
    except (OSError, ValueError):
        return False


def write(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    a.out, a.page = (p if p.is_absolute() else ROOT / p for p in (a.out, a.page))  # relative: to ROOT
    if a.one:
        print(json.dumps(one_run(json.loads(a.one))))
        return 0
    if not a.report_only:
        run_all(a)
        if a.dry_run:
            return 0
    from batched_peers_report import report

    import ppokit.rl.torch_envs as torch_envs

    steps = {key: getattr(torch_envs, name).max_episode_steps for key, name in ENVS.items()}
    text = report(a.out, a.page, a.target, SHARED, DIFFERENCES, ENVS, steps)
    a.page.parent.mkdir(parents=True, exist_ok=True)
    a.page.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
