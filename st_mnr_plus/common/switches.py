"""The words that say on and off, listed once (:data:`TRUE_WORDS`, :data:`FALSE_WORDS`), and the one reader of an
environment switch (:func:`env_switch`).

Config values, ``KEY=VALUE`` options (:mod:`st_mnr_plus.recipe.config` re-exports the words) and environment
variables all take the same words, in any case, with spaces around them ignored.
"""

from __future__ import annotations

import os

from st_mnr_plus.common.errors import ConfigurationError

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "SwitchError", "env_switch", "switch_word"]

TRUE_WORDS: tuple[str, ...] = ("yes", "true", "t", "y", "1", "on")
"""What a config value, a ``KEY=VALUE`` option or an environment switch may say for true (any case)."""
FALSE_WORDS: tuple[str, ...] = ("no", "false", "f", "n", "0", "off")
"""... and for false."""


class SwitchError(ConfigurationError):
    """An environment switch set to a word that says neither on nor off."""


def switch_word(text: str) -> bool | None:
    """``True`` for one of :data:`TRUE_WORDS`, ``False`` for one of :data:`FALSE_WORDS` (any case, spaces around
    ignored), ``None`` for any other text."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def env_switch(name: str, default: bool = False) -> bool:
    """Whether the environment variable ``name`` is on; ``default`` where it is unset or empty.

    Raises:
        SwitchError: the variable holds a word that is neither one of :data:`TRUE_WORDS` nor of
            :data:`FALSE_WORDS`; the message names the variable and its value.
    """
    value = os.environ.get(name, "")
    if not value.strip():
        return default
    state = switch_word(value)
    if state is None:
        raise SwitchError(
            f"The environment variable {name}={value!r} is neither on ({', '.join(TRUE_WORDS)}) nor off "
            f"({', '.join(FALSE_WORDS)}); set it to one of these words, or unset it for the default ({default})."
        )
    return state
