"""The training machinery both sides use: the one run loop and the ``Trainable`` protocol it drives
(``loop.py``, with its callback hooks ``callbacks.py`` and signal handling ``signals.py``), the run
directory's claim and lock (``rundir.py``), one guarded optimizer step (``step.py``), one atomic
checkpoint writer and layout (``checkpoint.py``), one RNG capture/restore (``rng.py``).

Nothing here knows about environments or language models; ``rl/`` and ``llm/`` compose it.
"""
