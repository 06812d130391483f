"""The project's own error types.

Every failure a user can cause (bad file, unknown model, bad question) is raised as a subclass of
:class:`VidqaError` with a one-line message; the CLI prints that line and exits with the class's
``exit_code``. Anything else escaping is a bug.
"""


class VidqaError(Exception):
    """Base of all user-facing errors; ``str(err)`` is one line meant for the user."""

    exit_code = 1


class ConfigError(VidqaError, ValueError):
    """An invalid setting: unknown reducer name, negative budget, bad config file."""

    exit_code = 2


class VideoError(VidqaError):
    """The video cannot be read: missing, not a video, truncated beyond recovery, zero length."""

    exit_code = 3


class ModelError(VidqaError):
    """The model cannot be loaded: unknown name, offline without a local copy, missing files."""

    exit_code = 4


class QuestionError(VidqaError, ValueError):
    """The question is unusable: empty, too long, options given where none fit."""

    exit_code = 5


class CacheError(VidqaError):
    """A saved memory is damaged or stale; callers rebuild it instead of trusting it."""

    exit_code = 6


class ResourceError(VidqaError):
    """Out of memory or another resource, after vidqa's own fallbacks were tried."""

    exit_code = 7


class DataError(VidqaError):
    """An annotation/question file is malformed (batch evaluation)."""

    exit_code = 8
