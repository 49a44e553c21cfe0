"""Per-rank memory of GRPO under torchrun: ``distributed.strategy`` ddp against fsdp (issue 31, point 6).

Each run is ``torchrun --standalone --nproc_per_node N`` (gloo, CPU, one torch thread per rank) of this
file's ``--worker``: every rank builds the same GPT-2-shape model in code (default: 12 blocks, hidden
768, the 32,768-token character vocabulary of benchmarks/lm_memory.py, ~110M parameters; nothing is
downloaded), builds a GRPOTrainer with a reference model (``kl_coef`` 0.04) and takes ONE step with
tiny generation (a few prompts, ``max_completion_length`` 4). Two measurements per rank:

(a) exact bytes of the tensors this rank holds after the optimizer step: the policy's parameters
    (a sharded parameter's ``to_local()``), their gradients, AdamW's state (``exp_avg``,
    ``exp_avg_sq``, ``step``) and the reference model's parameters; plus the bytes of the whole weights
    the fsdp generation copy holds while it samples (``LMTrainer.generation_model``);
(b) resident set size: the process's lifetime peak (``getrusage(RUSAGE_SELF).ru_maxrss``), the peak of
    the step alone (``VmHWM`` of /proc/self/status after resetting it with ``/proc/self/clear_refs``
    at the step's start), and the RSS before, during and after sampling.

    python benchmarks/bench.py run specs/fsdp_memory.yaml      # every missing run, then the page
    python benchmarks/fsdp_memory.py --report-only             # the page from the committed runs

One JSON file per finished run (``STRATEGY-N.json`` in ``--out``); finished runs are skipped.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import ROOT, launch, provenance, save_json, table_head

OUT = ROOT / "docs" / "fsdp-memory"
PAGE = ROOT / "docs" / "fsdp-memory.md"
MiB = 2**20


def rss_bytes() -> int:
    """The current resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hwm_bytes() -> int:
    """The peak resident set size since the last ``reset_hwm`` (``VmHWM``), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_hwm() -> None:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: ``5`` to /proc/PID/clear_refs, proc(5))."""
    Path("/proc/self/clear_refs").write_text("5")


def nbytes(tensors: Any) -> int:
    """Bytes of the local part of each tensor (a DTensor's shard), a tensor that several names share
    (tied weights) counted once. The elements themselves: FSDP2's padding of a shard to an even
    length (under one row per parameter) is not counted, so the ranks' shards add up to the whole."""
    seen: dict[tuple, int] = {}
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        if local.device.type != "meta":
            seen[(local.data_ptr(), local.shape, local.dtype)] = local.numel() * local.element_size()
    return sum(seen.values())


def unit_bytes(model: Any) -> dict[str, int]:
    """Whole bytes of the largest transformer block and of the rest (the root unit): what fsdp
    gathers at once during forward and backward."""
    from ppokit.llm.sharding import transformer_blocks

    def whole(ps: Any) -> int:
        return sum(p.numel() * p.element_size() for p in ps)

    blocks = transformer_blocks(model)
    inside = {id(p) for b in blocks for p in b.parameters()}
    rest = [p for p in model.parameters() if id(p) not in inside]
    return {"block": max((whole(b.parameters()) for b in blocks), default=0), "root": whole(rest)}


