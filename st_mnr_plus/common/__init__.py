"""What every part of the package shares and nothing else: the one base class of the errors a user must fix
(:mod:`.errors`), the one rule that tells a local path from a hub id (:mod:`.sources`), the loading of a
package's public names on first access (:mod:`.lazy`), and the words that say on and off with the one reader of
an environment switch (:mod:`.switches`).

It imports nothing from the rest of the package, so any module may import it.
"""

from __future__ import annotations

from st_mnr_plus.common.errors import ConfigurationError, SourceNotFoundError
from st_mnr_plus.common.sources import is_local_path

__all__ = ["ConfigurationError", "SourceNotFoundError", "is_local_path"]
