"""One base class for what a user must fix: every such error of the package derives from ConfigurationError, and
keeps the built-in type it had before (so ``except ValueError``/``KeyError``/``FileNotFoundError`` still work)."""

from __future__ import annotations

import pytest

from st_mnr_plus.bench.report import BenchSettingsError
from st_mnr_plus.common.errors import ConfigurationError, SourceNotFoundError
from st_mnr_plus.datasets.readers import NLIFormatError
from st_mnr_plus.datasets.report import EmptyBuildError
from st_mnr_plus.evaluation.readers import EvaluatorError
from st_mnr_plus.losses.options import OptionError
from st_mnr_plus.models.glove import WordVectorFormatError
from st_mnr_plus.plugins.manager import PluginLoadError
from st_mnr_plus.plugins.registry import DuplicateComponentError, UnknownComponentError
from st_mnr_plus.recipe.config import ConfigFileError
from st_mnr_plus.recipe.options import RecipeError


@pytest.mark.parametrize(
    ("error", "also"),
    [
        pytest.param(BenchSettingsError, ValueError, id="bench"),
        pytest.param(NLIFormatError, ValueError, id="nli_format"),
        pytest.param(EmptyBuildError, ValueError, id="empty_build"),
        pytest.param(EvaluatorError, ValueError, id="evaluator"),
        pytest.param(OptionError, ValueError, id="loss_option"),
        pytest.param(WordVectorFormatError, ValueError, id="word_vectors"),
        pytest.param(PluginLoadError, ImportError, id="plugin_load"),
        pytest.param(DuplicateComponentError, ValueError, id="duplicate_component"),
        pytest.param(UnknownComponentError, KeyError, id="unknown_component"),
        pytest.param(ConfigFileError, ValueError, id="config_file"),
        pytest.param(RecipeError, ValueError, id="recipe"),
        pytest.param(SourceNotFoundError, FileNotFoundError, id="missing_source"),
    ],
)
def test_every_user_facing_error_is_a_configuration_error_of_its_old_type(error, also):
    assert issubclass(error, ConfigurationError)
    assert issubclass(error, also)


def test_an_unknown_component_prints_its_message_not_a_key_repr():
    assert str(UnknownComponentError("no loss 'x'; known: a, b")) == "no loss 'x'; known: a, b"


def test_a_missing_source_is_a_file_not_found_error_with_the_message():
    error = SourceNotFoundError("data.jsonl does not exist")
    assert isinstance(error, OSError)
    assert str(error) == "data.jsonl does not exist"
