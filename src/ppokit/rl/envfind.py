"""Finding the environment a user names: ``module:Id``, packages to import first, the namespaces of
common third-party packages, and one-line errors for missing optional dependencies.

``gym.spec(id)`` only looks in the registry; it imports nothing. ``gymnasium.make("pkg:Id")`` imports
``pkg`` first, and third-party packages (ale-py, minigrid, ...) register their ids only when imported
(Gymnasium 1.x has no plugin entry points any more). So before the lookup ppokit imports, in order:
the packages the user lists (``gym_packages``, as rl-zoo's ``--gym-packages``), the module of a
``module:Id``, and the package that provides the id's namespace when it is installed
(``KNOWN_PACKAGES``). When that package is missing the error says so and gives the install command.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable

import gymnasium as gym

from ppokit.errors import EnvConfigError, MissingDependencyError

# (id prefix, module to import, pip requirement). A prefix ending in "/" is a Gymnasium namespace.
KNOWN_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("ppokit/CartPoleTorch", "ppokit.rl.torch_envs", "ppokit"),  # issue 32: batched torch envs
    ("ppokit/PendulumTorch", "ppokit.rl.torch_envs", "ppokit"),
    ("ppokit/PointMassTorch", "ppokit.rl.torch_envs", "ppokit"),
    ("ppokit/", "ppokit.rl.toy_envs", "ppokit"),  # ppokit's own small envs
    ("ALE/", "ale_py", "ppokit[atari]"),
    ("MiniGrid-", "minigrid", "minigrid"),
    ("BabyAI-", "minigrid", "minigrid"),
    ("MiniWorld-", "miniworld", "miniworld"),
    ("highway-", "highway_env", "highway-env"),
    ("merge-", "highway_env", "highway-env"),
    ("roundabout-", "highway_env", "highway-env"),
    ("parking-", "highway_env", "highway-env"),
    ("intersection-", "highway_env", "highway-env"),
    ("racetrack-", "highway_env", "highway-env"),
    ("Panda", "panda_gym", "panda-gym"),
    ("FlappyBird-", "flappy_bird_gymnasium", "flappy-bird-gymnasium"),
    ("dm_control/", "shimmy", "shimmy[dm-control]"),
    ("GymV21Environment-", "shimmy", "shimmy[gym-v21]"),
    ("GymV26Environment-", "shimmy", "shimmy[gym-v26]"),
    ("Sokoban-", "gym_sokoban", "gym-sokoban"),
    ("CarRacing-", "Box2D", "gymnasium[box2d]"),
    ("LunarLander", "Box2D", "gymnasium[box2d]"),
    ("BipedalWalker", "Box2D", "gymnasium[box2d]"),
)

# Wrappers an id's family needs before ppokit can train on it, used by `ppokit train` when the config
# names none (written to the run's config.yaml like any other key): MiniGrid's observation carries a
# Text "mission" that no encoder reads; ImgObsWrapper keeps its 7x7x3 image.
DEFAULT_WRAPPERS: tuple[tuple[str, list], ...] = (
    ("MiniGrid-", ["minigrid.wrappers.ImgObsWrapper"]),
    ("BabyAI-", ["minigrid.wrappers.ImgObsWrapper"]),
)


def default_wrappers(env_id: str) -> list:
    """``env_wrappers`` that ``env_id``'s family needs (``DEFAULT_WRAPPERS``), or []."""
    name = env_id.rpartition(":")[2]
    return next((list(w) for prefix, w in DEFAULT_WRAPPERS if name.startswith(prefix)), [])


# The distribution that provides an importable module, where the names differ.
_PIP_NAMES = {
    "ale_py": "ale-py",
    "Box2D": "gymnasium[box2d]",
    "mujoco": "gymnasium[mujoco]",
    "cv2": "opencv-python",
}


def pip_name(module: str) -> str | None:
    """The ``pip install`` argument that provides top-level module ``module``, when ppokit knows it
    (``_PIP_NAMES``, ``KNOWN_PACKAGES``); None otherwise. Never the module's own name: that name can
    come from a run directory someone else wrote (``gym_packages``, ``module:Id``), and a
    ``pip install <their name>`` hint would install whatever a package index holds under it (issue 34)."""
    top = module.split(".")[0]
    if top in _PIP_NAMES:
        return _PIP_NAMES[top]
    return next((req for _, mod, req in KNOWN_PACKAGES if mod.split(".")[0] == top), None)


