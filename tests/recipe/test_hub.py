"""Offline and missing-repository errors are recognised by their types."""

from __future__ import annotations


def test_offline_errors_are_recognised_by_their_type():
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    from st_mnr_plus.recipe.hub import is_offline_error

    def raised_from(outer: BaseException, inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as error:
                raise outer from error
        except BaseException as chained:
            return chained

    # What sentence-transformers raises for an uncached model when offline, and what datasets raises.
    assert is_offline_error(raised_from(OSError("We couldn't connect"), LocalEntryNotFoundError("not cached")))
    assert is_offline_error(OfflineModeIsEnabled("offline"))
    assert is_offline_error(ConnectionError("Couldn't reach 'x' on the Hub"))
    # A message that merely mentions the network is not an offline error.
    assert not is_offline_error(ValueError("could not resolve the connection string; network offline?"))
    assert not is_offline_error(raised_from(RuntimeError("x"), KeyError("offline")))
