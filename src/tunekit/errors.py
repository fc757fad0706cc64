"""Typed errors. Each message says what to change; the CLI prints it on one line."""

from __future__ import annotations


class TunekitError(Exception):
    """Base class for errors a user can act on. The CLI prints the message, exit code 1."""

    exit_code = 1


class ConfigError(TunekitError):
    """A configuration value is unknown, missing or invalid. Exit code 2.

    `key` is the config key (dotted path) or file the user has to change.
    """

    exit_code = 2

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ConfigErrors(ConfigError):
    """Several configuration problems found at once, reported together before any work starts."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(problems) == 1:
            message = problems[0]
        else:
            message = f"{len(problems)} config problems: " + "; ".join(problems)
        super().__init__(message)


class MissingDependencyError(TunekitError):
    """An optional dependency is not installed; the message carries the install hint."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = "") -> None:
        hint = f"pip install 'tunekit[{extra}]'" if extra else f"pip install {package}"
        what = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{package} is not installed{what}; install it with: {hint}")
        self.package = package
        self.extra = extra


class StageUnavailableError(TunekitError):
    """A stage cannot run here (no weights, no decoder, no GPU…). Says why and how to enable it."""


class RunFailedError(TunekitError):
    """A run went to the end but failed: a stage failed for too many rows, or nothing usable was made.

    Its outputs (with the reasons) are written and the work done is cached, so fixing the cause and
    re-running the same command resumes. Exit code 1.
    """
