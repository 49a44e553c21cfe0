"""One vocabulary: other libraries' (and ppokit 0.1's) spellings load through ``ppokit.config.ALIASES``;
old saved configs load to the same values; configs are saved with the canonical names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ppokit.config import ALIASES, apply_overrides
from ppokit.errors import ConfigError
from ppokit.llm.config import LMConfig
from ppokit.llm.grpo_config import GRPOConfig
from ppokit.llm.rlhf_ppo_config import RLHFPPOConfig
from ppokit.rl.config import PPOConfig

OLD = Path(__file__).resolve().parent / "data" / "old_configs"
CLASSES = {"ppo.yaml": PPOConfig, "grpo.yaml": GRPOConfig, "rlhf_ppo.yaml": RLHFPPOConfig}


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _has(cls, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if head not in fields:
        return False
    return not rest or _has(type(getattr(cls(), head)), rest)


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        if isinstance(v, dict) and k not in ("env_kwargs",):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _canonical(cls, dotted: str) -> str:
    """The key ``dotted`` (a 0.1 name) has in ``cls`` now."""
    if _has(cls, dotted):
        return dotted
    return ALIASES[dotted.split(".")[-1]][0]


def test_every_alias_resolves_to_a_field_of_some_config_class():
    for alias, (target, source) in ALIASES.items():
        assert source, alias
        users = [c for c in (PPOConfig, GRPOConfig, RLHFPPOConfig) if _has(c, target)]
        assert users, f"alias {alias!r} -> {target!r}: no config class has that key"
        # an alias is never also a real key of a class it applies to (it would shadow the field)
        assert not any(_has(c, alias) for c in users), alias


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_a_config_saved_by_ppokit_0_1_loads_to_the_same_values(name, tmp_path):
    cls = CLASSES[name]
    old = yaml.safe_load((OLD / name).read_text())
    for cfg in (cls.load_yaml(OLD / name), cls.from_dict(old)):  # from the YAML file and from a dict
        for key, value in _flat(old).items():
            assert _get(cfg, _canonical(cls, key)) == value, key
    # saved again, it uses only canonical names, and round-trips
    cfg.save_yaml(tmp_path / "config.yaml")
    saved = _flat(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert all(_has(cls, k) for k in saved)
    assert cls.load_yaml(tmp_path / "config.yaml") == cfg


def test_old_names_of_the_lm_configs_are_aliases_and_save_canonically():
    old = yaml.safe_load((OLD / "grpo.yaml").read_text())
    assert {"beta", "epsilon", "epsilon_high", "num_iterations"} <= set(old)
    cfg = GRPOConfig.from_dict(old)
    assert (cfg.kl_coef, cfg.clip_range, cfg.clip_range_high, cfg.n_epochs) == (0.02, 0.15, 0.28, 2)
    old = yaml.safe_load((OLD / "rlhf_ppo.yaml").read_text())
    cfg = RLHFPPOConfig.from_dict(old)
    assert (cfg.clip_range, cfg.vf_clip_range, cfg.gae_lambda, cfg.n_epochs) == (0.1, 0.3, 0.9, 2)
    assert (cfg.normalize_advantage, cfg.adaptive_kl_target) == (False, 4.0)
    saved = cfg.to_dict()
    assert not set(saved) & set(ALIASES)


def test_trl_top_level_generation_keys_reach_the_section():
    cfg = GRPOConfig.from_dict({"max_completion_length": 32, "temperature": 0.7, "top_k": 5})
    assert (cfg.generation.max_completion_length, cfg.generation.temperature, cfg.generation.top_k) == (
        32,
        0.7,
        5,
    )
    cfg = RLHFPPOConfig.from_dict({"response_length": 12, "generation": {"top_p": 0.9}})
    assert cfg.generation.max_completion_length == 12 and cfg.generation.top_p == 0.9


def test_sb3_spellings_on_the_classic_side():
    cfg = PPOConfig.from_dict({"n_envs": 4, "n_steps": 32, "batch_size": 64, "clip_range_vf": 0.3})
    assert cfg.num_envs == 4 and cfg.vf_clip_range == 0.3


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (GRPOConfig, {"epsilon": 0.1, "clip_range": 0.2}, "'epsilon' and 'clip_range'"),
        (RLHFPPOConfig, {"lam": 0.9, "gae_lambda": 0.9}, "'lam' and 'gae_lambda'"),
        (GRPOConfig, {"beta": 0.1, "kl_beta": 0.2}, "'kl_beta' and 'beta'"),
        (
            GRPOConfig,
            {"max_completion_length": 8, "generation": {"max_completion_length": 9}},
            "'max_completion_length' and 'generation.max_completion_length'",
        ),
        (PPOConfig, {"n_envs": 2, "num_envs": 2}, "'n_envs' and 'num_envs'"),
    ],
)
def test_an_alias_and_its_canonical_key_together_are_an_error_naming_both(cls, data, message):
    with pytest.raises(ConfigError, match=message):
        cls.from_dict(data)


def test_an_alias_whose_target_the_class_lacks_is_an_unknown_key():
    with pytest.raises(ConfigError, match="unknown config key 'n_envs'"):
        GRPOConfig.from_dict({"n_envs": 4})
    with pytest.raises(ConfigError, match="unknown config key 'epsilon_high'"):
        RLHFPPOConfig.from_dict({"epsilon_high": 0.3})


def test_a_validation_error_names_the_spelling_the_user_wrote():
    with pytest.raises(ConfigError, match=r"kl_coef=-1.0 is not allowed.*\(given as 'beta'\)"):
        GRPOConfig.from_dict({"beta": -1.0})


def test_an_alias_override_replaces_the_canonical_key_of_a_saved_config():
    saved = GRPOConfig(clip_range=0.2).to_dict()
    data = apply_overrides(saved, ["epsilon=0.3", "max_completion_length=7"], GRPOConfig)
    cfg = GRPOConfig.from_dict(data)
    assert cfg.clip_range == 0.3 and cfg.generation.max_completion_length == 7
    assert GRPOConfig.load_yaml(OLD / "grpo.yaml", ["clip_range=0.25"]).clip_range == 0.25


def test_the_lm_configs_share_their_common_keys_through_one_base():
    shared = {f.name for f in dataclasses.fields(LMConfig)}
    grpo = {f.name for f in dataclasses.fields(GRPOConfig)}
    rlhf = {f.name for f in dataclasses.fields(RLHFPPOConfig)}
    assert grpo & rlhf == shared
    assert issubclass(GRPOConfig, LMConfig) and issubclass(RLHFPPOConfig, LMConfig)


def test_one_name_per_concept_across_the_classic_and_the_lm_configs():
    """Issue 29: a concept both sides have is one key everywhere; the LM side's earlier spellings
    (``adaptive_kl``, ``entropy_coef``) load as aliases and save under the one name."""
    from ppokit.functional.losses import OBJECTIVES

    classic = {f.name for f in dataclasses.fields(PPOConfig)}
    lm = {f.name for f in dataclasses.fields(GRPOConfig)} | {
        f.name for f in dataclasses.fields(RLHFPPOConfig)
    }
    both = {"kl_coef", "adaptive_kl_target", "vf_clip_range", "gae_lambda", "ent_coef", "vf_coef"}
    both |= {
        "clip_range",
        "n_epochs",
        "normalize_advantage",
        "critic_learning_rate",
        "max_grad_norm",
        "gamma",
    }
    assert both <= classic and both <= lm
    # the adaptive rule's switch: PPOConfig's objective value and RLHFPPOConfig's key share a spelling
    assert "kl_adaptive" in OBJECTIVES and "kl_adaptive" in lm
    cfg = RLHFPPOConfig.from_dict({"adaptive_kl": True, "kl_target": 3.0})
    assert (cfg.kl_adaptive, cfg.adaptive_kl_target) == (True, 3.0)
    assert "adaptive_kl" not in cfg.to_dict() and cfg.to_dict()["kl_adaptive"] is True
    assert GRPOConfig.from_dict({"entropy_coef": 0.01}).ent_coef == 0.01
    assert GRPOConfig(entropy_coef=0.02).ent_coef == 0.02  # the constructor takes the old name too
    assert PPOConfig.from_dict({"entropy_coef": 0.03}).ent_coef == 0.03
    with pytest.raises(ConfigError, match="'entropy_coef' and 'ent_coef'"):
        GRPOConfig.from_dict({"entropy_coef": 0.01, "ent_coef": 0.01})
