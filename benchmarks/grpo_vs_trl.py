"""GRPO side by side: ppokit's GRPOTrainer and TRL's GRPOTrainer on the same tiny model and task.

Same model weights (a tiny GPT-2 built in code and warm-started on addition, saved to a local
directory), same prompts in the same order, same G, lengths, beta, learning rate, loss aggregation,
optimiser and number of steps. Each engine runs in its own process; ppokit in this repository's
``.venv``, TRL in ``benchmarks/.peers`` (install with
``python3 -m venv benchmarks/.peers && benchmarks/.peers/bin/pip install -c constraints.txt trl``).
Nothing is downloaded: the model, tokenizer and prompts are made here.

    .venv/bin/python benchmarks/grpo_vs_trl.py --steps 100          # both engines, then the report
    .venv/bin/python benchmarks/grpo_vs_trl.py --engine ppokit ...   # one engine (used internally)

Writes ``benchmarks/out/grpo/{ppokit,trl}.json``, ``report.md`` and ``rewards.png``. Measured: seconds
per GRPO step (generation + scoring + update), completion tokens (up to and including EOS) per
second, the reward curve, and held-out greedy accuracy after training (evaluated by the same code
for both models).

On a GPU (specs/grpo_fsdp_gpu.yaml, issue 31 point 7): ``--shape qwen2`` builds a randomly initialised
Qwen2 model from a config in code (``--hidden --layers --heads --kv-heads --intermediate --vocab``;
Qwen2-0.5B's shape by default, its vocabulary as characters: nothing is downloaded), ``--device
cuda``, ``--bf16`` (both engines: bf16 autocast over float32 master weights) and ``--strategy fsdp``
(ppokit's FSDP2 path on a process group of one); each engine's record then holds its peak
``torch.cuda.max_memory_allocated``. ``--device cuda`` without CUDA is refused in one line.
``--smoke`` is the CPU dry run of the same code at a tiny size (2 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the peers' venv has no ppokit installed; tasks.py is plain torch
from common import launch, pyplot, save_figure, table_head  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "grpo"
# Qwen2-0.5B's shape (its config.json on the hub: hidden 896, 24 layers, 14 query and 2 key/value heads,
# MLP 4864, vocabulary 151,936, tied embeddings); --shape qwen2 builds it from these numbers
QWEN2_05B = {"hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2, "intermediate": 4864, "vocab": 151936}
# --smoke: the same code at CI size on the CPU (the character vocabulary: --vocab 0), 2 steps of 4 x 4
SMOKE = {"hidden": 64, "layers": 2, "heads": 2, "kv_heads": 1, "intermediate": 128, "vocab": 0}
SMOKE_RUN = {"num_generations": 4, "prompts_per_step": 4, "max_completion_length": 8, "steps": 2, "rounds": 1}

# The settings both engines share. loss_type "grpo" and beta 0.04 are ppokit's defaults; TRL's
# defaults differ (dapo, 0.0) so they are set explicitly on both sides.
SHARED = {
    "num_generations": 8,
    "prompts_per_step": 16,
    "max_completion_length": 8,
    "beta": 0.04,
    "learning_rate": 1e-4,
    "loss_type": "grpo",
    "epsilon": 0.2,
    "temperature": 1.0,
    "reward_weights": [1.0, 0.5],
    "max_grad_norm": 1.0,
    "seed": 0,
}


def prepare(out: Path, warm_steps: int) -> None:
    """Build the tiny model + tokenizer, warm-start it, save it, and write the prompt order."""
    import torch

    from ppokit.llm.config import TinyModelConfig
    from ppokit.llm.grpo_config import GRPO_PRESETS as PRESETS
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model, save_pretrained
    from ppokit.llm.tasks import addition_task, warm_start

    torch.manual_seed(0)
    task = addition_task(digits=2, seed=0, num_eval=200)
    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig.from_dict(PRESETS["addition"]["tiny_model"]), tok, seed=0)
    warm_start(model, tok, task.train_rows, warm_steps, 64, 1e-3, seed=0)
    save_pretrained(model, tok, out / "model")
    (out / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in task.train_rows))
    (out / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in task.eval_rows))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def prepare_qwen2(out: Path, shape: dict) -> None:
    """A randomly initialised Qwen2 model of ``shape`` built from a config (no download, no warm start:
    the throughput and memory of GRPO do not depend on what the weights know), its character tokenizer
    (``vocab`` 0: ppokit's; else the wide one of benchmarks/lm_memory.py) and the addition prompts."""
    from lm_memory import save_qwen2, wide_char_tokenizer

    from ppokit.llm.models import build_char_tokenizer
    from ppokit.llm.tasks import addition_task

    tok = build_char_tokenizer() if not shape["vocab"] else wide_char_tokenizer(shape["vocab"])
    model = save_qwen2(
        out / "model", tok, hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"], max_position_embeddings=1024, tie_word_embeddings=True,
    )  # fmt: skip
    task = addition_task(digits=2, seed=0, num_eval=200)
    (out / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in task.train_rows))
    (out / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in task.eval_rows))
    n = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2 shape {shape}, {n / 1e6:.1f}M parameters (tied embeddings)", flush=True)


