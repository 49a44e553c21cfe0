"""Peak memory of one GRPO step: ppokit against TRL on the same code-built model and batch.

A Qwen2-style model with a 32,768-token vocabulary (so that the ``[B, L, V]`` float32 logits are what
dominates), built in code and saved to ``benchmarks/out/lm_memory/model`` with a WordLevel tokenizer
of the same size; nothing is downloaded. Each run is one fresh process that loads the model, builds
the trainer and takes ONE training step (generation, scoring, reference and policy log-probs,
backward, optimizer step); it reports the peak resident set size (``getrusage`` max RSS) and the
RSS just before the step. ppokit runs in this repository's venv, TRL in ``benchmarks/.peers``
(``python3 -m venv benchmarks/.peers && benchmarks/.peers/bin/pip install -c constraints.txt trl``).

    .venv/bin/python benchmarks/lm_memory.py            # every variant, alternating, then the table
    .venv/bin/python benchmarks/lm_memory.py --run ppokit   # one run (used internally)

Variants: ``ppokit`` (defaults: chunked log-probs), ``ppokit-unchunked`` (``logprob_chunk_size=0``:
the full logits, as before this change), ``trl``; and for LoRA, ``ppokit-lora`` (reference = the
adapter-disabled policy) against ``ppokit-lora-copyref`` (a full frozen copy as reference).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from common import launch, table_head

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "lm_memory"
VOCAB = 32768
SHARED = {
    "num_generations": 4,
    "prompts": 8,  # x 4 completions = a batch of 32
    "max_completion_length": 128,
    "beta": 0.04,
    "learning_rate": 1e-5,
    "loss_type": "grpo",
    "seed": 0,
}
VARIANTS = ("ppokit", "ppokit-unchunked", "trl", "ppokit-lora", "ppokit-lora-copyref")


def rss_mb() -> float:
    """The current resident set size in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wide_char_tokenizer(vocab: int = VOCAB) -> Any:
    """ppokit's character tokenizer (a PreTrainedTokenizerFast, one token per character) with CJK and
    Hangul characters added until the vocabulary has ``vocab`` tokens (also benchmarks/fsdp_memory.py),
    then the private-use planes 15 and 16, so that up to ~170,000 tokens can be had (Qwen2's 151,936:
    benchmarks/grpo_vs_trl.py); the first tokens are the same whatever ``vocab`` is."""
    sys.path.insert(0, str(ROOT / "src"))
    from ppokit.llm.models import DEFAULT_CHARS, build_char_tokenizer

    ranges = ((0x4E00, 0xA000), (0xAC00, 0xD7A4), (0x3400, 0x4DC0), (0xF0000, 0xFFFFE), (0x100000, 0x10FFFE))
    extra = [chr(c) for r in ranges for c in range(*r)]
    tok = build_char_tokenizer(DEFAULT_CHARS + "".join(extra[: vocab - 4 - len(DEFAULT_CHARS)]))
    assert len(tok) == vocab, len(tok)
    return tok


