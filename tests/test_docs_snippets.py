"""Every code block in README.md and docs/*.md runs (or, where it cannot run in a test, is checked),
one test per page so blocks of a page run in order and share a scratch directory
(``tests/doc_snippets.py`` says how blocks are marked)."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_snippets import ROOT, Block, pages, parse, problems, run_block

PAGES = [p for p in pages() if parse(p)]
# the optional packages (extras, all in `dev`) a page's blocks import; without them the page is skipped
LM = ("transformers",)
NEEDS = {
    "README.md": LM,
    "docs/deploy.md": ("onnx", "onnxruntime", "moviepy", "wandb"),
    "docs/envpool.md": ("envpool", "mujoco"),
    "docs/grpo.md": ("transformers", "peft"),
    "docs/language-models.md": ("transformers", "peft"),
    "docs/own-env.md": ("ale_py", "minigrid"),
    "docs/porting-trl.md": ("transformers", "peft", "datasets"),
    "docs/presets-and-zoo.md": ("optuna",),
    "docs/rlhf_ppo.md": LM,
}


def _deploy_made_its_files(scratch: Path, outputs: list[str]) -> None:
    """docs/deploy.md's commands leave what the page says they make (from test_docs_deploy.py)."""
    assert len(list((scratch / "runs" / "pendulum" / "videos").glob("*.mp4"))) == 2
    assert (scratch / "runs" / "pendulum" / "policy.onnx").is_file()
    assert list((scratch / "runs" / "wandb-demo" / "wandb").glob("offline-run-*"))


def _readme_quickstarts_made_their_runs(scratch: Path, outputs: list[str]) -> None:
    """README's quickstarts write the run directories and the model they name."""
    assert (scratch / "cartpole_model").is_dir()
    assert (scratch / "runs" / "cartpole" / "eval.json").is_file()
    assert (scratch / "runs" / "cartpole" / "plots" / "returns.png").is_file()
    assert (scratch / "runs" / "my-grpo" / "metrics.csv").is_file()


def _zoo_page_printed_and_made_what_it_says(scratch: Path, outputs: list[str]) -> None:
    """docs/presets-and-zoo.md (from test_zoo.py): the outputs its comments show, the tune study resumed,
    the best preset and the run trained from it."""
    assert "CartPole-v1-fast" in outputs[0] and "preset: " in outputs[0]
    assert "Breakout-v5.yaml 0.00025 4" in outputs[1] and "True relu [64, 64]" in outputs[2]
    assert "resuming study" in outputs[4] and (scratch / "tune-cartpole" / "best.yaml").is_file()
    assert (scratch / "best-run" / "model").is_dir()


def _batched_page_built_the_asymmetric_critic(scratch: Path, outputs: list[str]) -> None:
    """docs/batched-envs.md (from test_batched_envs.py): the rsl_rl-style env's critic group gives an
    asymmetric actor-critic, as the page's comment says."""
    assert any(out.strip().endswith("AsymmetricActorCritic") for out in outputs)
    assert (scratch / "my_envs.py").is_file()
    # the torchrun run made one run directory (rank 0's) and its export (issue 32 item 3)
    assert (scratch / "runs" / "cartpole-torch" / "model" / "manifest.json").is_file()
    assert (scratch / "runs" / "cartpole-torch" / "policy.pt").is_file()
    assert (scratch / "point_mass_actor.pt").is_file()


AFTER = {
    "docs/deploy.md": _deploy_made_its_files,
    "README.md": _readme_quickstarts_made_their_runs,
    "docs/presets-and-zoo.md": _zoo_page_printed_and_made_what_it_says,
    "docs/batched-envs.md": _batched_page_built_the_asymmetric_critic,
}


def test_every_page_with_code_is_collected():
    assert ROOT / "README.md" in PAGES
    assert sum(len(parse(p)) for p in PAGES) >= 10
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert set(NEEDS) | set(AFTER) <= names, "NEEDS/AFTER name a page that has no code blocks"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_code_blocks_run(page: Path, tmp_path: Path):
    name = str(page.relative_to(ROOT))
    for module in NEEDS.get(name, ()):
        pytest.importorskip(module, reason=f"{name} needs the {module} extra")
    previous, outputs = None, []
    for block in parse(page):
        try:
            previous = run_block(block, tmp_path, previous, outputs=outputs)
        except AssertionError as e:
            raise AssertionError(f"{block.id} ({block.lang}): {e}") from None
    if name in AFTER:
        AFTER[name](tmp_path, outputs)


def _block(text: str, lang: str = "python", directives: list[str] | None = None) -> Block:
    return Block(ROOT / "README.md", 1, lang, text, directives or [])


def test_the_runner_fails_a_broken_snippet(tmp_path):
    with pytest.raises(AssertionError, match="NameError"):
        run_block(_block("print(undefined_name)\n"), tmp_path, None)
    with pytest.raises(AssertionError, match="does not parse"):
        run_block(_block("ppokit train --no-such-flag\n", "bash", ["check-only setup"]), tmp_path, None)
    with pytest.raises(AssertionError, match="no make target"):
        run_block(_block("make no-such-target\n", "bash", ["check-only setup"]), tmp_path, None)


def test_labels_and_directives_are_checked():
    assert problems(_block("x = 1\n", lang=""))  # a bare fence
    assert problems(_block("x = 1\n", directives=["check-only because"]))  # not an allowed reason
    assert problems(_block("x = 1\n", directives=["replace y => z"]))  # not in the block
    assert not problems(_block("x = 1\n", directives=["replace 1 => 2"]))


def test_replace_and_continue(tmp_path):
    first = run_block(_block("n = 100_000\n", directives=["replace 100_000 => 3"]), tmp_path, None)
    run_block(_block("assert n == 3\n", directives=["continue"]), tmp_path, first)