def install_hint(module: str) -> str:
    """What to do about the missing top-level ``module``: the known install command, or to make it
    importable (no guessed package name, see ``pip_name``)."""
    name = pip_name(module)
    if name is not None:
        return f"pip install '{name}'" if "[" in name else f"pip install {name}"
    return "install the package that provides it, or add its folder to PYTHONPATH"


# False while ppokit works on a run directory it does not trust to ship code (cli/trust.py: the working
# directory is inside the run); then the working directory is not put back on sys.path (issue 34)
CWD_IMPORTS = True


def cwd_on_path() -> None:
    """Let the user's own modules in the working directory be imported, as ``python -m ppokit`` does
    (its ``-m`` puts the working directory first on sys.path; the ``ppokit`` console script does not).
    Issue 30: ``ppokit train --env my_envs:Id`` beside ``my_envs.py`` said "not installed". Appended,
    not prepended, so a local file never shadows an installed package."""
    cwd = os.getcwd()
    if CWD_IMPORTS and "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)


def import_module(module: str, why: str) -> None:
    """Import ``module`` (from the working directory too); a missing one is MissingDependencyError
    naming it and its install command."""
    cwd_on_path()
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or module
        raise MissingDependencyError(
            f"{why} needs the Python module {missing!r}, which is not installed: {install_hint(missing)}"
        ) from None
    except gym.error.DependencyNotInstalled as e:
        raise MissingDependencyError(f"{why}: {one_line(e)}") from None


def import_packages(packages: Iterable[str]) -> None:
    """Import each of ``gym_packages`` (they register their environments as they are imported)."""
    for module in packages:
        import_module(module, f"gym_packages entry {module!r}")


def known_package(env_id: str) -> tuple[str, str] | None:
    """``(module, pip requirement)`` of the package that provides ``env_id``'s namespace, if known."""
    for prefix, module, requirement in KNOWN_PACKAGES:
        if env_id.startswith(prefix):
            return module, requirement
    return None


def one_line(error: BaseException) -> str:
    """An exception's message on one line (Gymnasium's dependency messages span several)."""
    return " ".join(str(error).split())


def find_spec(env_id: str, packages: Iterable[str] = ()) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id`` (``Id`` or ``module:Id``) after importing what provides it.

    Raises MissingDependencyError when a package known to provide the id is not installed, and
    EnvConfigError with the closest registered names for an unknown id.
    """
    import_packages(packages)
    module, _, name = env_id.rpartition(":")
    if module:
        import_module(module, f"env_id={env_id!r}")
    known = known_package(name)
    if known is not None and name not in gym.registry:
        mod, requirement = known
        if importlib.util.find_spec(mod) is None:
            raise MissingDependencyError(
                f"env_id={env_id!r}: package {requirement.split('[')[0]!r} provides this id but is not "
                f"installed: pip install '{requirement}'"
            )
        import_module(mod, f"env_id={env_id!r}")
        if mod == "ale_py":  # ale-py >= 0.9 registers its ids on gym.register_envs (import alone is enough
            gym.register_envs(importlib.import_module(mod))  # in most versions; this makes it explicit)
    try:
        return gym.spec(name)
    except gym.error.Error:
        close = difflib.get_close_matches(name, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        more = (
            "" if module else "; for an id registered by your own module, write module:Id or set gym_packages"
        )
        raise EnvConfigError(
            f"env_id={env_id!r} is not allowed: it is not a registered Gymnasium environment{hint}{more}"
        ) from None


def load_entry_point(spec: gym.envs.registration.EnvSpec, env_id: str) -> None:
    """Import the module of the environment's entry point now, in this process, so that a missing
    optional dependency (Box2D for LunarLander, mujoco for HalfCheetah) is one line, not a traceback
    from inside ``gym.make`` or a worker process."""
    entry = spec.entry_point
    if not isinstance(entry, str):
        return
    module = entry.split(":")[0]
    try:
        importlib.import_module(module)
    except gym.error.DependencyNotInstalled as e:
        raise MissingDependencyError(f"env_id={env_id!r}: {one_line(e)}") from None
    except ModuleNotFoundError as e:
        missing = e.name or module
        raise MissingDependencyError(
            f"env_id={env_id!r} needs the Python module {missing!r}, which is not installed: "
            f"{install_hint(missing)}"
        ) from None
