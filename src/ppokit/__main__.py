"""``python -m ppokit`` (what ``torchrun -m ppokit`` runs) is the ``ppokit`` command."""

from ppokit.cli import main

if __name__ == "__main__":
    main()
