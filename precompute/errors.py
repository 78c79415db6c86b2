"""Exceptions with messages written for the person at the keyboard.

Every error a user can trigger (a bad argument, a missing file, no network) is one of these, so the CLI and the
app can show ``str(err)`` and nothing else: no traceback.
"""


class ExplorerError(Exception):
    """Base class: the message says what was wrong and, where possible, how to fix it."""


class InvalidInputError(ExplorerError, ValueError):
    """An argument (tokens, head, count, path, option) is not acceptable."""


class ModelUnavailableError(ExplorerError, OSError):
    """A model's weights or tokenizer cannot be obtained (no network, not cached)."""


class HubUnavailableError(ExplorerError, OSError):
    """The Hugging Face Hub (or a dataset on it) cannot be reached."""


class ArtifactError(ExplorerError):
    """An artifact folder is missing, incomplete, corrupt or of an unknown schema."""


class BusyError(ExplorerError):
    """The shared model has as many analyses waiting as it queues; the user is asked to try again."""
