"""advisor's error family. Only these become one-line messages; anything else is a bug and says so.

Exit codes (documented in the README): 0 ok, 1 internal error, 2 bad input or usage, 3 nothing fits,
4 download failed, 5 engine failed to start, 6 check failed.
"""

from __future__ import annotations


class AdvisorError(Exception):
    """An error the user can act on: ``message`` says what went wrong, ``hint`` what to do next."""

    exit_code = 2
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint


class BadInputError(AdvisorError):
    """A file, option or reference given by the user cannot be used."""


class HardwareFileError(BadInputError):
    hint = "write a fresh profile with 'advisor probe --json > FILE'"


class ProbeError(AdvisorError):
    """The machine could not be described at all (a single missing driver is only a note in the profile)."""

    exit_code = 1


# -- runner: downloading, starting and checking an engine ---------------------------------------------


class ModelNotFoundError(BadInputError):
    """A local model path that does not exist, or a file that is not a model the engine can read."""


class DownloadError(AdvisorError):
    """The model could not be fetched from the Hub (offline and not cached, not found, gated, disk full...)."""

    exit_code = 4


class EngineError(AdvisorError):
    """The engine could not be started, or did not become ready."""

    exit_code = 5


class EngineMissingError(EngineError):
    """No engine of the requested backend is installed."""


class PortInUseError(BadInputError):
    hint = "pick another with --port, or leave --port out to get a free one"


class CheckFailedError(EngineError):
    """The engine became ready but the test prompt failed."""

    exit_code = 6


class ModelFileError(BadInputError):
    """The engine could not read the model file: truncated, corrupt, or an architecture this build does not know."""

    hint = "the file may be truncated or corrupt (download it again), or need a newer engine"


# -- planner: recommend ------------------------------------------------------------------------------------------


class NothingFitsError(AdvisorError):
    """No candidate fits this machine under the request; the message names the closest one and by how much it
    misses."""

    exit_code = 3
    hint = "allow a smaller model or shorter context, or give --max-size / --context / --backend differently"


# -- setup: installing the engine build that fits -----------------------------------------------------------------


class EngineUnsupportedError(BadInputError):
    """The requested engine has no build for this machine (vLLM on macOS or Windows, on a CPU without AVX2...)."""

    hint = "use --backend llama.cpp, which has a build for every machine"


class EngineSetupError(EngineError):
    """Installing the engine failed: a missing toolchain, or a failed pip command (its output is above)."""


class EngineVerifyError(CheckFailedError):
    """The engine installed, but verification showed it does not use the hardware it was built for."""
