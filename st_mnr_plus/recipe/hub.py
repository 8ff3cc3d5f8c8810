"""Telling "the hub could not be reached" and "no such repository" apart from other failures, so that the recipe
can say what to do instead (pass local files or a local model, or leave them out for the bundled defaults)."""

from __future__ import annotations

import importlib
import importlib.util
import socket


def _offline_exception_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the hub could not be reached", from the hub libraries and their HTTP clients."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    # ConnectionError is also what `datasets` raises ("Couldn't reach ... on the Hub").
    found: list[type[BaseException]] = [
        OfflineModeIsEnabled,
        LocalEntryNotFoundError,
        ConnectionError,
        TimeoutError,
        socket.gaierror,
    ]
    # huggingface_hub uses httpx (httpx2 in its newest releases); older stacks use requests.
    for module_name, names in (
        ("httpx", ("TransportError",)),
        ("httpx2", ("TransportError",)),
        ("requests.exceptions", ("ConnectionError", "Timeout")),
    ):
        if importlib.util.find_spec(module_name.split(".")[0]) is None:
            continue
        module = importlib.import_module(module_name)
        found.extend(getattr(module, name) for name in names if isinstance(getattr(module, name, None), type))
    return tuple(found)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def is_offline_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the hub could not be reached."""
    offline = _offline_exception_types()
    return any(isinstance(error, offline) for error in _exception_chain(exc))


def hub_access_error(exc: BaseException) -> BaseException | None:
    """A hub "no such repository / revision / no access" error in the chain of ``exc``, if any."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    for error in _exception_chain(exc):
        if isinstance(error, (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError)):
            return error
    return None


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE)