def _settings(out: Path) -> dict:
    """The settings both engines run with (SHARED and the command line's, written by ``main``)."""
    return json.loads((out / "settings.json").read_text())


def _ordered_prompts(out: Path, steps: int) -> list[dict]:
    # Both engines see exactly these prompts in this order (TRL's shuffling is switched off).
    rows = _rows(out / "prompts.jsonl")
    return rows[: steps * _settings(out)["prompts_per_step"]]


def peak_gpu(device: str) -> dict:
    """The process's peak CUDA memory so far (allocated by tensors, and reserved by the caching
    allocator), in bytes; empty on the CPU."""
    import torch

    if not device.startswith("cuda"):
        return {}
    return {
        "peak_gpu_allocated": torch.cuda.max_memory_allocated(),
        "peak_gpu_reserved": torch.cuda.max_memory_reserved(),
        "gpu": torch.cuda.get_device_name(),
    }


def run_ppokit(out: Path, steps: int) -> dict:
    """ppokit's GRPOTrainer; per-step wall time, completion tokens and rewards."""
    import torch

    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.models import load_pretrained
    from ppokit.llm.tasks import digit_match, exact_match

    model, tok = load_pretrained(out / "model")
    s = _settings(out)
    cfg = GRPOConfig.from_dict(
        {
            "device": s["device"],
            "bf16": s["bf16"],
            "distributed": {"strategy": s["strategy"]},
            "max_steps": steps,
            "prompts_per_step": s["prompts_per_step"],
            "num_generations": s["num_generations"],
            "kl_coef": s["beta"],
            "learning_rate": s["learning_rate"],
            "loss_type": s["loss_type"],
            "clip_range": s["epsilon"],
            "reward_weights": s["reward_weights"],
            "max_grad_norm": s["max_grad_norm"],
            "seed": s["seed"],
            "tensorboard": False,
            "generation": {
                "max_completion_length": s["max_completion_length"],
                "temperature": s["temperature"],
            },
        }
    )
    trainer = GRPOTrainer(
        model, tok, [exact_match, digit_match], _ordered_prompts(out, steps), cfg, progress=False
    )
    trainer.order = torch.arange(len(trainer.rows))  # the shared order, no shuffle
    records = []
    for _ in range(steps):
        m = trainer.train_step()
        records.append(
            {
                "step_time": m["step_time"],
                "completion_tokens": m["completions/mean_length"] * cfg.batch_size,
                "reward": m["reward"],
            }
        )
    if s["accuracy"]:  # a sharded (fsdp) model has no plain save_pretrained; accuracy is off then
        model.save_pretrained(out / "ppokit-model")
        tok.save_pretrained(out / "ppokit-model")
    # what ran, as the trainer saw it (tests/test_grpo_fsdp_gpu.py checks that fsdp really sharded)
    ran = {"sharded": trainer.sharded, "device": str(trainer.device)}
    return {"engine": "ppokit", "records": records, **ran, **peak_gpu(s["device"])}


