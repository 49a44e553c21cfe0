"""The alias table: other libraries' spellings of ppokit's config keys (``ppokit.config`` applies it).

Kept apart from the machinery in ``config.py`` because it is data that grows with every library users
come from; ``ppokit.config.ALIASES`` is this table.
"""

# One name per concept across PPOConfig, GRPOConfig and RLHFPPOConfig; the spellings of the libraries
# users come from (Stable-Baselines3 on the classic side, TRL on the language-model side) and ppokit's
# own earlier names stay accepted as aliases, so their configs keep working. alias -> (canonical key,
# where the spelling comes from). A dotted canonical key reaches into a section. ``from_dict`` applies
# the table at every section level, to the classes that have the target; configs are always saved
# with the canonical names. docs/config.md is generated from this table (``make readme``).
ALIASES: dict[str, tuple[str, str]] = {
    # the policy-ratio clip range
    "epsilon": ("clip_range", "TRL GRPOConfig; ppokit 0.1 GRPOConfig"),
    "cliprange": ("clip_range", "TRL PPOConfig; ppokit 0.1 RLHFPPOConfig"),
    "epsilon_high": ("clip_range_high", "TRL GRPOConfig; ppokit 0.1 GRPOConfig"),
    # the value-prediction clip range
    "cliprange_value": ("vf_clip_range", "TRL PPOConfig; ppokit 0.1 RLHFPPOConfig"),
    "clip_range_vf": ("vf_clip_range", "Stable-Baselines3 PPO"),
    # the weight of the KL penalty
    "beta": ("kl_coef", "TRL GRPOConfig; ppokit 0.1 GRPOConfig"),
    "kl_beta": ("kl_coef", "ppokit 0.1 PPOConfig"),
    # the adaptive KL rule: on or off (the classic side's switch is `objective: kl_adaptive`, PPO paper
    # Table 1's row name; the LM side's is this key of the same spelling), and its target (units
    # differ: see each config's help)
    "adaptive_kl": ("kl_adaptive", "ppokit 0.1 RLHFPPOConfig"),
    "kl_target": ("adaptive_kl_target", "ppokit 0.1 PPOConfig and RLHFPPOConfig"),
    # the entropy bonus coefficient
    "entropy_coef": ("ent_coef", "ppokit 0.1 GRPOConfig"),
    # GAE
    "lam": ("gae_lambda", "TRL PPOConfig; ppokit 0.1 RLHFPPOConfig"),
    # passes over one batch of experience
    "num_ppo_epochs": ("n_epochs", "TRL PPOConfig; ppokit 0.1 RLHFPPOConfig"),
    "num_iterations": ("n_epochs", "TRL GRPOConfig; ppokit 0.1 GRPOConfig"),
    "whiten_advantages": ("normalize_advantage", "ppokit 0.1 RLHFPPOConfig"),
    # TRL's top-level generation keys, which ppokit keeps in the generation section
    "max_prompt_length": ("generation.max_prompt_length", "TRL GRPOConfig"),
    "max_completion_length": ("generation.max_completion_length", "TRL GRPOConfig"),
    "response_length": ("generation.max_completion_length", "TRL PPOConfig"),
    "temperature": ("generation.temperature", "TRL GRPOConfig and PPOConfig"),
    "top_p": ("generation.top_p", "TRL GRPOConfig"),
    "top_k": ("generation.top_k", "TRL GRPOConfig"),
    # loading and LoRA
    "dtype": ("torch_dtype", "transformers >= 4.56 from_pretrained; TRL model_init_kwargs"),
    # TRL's (transformers TrainingArguments') names of the run loop's keys
    "logging_steps": ("log_every", "TRL GRPOConfig (TrainingArguments)"),
    "save_steps": ("checkpoint_every", "TRL GRPOConfig (TrainingArguments)"),
    "save_total_limit": ("keep_checkpoints", "TRL GRPOConfig (TrainingArguments)"),
    "eval_steps": ("eval_every", "TRL GRPOConfig (TrainingArguments)"),
    "lr_scheduler_type": ("lr_schedule", "TRL GRPOConfig (TrainingArguments)"),
    "min_p": ("generation.min_p", "TRL GRPOConfig"),
    "repetition_penalty": ("generation.repetition_penalty", "TRL GRPOConfig"),
    # vectorised environments
    "n_envs": ("num_envs", "Stable-Baselines3 (make_vec_env)"),
}

# Keys of other libraries that are not aliases (no ppokit key means the same), with what to do instead.
# ``from_dict`` names this advice for an unknown key before guessing a close spelling: the guess
# suggested n_steps for rl-zoo's n_timesteps and env_kwargs for policy_kwargs (issue 30).
FOREIGN_KEYS: dict[str, str] = {
    "n_timesteps": "rl-zoo's training budget is total_timesteps here (a zoo file loads with --zoo FILE)",
    "policy": "ppokit picks the policy's encoder from the observation space; drop it (a zoo file loads "
    "with --zoo FILE)",
    "policy_kwargs": "network sizes and activation are keys of the network section (network.hidden_sizes, "
    "network.activation); a zoo file loads with --zoo FILE, which maps its policy_kwargs",
    "normalize": "rl-zoo's normalize is normalize_obs and normalize_reward here (a zoo file loads with "
    "--zoo FILE)",
    "env_wrapper": "rl-zoo's env_wrapper is env_wrappers here (a zoo file loads with --zoo FILE)",
    "frame_stack": "rl-zoo's frame_stack is ALE's env_kwargs.stack_num here (a zoo file loads with "
    "--zoo FILE)",
}