def save_qwen2(out_dir: Path, tok: Any, **shape: Any) -> Any:
    """A randomly initialised (seed 0) ``Qwen2ForCausalLM`` with ``tok``'s vocabulary and the given
    ``Qwen2Config`` fields (``hidden_size``, ...), saved with ``tok`` to ``out_dir``; returns the model
    (also benchmarks/grpo_vs_trl.py)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **shape,
    )  # fmt: skip
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return model


def prepare(out: Path) -> None:
    """Build and save the model and its tokenizer (a WordLevel vocabulary of VOCAB tokens)."""
    save_qwen2(
        out / "model", wide_char_tokenizer(VOCAB), hidden_size=256, intermediate_size=1024,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        tie_word_embeddings=False,
    )  # fmt: skip
    # ASCII prompts: transformers 5 loads this directory's tokenizer as a Qwen2Tokenizer, whose
    # pre-tokenizer drops the added CJK characters from text (they are still sampled as tokens)
    prompts = [f"{i}+{3 * i + 7}=" * 4 for i in range(SHARED["prompts"])]
    (out / "prompts.json").write_text(json.dumps(prompts))


def reward(prompts, completions, **_):
    """Deterministic and varied, so groups have non-zero advantages."""
    return [float(len(c) % 7) for c in completions]


def run_ppokit(out: Path, variant: str) -> dict:
    """One ppokit GRPO step."""
    sys.path.insert(0, str(ROOT / "src"))
    from ppokit.llm.grpo import GRPOTrainer
    from ppokit.llm.grpo_config import GRPOConfig
    from ppokit.llm.models import load_pretrained

    s = SHARED
    cfg = GRPOConfig(
        max_steps=1, prompts_per_step=s["prompts"], num_generations=s["num_generations"], kl_coef=s["beta"],
        learning_rate=s["learning_rate"], loss_type=s["loss_type"], seed=s["seed"], tensorboard=False,
        max_completion_length=s["max_completion_length"], max_prompt_length=64,
        logprob_chunk_size=0 if variant == "ppokit-unchunked" else 1024,
        use_peft=variant.startswith("ppokit-lora"), lora_r=8, lora_dropout=0.0,
    )  # fmt: skip
    model, tok = load_pretrained(out / "model")
    prompts = json.loads((out / "prompts.json").read_text())
    ref = None
    if variant == "ppokit-lora-copyref":  # the old way: a full frozen copy of the model as reference
        ref = copy.deepcopy(model)
    trainer = GRPOTrainer(model, tok, reward, prompts, cfg, ref_model=ref, progress=False)
    before, peak_before = rss_mb(), peak_mb()
    start = time.perf_counter()
    metrics = trainer.train_step()
    return {
        "seconds": time.perf_counter() - start,
        "rss_before_mb": before,
        "peak_before_mb": peak_before,
        "peak_mb": peak_mb(),
        "mean_length": metrics["completions/mean_length"],
    }


def run_trl(out: Path) -> dict:
    """One TRL GRPO step with the same settings (fp32, no gradient checkpointing, whole batch at once)."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    s = SHARED
    tok = AutoTokenizer.from_pretrained(out / "model", local_files_only=True)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(out / "model", local_files_only=True, dtype="float32")
    marks: dict = {}

    class Mark(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            marks.setdefault("rss_before_mb", rss_mb())
            marks.setdefault("peak_before_mb", peak_mb())
            marks.setdefault("start", time.perf_counter())

    batch = s["prompts"] * s["num_generations"]
    args = trl.GRPOConfig(
        output_dir=str(out / "trl-tmp"), max_steps=1, per_device_train_batch_size=batch,
        num_generations=s["num_generations"], max_completion_length=s["max_completion_length"],
        beta=s["beta"], learning_rate=s["learning_rate"], loss_type=s["loss_type"], seed=s["seed"],
        use_cpu=True, bf16=False, gradient_checkpointing=False, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, shuffle_dataset=False, temperature=1.0, top_p=1.0, top_k=0,
    )  # fmt: skip
    prompts = json.loads((out / "prompts.json").read_text())
    dataset = Dataset.from_list([{"prompt": p} for p in prompts])
    trainer = trl.GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tok,
        callbacks=[Mark()],
    )  # fmt: skip
    trainer.train()
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    return {
        "seconds": time.perf_counter() - marks["start"],
        "rss_before_mb": marks["rss_before_mb"],
        "peak_before_mb": marks["peak_before_mb"],
        "peak_mb": peak_mb(),
        "mean_length": logs[-1]["completions/mean_length"] if logs else None,
        "trl_version": trl.__version__,
    }


def versions(python: str) -> str:
    code = (
        "import importlib.metadata as m\n"
        "print(', '.join(f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'trl', 'peft') "
        "if __import__('importlib').util.find_spec(p)))"
    )
    return launch([python, "-c", code]).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", choices=VARIANTS, help="One run in this process (internal).")
    p.add_argument("--rounds", type=int, default=2, help="Alternate the variants this many times.")
    p.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated subset.")
    p.add_argument("--trl-python", default=str(ROOT / "benchmarks" / ".peers" / "bin" / "python"))
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    if a.run:
        result = run_trl(OUT) if a.run == "trl" else run_ppokit(OUT, a.run)
        print(json.dumps({"variant": a.run, **result}))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    prepare(OUT)
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = []
    for r in range(a.rounds):
        for variant in a.variants.split(","):
            python = a.trl_python if variant == "trl" else sys.executable
            done = launch([python, __file__, "--run", variant])
            if done.rc != 0:
                raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["round"] = r + 1
            results.append(row)
            print(json.dumps(row), flush=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(f"load average after: {os.getloadavg()}")
    print("ppokit venv:", versions(sys.executable))
    print("TRL venv:", versions(a.trl_python))
    head = "round | variant | peak RSS (MiB) | RSS before the step | peak - RSS before | step s | length"
    print("", *table_head(head), sep="\n")
    for row in results:
        print(
            f"| {row['round']} | {row['variant']} | {row['peak_mb']:.0f} | {row['rss_before_mb']:.0f} | "
            f"{row['peak_mb'] - row['rss_before_mb']:.0f} | {row['seconds']:.1f} | {row['mean_length']} |"
        )


if __name__ == "__main__":
    main()
