"""Which device a run trains on (issue 31, point 2): ``device: auto`` is the language-model default,
``ppokit.distributed.resolve_device`` maps it (and ``cuda``) to each torchrun rank's own GPU, the
process group's backend follows the resolved device, and every rank says once where it runs. CUDA is
faked with monkeypatch (these machines have none); the per-rank line under a real 2-process torchrun
is checked in tests/test_distributed.py."""

from __future__ import annotations

import pytest
import torch

from ppokit import distributed
from ppokit.errors import ConfigError
from ppokit.llm.config import LMConfig
from ppokit.llm.grpo import GRPOTrainer
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig
from ppokit.rl.config import PPOConfig
from ppokit.train.rng import capture_rng, restore_rng


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has ``n`` CUDA devices: ``gpus(n)``; LOCAL_RANK starts unset."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)

    def fake(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return fake


@pytest.mark.parametrize(
    ("n_gpus", "local_rank", "spec", "expected"),
    [
        (0, 0, "auto", "cpu"),
        (0, 1, "auto", "cpu"),  # a torchrun rank on a CPU machine
        (2, 0, "auto", "cuda:0"),
        (2, 1, "auto", "cuda:1"),  # each rank on its own local GPU
        (2, 1, "cuda", "cuda:1"),  # plain cuda too
        (2, 1, "cuda:0", "cuda:0"),  # an explicit index is kept
        (2, 0, "cpu", "cpu"),  # explicit cpu on a GPU machine stays on the CPU
        (2, 1, torch.device("cuda", 1), "cuda:1"),
    ],
)
def test_resolve_device(gpus, n_gpus, local_rank, spec, expected):
    gpus(n_gpus)
    assert distributed.resolve_device(spec, local_rank) == torch.device(expected)


def test_resolve_device_reads_local_rank_from_the_environment(gpus, monkeypatch):
    gpus(4)
    assert distributed.resolve_device("auto") == torch.device("cuda:0")  # one process: LOCAL_RANK unset
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.resolve_device("auto") == torch.device("cuda:3")
    assert distributed.resolve_device("cuda") == torch.device("cuda:3")


@pytest.mark.parametrize(
    ("n_gpus", "local_rank", "spec", "message"),
    [
        (0, 0, "gpu", "device='gpu' is not allowed; use auto, cpu, cuda, cuda:N or mps"),
        (0, 0, "cuda:x", "device='cuda:x' is not allowed; use auto, cpu, cuda, cuda:N or mps"),
        (0, 0, "", "device='' is not allowed; use auto, cpu, cuda, cuda:N or mps"),
        (
            0,
            0,
            "cuda",
            "device='cuda' is not allowed; CUDA is not available on this machine; use auto or cpu",
        ),
        (0, 0, "cuda:1", "device='cuda:1' is not allowed; CUDA is not available on this machine"),
        (2, 0, "cuda:2", "device='cuda:2' is not allowed; there is no GPU 2 and this machine has 2 CUDA"),
        (2, 3, "auto", "device='auto' is not allowed; LOCAL_RANK=3 needs GPU 3 and this machine has 2 CUDA"),
        (2, 2, "cuda", "(torchrun --nproc_per_node) or name cuda:0..cuda:1"),
    ],
)
def test_bad_or_absent_devices_are_one_line_config_errors(gpus, n_gpus, local_rank, spec, message):
    gpus(n_gpus)
    with pytest.raises(ConfigError) as info:
        distributed.resolve_device(spec, local_rank)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_mps_only_by_name_and_only_where_present(gpus, monkeypatch):
    gpus(0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert distributed.resolve_device("auto") == torch.device("cpu")  # auto never picks MPS
    assert distributed.resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device='mps' is not allowed; MPS is not available"):
        distributed.resolve_device("mps")


def test_backend_follows_the_resolved_device(gpus):
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("mps")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"
    gpus(2)
    assert distributed.backend_for(distributed.resolve_device("auto", 1)) == "nccl"
    gpus(0)
    assert distributed.backend_for(distributed.resolve_device("auto", 1)) == "gloo"


def test_init_picks_the_backend_and_the_rank_s_gpu_from_the_resolved_device(gpus, monkeypatch):
    """Under torchrun (WORLD_SIZE > 1) ``init`` makes the rank's GPU current before NCCL starts;
    on a CPU machine the same ``auto`` joins with gloo and touches no GPU."""
    calls: list[tuple[str, object]] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda backend: calls.append(("init", backend))
    )
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.init("auto") == distributed.DistInfo(1, 2, 1)
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]
    calls.clear()
    gpus(0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    distributed.init("auto")
    assert calls == [("init", "gloo")]


def test_language_model_configs_default_to_auto_which_is_the_cpu_here():
    for cls in (LMConfig, GRPOConfig, RLHFPPOConfig):
        assert cls().device == "auto"
        assert cls.from_dict({}).device == "auto"  # saved as asked: resolved where the run trains
    assert distributed.resolve_device(GRPOConfig().device) == torch.device("cpu")
    with pytest.raises(ConfigError, match="device='gpu' is not allowed; use auto, cpu, cuda, cuda:N or mps"):
        GRPOConfig.from_dict({"device": "gpu"})


def _grpo(progress: bool, **kw) -> GRPOTrainer:
    from ppokit.llm.config import TinyModelConfig
    from ppokit.llm.models import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model = build_tiny_model(TinyModelConfig(n_layer=1, n_embd=16, n_head=2), tok, 0)
    cfg = GRPOConfig.from_dict({"max_steps": 1, "prompts_per_step": 2, "num_generations": 2, **kw})
    cfg.generation.max_completion_length = 4
    reward = lambda prompts, completions, **_: [0.0] * len(completions)  # noqa: E731
    return GRPOTrainer(model, tok, reward, ["1+1=", "2+2="], cfg, progress=progress)


def test_the_trainer_trains_on_the_resolved_device_and_says_so_once(capsys, monkeypatch):
    monkeypatch.setattr(distributed, "_ANNOUNCED", set())
    trainer = _grpo(progress=True)
    assert trainer.config.device == "auto" and trainer.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in trainer.model.parameters())
    assert capsys.readouterr().err.splitlines() == ["ppokit grpo: on cpu"]
    _grpo(progress=True)  # a second trainer in the same process on the same device: no second line
    _grpo(progress=False, device="cpu")  # --no-progress alone: quiet
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(distributed, "_ANNOUNCED", set())
    _grpo(progress=False)
    assert capsys.readouterr().err == ""


