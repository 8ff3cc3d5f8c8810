"""The one base class of the errors a user must fix: :class:`ConfigurationError`.

Every error the package raises for a configuration that cannot work (an option out of range, a missing file, an
unknown component name, a malformed data row, a bad config file) derives from it, so a caller catches one class:
``st-mnr-plus`` prints such an error on one line and exits with status 2, without a traceback. It is a
``ValueError``, so code that caught the ``ValueError`` the subclasses always were keeps working; subclasses that
were another built-in type (``KeyError`` for an unknown component, ``ImportError`` for a plugin that does not
import, ``FileNotFoundError`` for a missing source) derive from that one too.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "SourceNotFoundError"]


class ConfigurationError(ValueError):
    """Something the user configured cannot work; the message names it and says what was expected."""


class SourceNotFoundError(ConfigurationError, FileNotFoundError):
    """A data file or folder the user named does not exist (also a ``FileNotFoundError``)."""
