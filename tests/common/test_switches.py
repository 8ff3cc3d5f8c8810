"""The words that say on and off, listed once, and the one reader of an environment switch."""

from __future__ import annotations

import pytest

from st_mnr_plus.common import ConfigurationError
from st_mnr_plus.common.switches import FALSE_WORDS, TRUE_WORDS, SwitchError, env_switch, switch_word

VARIABLE = "ST_MNR_PLUS_TEST_SWITCH"


@pytest.mark.parametrize("word", [*TRUE_WORDS, "TRUE", " Yes ", "ON"])
def test_a_word_for_on_reads_true(monkeypatch, word):
    monkeypatch.setenv(VARIABLE, word)
    assert env_switch(VARIABLE) is True


@pytest.mark.parametrize("word", [*FALSE_WORDS, "FALSE", " No ", "Off"])
def test_a_word_for_off_reads_false(monkeypatch, word):
    monkeypatch.setenv(VARIABLE, word)
    assert env_switch(VARIABLE, default=True) is False


@pytest.mark.parametrize("default", [False, True])
@pytest.mark.parametrize("value", [None, "", "  "], ids=["unset", "empty", "blank"])
def test_unset_or_empty_is_the_default(monkeypatch, value, default):
    if value is None:
        monkeypatch.delenv(VARIABLE, raising=False)
    else:
        monkeypatch.setenv(VARIABLE, value)
    assert env_switch(VARIABLE, default=default) is default


@pytest.mark.parametrize("value", ["2", "enabled", "yes please", "truee"])
def test_an_unknown_word_is_an_error_naming_the_variable_and_the_value(monkeypatch, value):
    monkeypatch.setenv(VARIABLE, value)
    with pytest.raises(SwitchError, match=rf"environment variable {VARIABLE}='{value}' is neither on \(yes, true"):
        env_switch(VARIABLE)


def test_a_switch_error_is_a_configuration_error():
    # st-mnr-plus prints it on one line and exits with status 2, as any error a user must fix.
    assert issubclass(SwitchError, ConfigurationError)


def test_the_words_are_distinct_and_lower_case():
    assert not set(TRUE_WORDS) & set(FALSE_WORDS)
    assert all(word == word.strip().lower() for word in TRUE_WORDS + FALSE_WORDS)


@pytest.mark.parametrize(("text", "state"), [("t", True), ("0", False), ("maybe", None), ("", None)])
def test_switch_word(text, state):
    assert switch_word(text) is state


def test_the_config_reads_the_same_words():
    from st_mnr_plus.recipe import config

    assert config.TRUE_WORDS is TRUE_WORDS
    assert config.FALSE_WORDS is FALSE_WORDS
    assert config.as_bool("On") is True
    assert config.as_bool("off") is False
