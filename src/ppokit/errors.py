"""Errors ppokit raises on purpose. Each names what was wrong and what is allowed."""


class PPOKitError(Exception):
    """Base class of all ppokit errors; the CLI prints these as one line and exits with code 2."""


class ConfigError(PPOKitError, ValueError):
    """A config value, key or type is not allowed. The message names the key, the value and the rule."""


class EnvError(PPOKitError):
    """An environment id, space or step result that ppokit cannot use."""


class EnvConfigError(EnvError, ConfigError):
    """A config value that names an environment ppokit cannot use (unknown id, unsupported space,
    a vectorization it does not offer, keyword arguments it rejects)."""


class EnvStepError(EnvError):
    """An environment produced a non-finite observation or reward, or raised while stepping.

    ``details`` holds the worker process's traceback when the environment ran in one; the CLI
    prints it under the one-line message.
    """

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.details = details


class NonFiniteError(PPOKitError):
    """Losses or gradients stayed non-finite for too many updates in a row."""


class CheckpointError(PPOKitError):
    """A checkpoint or saved model is missing, incomplete, corrupt, foreign or incompatible."""


class MissingDependencyError(EnvConfigError):
    """An optional package the environment needs is not installed; the message names the package and
    the command that installs it."""


class RunDirError(PPOKitError):
    """A run directory cannot be used: another process holds it, or it cannot be written."""


class UserCodeError(PPOKitError):
    """The user's code (a policy, a callback, an environment, a wrapper) ended the run with
    ``sys.exit()``/``SystemExit`` or another exit the run cannot continue from (issue 34: such a run
    exited 0 with no message). The message names what was raised and the checkpoint kept."""


class StepTimeoutError(UserCodeError):
    """A step took longer than the config's ``step_timeout`` seconds (an ``env.step`` or a reward
    function that hangs); the run stops with a checkpoint of the last completed step."""