def run_trl(out: Path, steps: int) -> dict:
    """TRL's GRPOTrainer with the same settings; step times from a callback around each step."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from ppokit.llm.tasks import digit_match, exact_match

    s = _settings(out)
    tok = AutoTokenizer.from_pretrained(out / "model", local_files_only=True)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(out / "model", local_files_only=True)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    args = trl.GRPOConfig(
        output_dir=str(out / "trl-tmp"),
        max_steps=steps,
        per_device_train_batch_size=s["prompts_per_step"] * s["num_generations"],
        num_generations=s["num_generations"],
        max_completion_length=s["max_completion_length"],
        beta=s["beta"],
        learning_rate=s["learning_rate"],
        loss_type=s["loss_type"],
        epsilon=s["epsilon"],
        temperature=s["temperature"],
        reward_weights=s["reward_weights"],
        max_grad_norm=s["max_grad_norm"],
        seed=s["seed"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        use_cpu=s["device"] == "cpu",  # else transformers' own device: the one GPU (no sharding)
        bf16=s["bf16"],
        gradient_checkpointing=False,  # TRL 1.x turns it on by default; ppokit does not recompute activations
        shuffle_dataset=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        scale_rewards="group",
        top_p=1.0,
        top_k=0,
        num_iterations=1,
    )
    dataset = Dataset.from_list(_ordered_prompts(out, steps))
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=[exact_match, digit_match],
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[Timer()],
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    batch = s["prompts_per_step"] * s["num_generations"]
    records = [
        {"step_time": t, "completion_tokens": h["completions/mean_length"] * batch, "reward": h["reward"]}
        for t, h in zip(times, logs)
    ]
    if s["accuracy"]:
        trainer.save_model(str(out / "trl-model"))
        tok.save_pretrained(out / "trl-model")
    return {"engine": "trl", "trl_version": trl.__version__, "records": records, **peak_gpu(s["device"])}


def accuracy(model_dir: Path, eval_rows: list[dict]) -> float:
    """Held-out greedy exact match, the same evaluator for both engines' models."""
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.models import load_pretrained
    from ppokit.llm.tasks import addition_task, digit_match, exact_match

    model, tok = load_pretrained(model_dir)
    cfg = GRPOConfig.from_dict(
        {"kl_coef": 0.0, "generation": {"max_completion_length": SHARED["max_completion_length"]}}
    )
    trainer = GRPOTrainer(
        model,
        tok,
        [exact_match, digit_match],
        eval_rows,
        cfg,
        eval_prompts=eval_rows,
        accuracy_fn=addition_task(2, num_eval=1).accuracy_fn,
        progress=False,
    )
    return trainer.evaluate()[0]["eval/accuracy"]


def _mean(xs: list[float]) -> float:
    return sum(xs) / max(len(xs), 1)