def worker(a: argparse.Namespace) -> None:
    """One rank of one run: build, step, measure; rank 0 writes the record."""
    import torch

    torch.set_num_threads(1)
    from ppokit import distributed
    from ppokit.llm.config import TinyModelConfig
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model

    info = distributed.init("cpu")
    if a.char_vocab:
        tok = build_char_tokenizer()
    else:
        from lm_memory import wide_char_tokenizer

        tok = wide_char_tokenizer(a.vocab)
    shape = TinyModelConfig(n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head, n_positions=64)
    model = build_tiny_model(shape, tok, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    units = unit_bytes(model)
    cfg = GRPOConfig.from_dict(
        dict(
            max_steps=1, prompts_per_step=a.prompts, num_generations=2, kl_coef=0.04, learning_rate=1e-5,
            seed=0, tensorboard=False, distributed={"strategy": a.strategy},
        )
    )  # fmt: skip
    cfg.generation.max_completion_length = a.completion_length
    prompts = [f"{i}+{3 * i + 7}=" for i in range(8 * a.prompts)]
    trainer = GRPOTrainer(model, tok, lambda prompts, completions, **_: [len(c) % 3 for c in completions],
                          prompts, cfg, progress=False)  # fmt: skip
    del model  # trainer.model is the same module (sharded in place under fsdp)
    marks: dict[str, int] = {}
    sample_weights = trainer._generation_weights

    @contextmanager
    def measured() -> Any:  # RSS around sampling, and what the generation copy holds during it
        marks["step_peak_before_sampling"] = hwm_bytes()
        marks["rss_before_sampling"] = rss_bytes()
        reset_hwm()
        with sample_weights():
            gen = trainer.generation_model
            marks["gathered_bytes"] = nbytes(gen.parameters()) if gen is not None else 0
            marks["rss_during_sampling"] = rss_bytes()
            yield
        marks["sampling_peak"] = hwm_bytes()
        marks["rss_after_sampling"] = rss_bytes()

    trainer._generation_weights = measured
    distributed.barrier()
    marks["rss_before_step"] = rss_bytes()
    marks["lifetime_peak_before_step"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reset_hwm()
    trainer.train_step()
    marks["step_peak"] = max(marks["step_peak_before_sampling"], hwm_bytes())
    marks["rss_after_step"] = rss_bytes()
    # what of that RSS is memory the allocator keeps after tensors were freed: glibc's malloc_trim(3)
    # returns free heap memory to the system, so the RSS after it is closer to the live tensors
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    marks["rss_after_trim"] = rss_bytes()
    marks["lifetime_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = [p for p in trainer.model.parameters()]
    state = [t for s in trainer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    row = {
        "rank": info.rank,
        "params": nbytes(params),
        "grads": nbytes(p.grad for p in params if p.grad is not None),
        "optimizer": nbytes(state),
        "reference": nbytes(trainer.ref_model.parameters()) if trainer.ref_model is not None else 0,
        **marks,
    }
    row["total"] = row["params"] + row["grads"] + row["optimizer"] + row["reference"]
    rows = distributed.all_gather_objects(row)
    if info.is_main:
        record = {
            "strategy": a.strategy,
            "ranks": info.world_size,
            "model": {
                "n_layer": a.n_layer,
                "n_embd": a.n_embd,
                "n_head": a.n_head,
                "vocab": len(tok),
                "parameters": n_params,
                "unit_bytes": units,
            },  # fmt: skip
            "step": {
                "prompts_per_step": a.prompts,
                "num_generations": 2,
                "max_completion_length": a.completion_length,
                "kl_coef": 0.04,
            },  # fmt: skip
            "per_rank": rows,
            "load_average_after": os.getloadavg(),
            **provenance(packages=("torch", "transformers")),
        }
        save_json(Path(a.worker), record)
    distributed.shutdown()


def estimate_bytes(a: argparse.Namespace, ranks: int) -> int:
    """A generous guess of the whole run's memory (ddp: every rank holds policy, reference, gradients
    and two Adam moments: 5 x 4 bytes per parameter, plus the build's copies and torch itself)."""
    vocab = 64 if a.char_vocab else a.vocab
    n = a.n_layer * 12 * a.n_embd**2 + vocab * a.n_embd
    return ranks * (6 * 4 * n + 400 * MiB)


def available_bytes() -> int:
    """MemAvailable of /proc/meminfo in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run_all(a: argparse.Namespace) -> None:
    """Every (strategy, ranks) run whose record is missing, one torchrun at a time."""
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for ranks in a.ranks:
        for strategy, mmap in [(s, t) for t in a.mmap_thresholds for s in a.strategies]:
            path = out / f"{strategy}-{ranks}{f'-mmap{mmap}' if mmap else ''}.json"
            env = {"MALLOC_MMAP_THRESHOLD_": str(mmap)} if mmap else {}
            if path.exists():
                print(f"{path}: done, skipped", flush=True)
                continue
            need, have = estimate_bytes(a, ranks), available_bytes()
            if need > have:
                raise SystemExit(f"{strategy} x {ranks}: needs ~{need / 2**30:.1f} GiB, "
                                 f"{have / 2**30:.1f} GiB available; not started")  # fmt: skip
            torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
            shown = path.relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path  # in the command
            args = ["--worker", str(path), "--strategy", strategy, *model_args(a)]
            cmd = [sys.executable, *torchrun, __file__, *args]
            load = os.getloadavg()
            done = launch(cmd, timeout=a.timeout, env=env)
            if done.rc != 0:
                raise SystemExit(f"{strategy} x {ranks} failed ({done.rc}):\n{done.stderr[-3000:]}")
            record = json.loads(path.read_text())
            shown_args = ["--worker", str(shown), *args[2:]]
            command = " ".join([*(f"{k}={v}" for k, v in env.items()), "torchrun", *torchrun[2:],
                                "benchmarks/fsdp_memory.py", *shown_args])  # fmt: skip
            record.update(load_average_before=load, wall_s=round(done.wall_s, 1), command=command)
            record["malloc_mmap_threshold"] = mmap
            save_json(path, record)
            print(f"{path}: {ranks} ranks {strategy} in {done.wall_s:.0f} s", flush=True)


def model_args(a: argparse.Namespace) -> list[str]:
    """The worker's model and step options."""
    return ["--n-layer", str(a.n_layer), "--n-embd", str(a.n_embd), "--n-head", str(a.n_head),
            "--vocab", str(a.vocab), *(["--char-vocab"] if a.char_vocab else []), "--prompts", str(a.prompts),
            "--completion-length", str(a.completion_length)]  # fmt: skip


def mib(x: float) -> str:
    return f"{x / MiB:,.0f}"


def key(r: dict) -> tuple[int, int]:
    """What a run is compared with ddp at: its number of ranks and its allocator setting."""
    return r["ranks"], r.get("malloc_mmap_threshold", 0)


def malloc(r: dict) -> str:
    """The allocator setting of a run, as the tables show it."""
    t = r.get("malloc_mmap_threshold", 0)
    return f"mmap >= {t / MiB:g} MiB" if t else "default"


def table(records: list[dict]) -> list[str]:
    """The page's tables: exact bytes per rank (the largest rank), then resident memory."""
    ddp = {key(r): max(x["total"] for x in r["per_rank"]) for r in records if r["strategy"] == "ddp"}
    lines = table_head("strategy", "ranks", "malloc", "parameters", "reference", "gradients", "AdamW state",
                       "total (MiB)", "ratio to ddp", "gathered while sampling")  # fmt: skip
    for r in records:
        top = max(r["per_rank"], key=lambda x: x["total"])
        ratio = f"{top['total'] / ddp[key(r)]:.3f}" if key(r) in ddp else "-"
        lines.append(
            f"| {r['strategy']} | {r['ranks']} | {malloc(r)} | {mib(top['params'])} | "
            f"{mib(top['reference'])} | "
            f"{mib(top['grads'])} | {mib(top['optimizer'])} | **{mib(top['total'])}** | {ratio} | "
            f"{mib(top['gathered_bytes'])} |"
        )
    rss = ("peak RSS of the step", "lifetime peak RSS (ru_maxrss)", "RSS before sampling", "during sampling")
    after = ("after sampling", "after the step", "after the step and malloc_trim")
    lines += ["", *table_head("strategy", "ranks", "malloc", *rss, *after)]
    for r in records:
        top = max(r["per_rank"], key=lambda x: x["step_peak"])
        lines.append(
            f"| {r['strategy']} | {r['ranks']} | {malloc(r)} | {mib(top['step_peak'])} | "
            f"{mib(top['lifetime_peak'])} | "
            f"{mib(top['rss_before_sampling'])} | {mib(top['rss_during_sampling'])} | "
            f"{mib(top['rss_after_sampling'])} | {mib(top['rss_after_step'])} | "
            f"{mib(top['rss_after_trim'])} |"
        )
    return lines


def report(out: Path, page: Path) -> str:
    """Write the generated part of ``page`` (between the markers) from the records in ``out``."""
    records = sorted((json.loads(p.read_text()) for p in out.glob("*.json")),
                     key=lambda r: (key(r)[1], r["ranks"], r["strategy"]))  # fmt: skip
    if not records:
        raise SystemExit(f"no records in {out}")
    first = records[0]
    m = first["model"]
    gen = [
        f"Generated by `python benchmarks/bench.py report specs/fsdp_memory.yaml` from {len(records)} runs "
        f"in `{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}`. Model: GPT-2 shape, "
        f"{m['n_layer']} blocks, hidden {m['n_embd']}, vocabulary {m['vocab']:,}, **{m['parameters']:,} "
        f"parameters** (float32: {mib(m['parameters'] * 4)} MiB); one block {mib(m['unit_bytes']['block'])} "
        f"MiB, the root unit (embeddings, final norm, tied output layer) {mib(m['unit_bytes']['root'])} MiB. "
        "All figures in MiB, of the rank with the largest value.",
        "",
        *table(records),
        "",
        *sorted(
            {
                f"- Runs of {r['date'][:10]}: commit {r['harness_commit']}; {r['machine']}; {r['versions']}."
                for r in records
            }
        ),  # fmt: skip
        *[
            f"- {r['strategy']} x {r['ranks']}: {r['date']}, {r['wall_s']} s, load average "
            f"{r['load_average_before'][0]:.1f} before / {r['load_average_after'][0]:.1f} after; "
            f"`{r['command']}`"
            for r in records
        ],  # fmt: skip
    ]
    begin, end = "<!-- generated: begin -->", "<!-- generated: end -->"
    text = page.read_text() if page.exists() else f"# Memory per rank\n\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    page.write_text(head + begin + "\n" + "\n".join(gen) + "\n" + end + tail)
    return "\n".join(gen)


def main(argv: list[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help="Run one rank and write the record to this path (internal).")
    p.add_argument("--strategy", choices=("ddp", "fsdp"), help="With --worker.")
    p.add_argument("--strategies", nargs="+", default=["ddp", "fsdp"], choices=("ddp", "fsdp"))
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4], help="Process counts.")
    p.add_argument(
        "--mmap-thresholds",
        type=int,
        nargs="+",
        default=[0],
        help="glibc MALLOC_MMAP_THRESHOLD_ of the ranks, bytes (0: glibc's dynamic default).",
    )
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32768, help="Vocabulary size (lm_memory's wide tokenizer).")
    p.add_argument("--char-vocab", action="store_true", help="The plain character tokenizer instead.")
    p.add_argument("--prompts", type=int, default=2, help="prompts_per_step (x 2 completions).")
    p.add_argument("--completion-length", type=int, default=4, help="max_completion_length.")
    p.add_argument("--timeout", type=float, default=1800.0, help="Seconds per run.")
    p.add_argument("--out", default=str(OUT), help="Folder of the per-run records.")
    p.add_argument("--page", default=str(PAGE), help="The page whose generated part is rewritten.")
    p.add_argument("--report-only", action="store_true", help="Only rewrite the page from the records.")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.worker:
        sys.path.insert(0, str(ROOT / "src"))  # this tree's ppokit, as benchmarks/lm_memory.py does
        return worker(a)
    if not a.report_only:
        run_all(a)
    print(report(Path(a.out), Path(a.page)))


if __name__ == "__main__":
    main()