def test_an_unavailable_device_stops_the_trainer_with_the_field_named():
    with pytest.raises(ConfigError, match="device='cuda' is not allowed; CUDA is not available"):
        _grpo(progress=False, device="cuda")


def test_classic_ppo_maps_cuda_to_the_local_rank(gpus, monkeypatch):
    """Classic PPO saves ``auto`` resolved to ``cuda``; ``PPO`` puts rank r of torchrun on cuda:r."""
    gpus(2)
    assert PPOConfig.from_dict({"device": "auto"}).device == "cuda"
    monkeypatch.setenv("LOCAL_RANK", "1")
    saved = PPOConfig.from_dict({"device": "auto"}).device
    assert distributed.resolve_device(saved) == torch.device("cuda:1")


def test_a_generator_saved_on_another_device_type_resumes_from_its_seed():
    """A run saved on a GPU (the sampler's CUDA generator: 16 bytes of state) resumed on a CPU machine
    with device auto: the CPU generator cannot take that state; it keeps its seed, with a warning."""
    gen = torch.Generator().manual_seed(7)
    tensors, tree = capture_rng(torch_generators={"sampler": gen})
    tensors["rng.generator.sampler"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    fresh = torch.Generator().manual_seed(7)
    expected = torch.rand(3, generator=torch.Generator().manual_seed(7))
    with pytest.warns(UserWarning, match="saved on another device type"):
        restore_rng(tensors, tree, torch_generators={"sampler": fresh})
    assert torch.equal(torch.rand(3, generator=fresh), expected)
    tensors, tree = capture_rng(torch_generators={"sampler": gen})  # same device type: restored exactly
    after = torch.rand(3, generator=gen)
    other = torch.Generator().manual_seed(99)
    restore_rng(tensors, tree, torch_generators={"sampler": other})
    assert torch.equal(torch.rand(3, generator=other), after)


def test_the_saved_config_keeps_auto_so_a_run_resumes_on_whatever_the_next_machine_has(tmp_path):
    import yaml

    _grpo(progress=False, output_dir=str(tmp_path / "run"), checkpoint_every=1).train()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["device"] == "auto"
    reward = lambda prompts, completions, **_: [0.0] * len(completions)  # noqa: E731
    resumed = GRPOTrainer.resume(tmp_path / "run", reward, ["1+1=", "2+2="], progress=False)
    assert resumed.step == 1 and resumed.config.device == "auto" and resumed.device == torch.device("cpu")