def summarise(result: dict, skip: int) -> dict:
    """Seconds per step and completion tokens per second, leaving out ``skip`` warm-up steps.

    Both as totals (tokens / seconds) and as medians over steps: on a CPU shared with other jobs a
    few stalled steps move the totals a lot and the medians little.
    """
    recs = result["records"][skip:]
    seconds = sum(r["step_time"] for r in recs)
    tokens = sum(r["completion_tokens"] for r in recs)
    per_step = sorted(r["step_time"] for r in recs)
    rates = sorted(r["completion_tokens"] / r["step_time"] for r in recs)
    return {
        "sec_per_step": seconds / len(recs),
        "tokens_per_s": tokens / seconds,
        "median_sec_per_step": per_step[len(per_step) // 2],
        "median_tokens_per_s": rates[len(rates) // 2],
        "steps_timed": len(recs),
        "reward_first10": _mean([r["reward"] for r in result["records"][:10]]),
        "reward_last10": _mean([r["reward"] for r in result["records"][-10:]]),
    }


def _gib(result: dict) -> str:
    return f"{result['peak_gpu_allocated'] / 2**30:.2f}" if "peak_gpu_allocated" in result else "-"


def report(out: Path, skip: int, rounds: int, engines: tuple[str, ...] = ("ppokit", "trl")) -> str:
    """Compare the JSON results: a markdown table (printed and saved) and the reward plot."""
    eval_rows = _rows(out / "eval.jsonl")
    s = _settings(out)
    lines = [
        f"settings: {json.dumps(s)}\n",
        *table_head(
            "round | engine | s / step | completion tokens / s | median s / step | median tokens / s "
            "| mean reward, first 10 steps | last 10 steps | peak GPU memory allocated (GiB)"
        ),
    ]
    ratios, curves = [], {}
    for r in range(rounds):
        res = {e: json.loads((out / f"{e}-r{r}.json").read_text()) for e in engines}
        for engine, result in res.items():
            m = result["summary"] = summarise(result, skip)
            curves.setdefault(engine, [x["reward"] for x in result["records"]])
            lines.append(
                f"| {r + 1} | {engine} | {m['sec_per_step']:.3f} | {m['tokens_per_s']:.0f} | "
                f"{m['median_sec_per_step']:.3f} | {m['median_tokens_per_s']:.0f} | "
                f"{m['reward_first10']:.3f} | {m['reward_last10']:.3f} | {_gib(result)} |"
            )
        if "trl" in res:
            p, t = res["ppokit"]["summary"], res["trl"]["summary"]
            ratios.append(
                (p["tokens_per_s"] / t["tokens_per_s"], p["median_tokens_per_s"] / t["median_tokens_per_s"])
            )
    if "trl" not in engines:  # said, never left to look like a comparison
        lines.append("\nTRL: not installed (no benchmarks/.peers python); ppokit only")
    if ratios:
        lines.append(
            "\nppokit / TRL completion tokens per second, per round (totals; medians): "
            + ", ".join(f"**{a:.2f}x**; {b:.2f}x" for a, b in ratios)
        )
    if s["accuracy"]:
        lines.append("\n| model | held-out greedy exact match (200 prompts) |\n|---|---|")
        lines.append(f"| warm-started model, before GRPO | {accuracy(out / 'model', eval_rows):.3f} |")
        for engine in engines:
            lines.append(
                f"| after {engine} GRPO (last round) | {accuracy(out / f'{engine}-model', eval_rows):.3f} |"
            )
    else:
        lines.append("\nHeld-out accuracy: not measured (a randomly initialised model, or fsdp)")
    fig, ax = pyplot().subplots(figsize=(8, 4))
    for engine, curve in curves.items():
        ax.plot(curve, label=engine, linewidth=1.2)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward of the sampled completions")
    ax.set_title("GRPO on addition: same model, prompts and settings (round 1)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "rewards.png", dpi=110)
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def settings(a: argparse.Namespace) -> dict:
    """SHARED with the command line's changes, and where and how the engines run."""
    s = dict(SHARED)
    for key in ("num_generations", "prompts_per_step", "max_completion_length", "learning_rate"):
        if getattr(a, key):
            s[key] = getattr(a, key)
    shape = {k: getattr(a, k) for k in QWEN2_05B} if a.shape == "qwen2" else "tiny-gpt2"
    # accuracy needs each engine's trained model saved whole: the warm-started tiny model, not sharded
    accuracy = a.shape == "tiny-gpt2" and a.strategy == "ddp"
    return {
        **s,
        "device": a.device,
        "bf16": a.bf16,
        "strategy": a.strategy,
        "shape": shape,
        "accuracy": accuracy,
    }


def main(argv: list[str] | None = None) -> None:
    """Both engines in turn, ``--rounds`` times, then the report (``--engine``: one run, internal)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="GRPO steps per engine.")
    p.add_argument(
        "--warm-steps", type=int, default=300, help="Supervised warm-start steps of the shared model."
    )
    p.add_argument("--skip", type=int, default=3, help="Warm-up steps left out of the timing.")
    p.add_argument("--engine", choices=("ppokit", "trl"), help="Run one engine only (internal).")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    p.add_argument(
        "--rounds", type=int, default=2, help="Alternate ppokit/TRL this many times (shared CPUs)."
    )
    p.add_argument("--tag", default="", help="Suffix of the result file (internal).")
    p.add_argument(
        "--trl-python",
        default=str(ROOT / "benchmarks" / ".peers" / "bin" / "python"),
        help="Python of the venv with TRL.",
    )
    p.add_argument("--out", default=str(OUT), help="Folder of the model, prompts, results and report.")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="Where both engines train.")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast, float32 master weights (both).")
    p.add_argument(
        "--strategy", default="ddp", choices=("ddp", "fsdp"), help="ppokit's distributed.strategy."
    )
    p.add_argument("--shape", default="tiny-gpt2", choices=("tiny-gpt2", "qwen2"), help="The shared model.")
    for key, value in QWEN2_05B.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=value, help=f"qwen2: default {value}.")
    p.add_argument("--num-generations", type=int, default=0, help=f"G (0: {SHARED['num_generations']}).")
    p.add_argument("--prompts-per-step", type=int, default=0, help=f"0: {SHARED['prompts_per_step']}.")
    p.add_argument(
        "--max-completion-length", type=int, default=0, help=f"0: {SHARED['max_completion_length']}."
    )
    p.add_argument("--learning-rate", type=float, default=0.0, help=f"0: {SHARED['learning_rate']}.")
    p.add_argument("--smoke", action="store_true", help="CPU dry run: tiny qwen2 shape, 2 steps, 1 round.")
    p.add_argument("--engines", default="ppokit,trl", help="Comma-separated subset of ppokit,trl.")
    a = p.parse_args(argv)
    if a.smoke:  # the same code at CI size on the CPU
        vars(a).update(SMOKE, **SMOKE_RUN, device="cpu", skip=0, warm_steps=0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():  # before anything is built or written
        why = (
            "no CUDA device is present here (torch.cuda.is_available() is False); --smoke is the CPU dry run"
        )
        print(f"grpo_vs_trl: --device cuda: {why}", file=sys.stderr)
        raise SystemExit(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.engine:
        result = (run_ppokit if a.engine == "ppokit" else run_trl)(out, a.steps)
        (out / f"{a.engine}{a.tag}.json").write_text(json.dumps(result))
        return
    engines = tuple(e for e in a.engines.split(",") if e)
    if set(engines) - {"ppokit", "trl"} or "ppokit" not in engines:
        print(f"grpo_vs_trl: --engines {a.engines!r}: give ppokit, optionally with trl", file=sys.stderr)
        raise SystemExit(2)
    if "trl" in engines and not Path(a.trl_python).exists():
        print(f"TRL: not installed ({a.trl_python} missing); running ppokit only", flush=True)
        engines = ("ppokit",)
    print(f"load average before: {os.getloadavg()}", flush=True)
    s = settings(a)
    (out / "settings.json").write_text(json.dumps(s))
    if a.shape == "qwen2":
        prepare_qwen2(out, s["shape"])
    else:
        prepare(out, a.warm_steps)
    common = ["--steps", str(a.steps), "--threads", str(a.threads), "--out", str(out)]
    for r in range(a.rounds):  # alternate, so a neighbour's load hits both engines alike
        for python, engine in ((sys.executable, "ppokit"), (a.trl_python, "trl")):
            if engine in engines:
                launch([python, __file__, "--engine", engine, f"--tag=-r{r}", *common], check=True)
    print(report(out, a.skip, a.rounds, engines))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
