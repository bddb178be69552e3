"""Errors raised by rlpt. Every message names the file/key, what was expected and what was found."""

from __future__ import annotations


class RlptError(Exception):
    """Base class of every error rlpt raises on purpose. The CLI prints these without a traceback."""


class InputLimitError(RlptError, ValueError):
    """An input (a network frame, an HTTP body, a config or metadata file) exceeds a size, depth or count limit
    (`rlpt.utils.read_bounded`, `rlpt.utils.load_yaml_bounded`)."""


class ConfigError(RlptError):
    """A recipe, spec or override is malformed or names an unknown key."""


class EnvSpecError(RlptError):
    """An environment spec cannot be resolved or its options are invalid."""


class DatasetError(RlptError):
    """Base class of dataset problems."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file does not exist."""


class DatasetKeyError(DatasetError, KeyError):
    """A required key is missing from a dataset file."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DatasetShapeError(DatasetError, ValueError):
    """Arrays have mismatched lengths or shapes, or do not match an environment's spaces."""


class DatasetDtypeError(DatasetError, TypeError):
    """An array has a dtype that cannot represent the field (e.g. strings as observations)."""


class DatasetValueError(DatasetError, ValueError):
    """An array holds NaN or inf values, or values outside their valid range."""


class VideoDataError(DatasetError):
    """A video source (folder, list file, manifest) is malformed or holds no usable video (`rlpt.data.video`)."""


class CheckpointError(RlptError):
    """A checkpoint is missing, incomplete or from an incompatible version."""


class RunError(RlptError):
    """A run folder is missing or cannot be resumed."""


class RewardModelError(RlptError):
    """A reward model could not score an input (server error, timeout, malformed answer). Reward wrappers
    catch it and fall back to the configured reward; it never stops training. `reason` is one of
    rlpt.rewards.base.FAILURE_REASONS ("timeout", "server_error", "malformed", ...)."""

    def __init__(self, message: str, reason: str = "exception") -> None:
        super().__init__(message)
        self.reason = reason


class RewardAuthError(RlptError):
    """A reward server refused the credentials (HTTP 401/403). Not a `RewardModelError`: reward wrappers do not
    fall back on it, so the run stops with this message instead of training on fallback rewards."""


class RobotError(RlptError):
    """Base class of problems with a robot, its config, its driver or its connection (`rlpt.robots`)."""


class RobotConfigError(RobotError, ConfigError):
    """A robot config file is malformed: names the file, the key, what was expected and what was found."""


class RobotDependencyError(RobotError, ImportError):
    """A vendor library a robot driver needs is not installed; the message names the pip extra/package."""


class RobotConnectionError(RobotError, ConnectionError):
    """A driver could not connect, lost its connection, timed out or was refused (e.g. a wrong token)."""


class RobotDriverError(RobotError):
    """A driver failed to read an observation or execute a command."""


class RobotSafetyError(RobotError):
    """The robot was stopped by a safety check (stale observation, NaN action, watchdog, driver fault).

    Raised only when the config asks for it (`safety.on_fault: raise`); `reason` is one of
    `rlpt.robots.env.FAULT_REASONS`. The robot has already been stopped when this is raised."""

    def __init__(self, message: str, reason: str = "fault") -> None:
        super().__init__(message)
        self.reason = reason
