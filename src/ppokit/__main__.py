"""``python -m ppokit`` (what ``torchrun -m ppokit`` runs) is the ``ppokit`` command."""

from ppokit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())  # the exit code of the verb (2: user error, 130/143: interrupted)
