"""Language-model side of ppokit (GRPO, PPO for RLHF). Needs the ``llm`` extra (transformers)."""
