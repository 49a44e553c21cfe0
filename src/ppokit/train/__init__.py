"""The training machinery both sides use: one guarded optimizer step (``step.py``), one atomic
checkpoint writer and layout (``checkpoint.py``), one RNG capture/restore (``rng.py``).

Nothing here knows about environments or language models; ``rl/`` and ``llm/`` compose it.
"""
