from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_mnr_plus import registry
from st_mnr_plus.plugins import NAME
from st_mnr_plus.plugins.manager import BUILTIN_NAME, PluginLoadError, get_plugin_manager
from tests.plugins.conftest import write_plugin_dist

PLUGIN_SOURCE = """
    from st_mnr_plus import hookimpl

    class ThirdPartyLoss:
        def __init__(self, model, margin=0.5):
            self.model, self.margin = model, margin

    def third_party_builder(sources):
        return sources

    @hookimpl
    def register_losses():
        return {"third_party_loss": ThirdPartyLoss}

    @hookimpl
    def register_dataset_builders():
        return {"third_party_builder": third_party_builder}
"""


def test_one_name_for_markers_manager_and_entry_points():
    import st_mnr_plus

    assert NAME == "st_mnr_plus"
    assert st_mnr_plus.hookimpl.project_name == NAME
    assert get_plugin_manager().project_name == NAME


def test_builtins_register_through_the_hooks():
    pm = get_plugin_manager()
    builtin = pm.get_plugin(BUILTIN_NAME)
    assert builtin is not None
    impls = [impl.plugin_name for impl in pm.hook.register_losses.get_hookimpls()]
    assert BUILTIN_NAME in impls
    assert registry.get("loss", "mnrl") is MultipleNegativesRankingLoss
    assert registry.source("loss", "mnrl") == BUILTIN_NAME


def _builtins() -> dict[str, dict[str, object]]:
    """Every built-in name under its kind, with the public object it must resolve to."""
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    import st_mnr_plus
    from st_mnr_plus.sampler import ShuffledBatchSampler

    return {
        "loss": {
            "mnr_plus": st_mnr_plus.MNRPlus,
            "cached_mnr_plus": st_mnr_plus.CachedMNRPlus,
            "mnrl": MultipleNegativesRankingLoss,
            "cached_mnrl": CachedMultipleNegativesRankingLoss,
        },
        "batch_sampler": {
            "no_duplicates": st_mnr_plus.NoDuplicatesSampler,
            "st_no_duplicates": NoDuplicatesBatchSampler,
            "default": ShuffledBatchSampler,
        },
        "dataset_builder": {"nli": st_mnr_plus.build_nli},
        "evaluator": {
            "stsb": st_mnr_plus.stsb_evaluator,
            "sickr": st_mnr_plus.sickr_evaluator,
            "nli_triplets": st_mnr_plus.nli_triplet_evaluator,
            "sts_suite": st_mnr_plus.sts_suite,
        },
        "callback": {
            "mnr_diagnostics": st_mnr_plus.MNRDiagnosticsCallback,
            "throughput": st_mnr_plus.ThroughputCallback,
        },
    }


@pytest.mark.parametrize("kind", registry.KINDS)
def test_every_builtin_is_registered_under_its_kind(kind):
    """The one place that checks registration: each built-in name resolves to its public object, and the
    built-in plugin registers nothing else."""
    expected = _builtins()[kind]
    assert {name: registry.get(kind, name) for name in expected} == expected
    assert {name for name in registry.names(kind) if registry.source(kind, name) == BUILTIN_NAME} == expected.keys()


def test_third_party_plugin_is_discovered_from_its_entry_point(install_plugin):
    entry = install_plugin("st-mnr-plus-thirdparty", "thirdparty_plugin", PLUGIN_SOURCE)
    loss_cls = registry.get("loss", "third_party_loss")
    assert loss_cls.__module__ == "thirdparty_plugin"
    assert loss_cls(model=None, margin=0.1).margin == 0.1
    assert registry.get("dataset_builder", "third_party_builder")([1]) == [1]
    assert registry.source("loss", "third_party_loss") == entry
    # Built-ins stay beside it.
    assert "mnrl" in registry.names("loss")


def test_disable_env_turns_discovery_off_but_keeps_builtins(install_plugin, monkeypatch):
    install_plugin("st-mnr-plus-thirdparty", "thirdparty_plugin", PLUGIN_SOURCE)
    monkeypatch.setenv("ST_MNR_PLUS_DISABLE_PLUGINS", "1")
    assert "third_party_loss" not in registry.names("loss")
    assert "mnrl" in registry.names("loss")
    assert "thirdparty_plugin" not in sys.modules


@pytest.mark.parametrize(
    ("value", "discovered"),
    [("true", False), ("ON", False), ("all", False), ("0", True), ("off", True), ("", True)],
)
def test_disable_env_reads_the_on_and_off_words_of_every_switch(install_plugin, monkeypatch, value, discovered):
    install_plugin("st-mnr-plus-thirdparty", "thirdparty_plugin", PLUGIN_SOURCE)
    monkeypatch.setenv("ST_MNR_PLUS_DISABLE_PLUGINS", value)
    assert ("third_party_loss" in registry.names("loss")) is discovered
    assert "mnrl" in registry.names("loss")


def test_disable_env_can_block_one_plugin_by_name(install_plugin, monkeypatch):
    install_plugin("st-mnr-plus-thirdparty", "thirdparty_plugin", PLUGIN_SOURCE)
    install_plugin("st-mnr-plus-other", "other_plugin", PLUGIN_SOURCE.replace("third_party", "other"))
    monkeypatch.setenv("ST_MNR_PLUS_DISABLE_PLUGINS", "thirdparty_plugin")
    names = registry.names("loss")
    assert "other_loss" in names
    assert "third_party_loss" not in names


def test_duplicate_name_names_both_sources(install_plugin):
    install_plugin(
        "st-mnr-plus-clash",
        "clash_plugin",
        """
        from st_mnr_plus import hookimpl

        class MyMNRL:
            pass

        @hookimpl
        def register_losses():
            return {"mnrl": MyMNRL}
        """,
    )
    with pytest.raises(registry.DuplicateComponentError) as info:
        registry.get("loss", "mnrl")
    message = str(info.value)
    assert "'mnrl'" in message
    assert BUILTIN_NAME in message
    assert "clash_plugin" in message
    assert "MultipleNegativesRankingLoss" in message
    assert "MyMNRL" in message


def test_unknown_name_is_a_key_error_listing_the_names():
    with pytest.raises(KeyError) as info:
        registry.get("loss", "no_such_loss")
    assert isinstance(info.value, registry.UnknownComponentError)
    message = str(info.value)
    assert "'no_such_loss'" in message
    for name in registry.names("loss"):
        assert name in message


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(ValueError, match=r"'losses'.*loss, batch_sampler, dataset_builder, evaluator, callback"):
        registry.names("losses")


def test_plugin_that_fails_to_import_is_reported_with_its_distribution(install_plugin):
    install_plugin("st-mnr-plus-broken", "broken_plugin", "import a_module_that_does_not_exist\n")
    with pytest.raises(PluginLoadError) as info:
        registry.names("loss")
    message = str(info.value)
    assert "st-mnr-plus-broken 0.1" in message
    assert "broken_plugin" in message
    assert "a_module_that_does_not_exist" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize("broken_first", [True, False], ids=["broken-loaded-first", "broken-loaded-second"])
def test_the_failing_plugin_is_named_beside_a_working_one(install_plugin, broken_first):
    # Each install goes to the front of sys.path: the one installed last is loaded first.
    installs = [
        ("st-mnr-plus-thirdparty", "thirdparty_plugin", PLUGIN_SOURCE),
        ("st-mnr-plus-broken", "broken_plugin", "raise RuntimeError('broken at import')\n"),
    ]
    for dist, module, source in installs if broken_first else installs[::-1]:
        install_plugin(dist, module, source)
    with pytest.raises(
        PluginLoadError, match=r"'broken_plugin' \(broken_plugin\) from distribution st-mnr-plus-broken 0\.1"
    ):
        registry.names("loss")


def test_a_blocked_plugin_is_never_imported(install_plugin, monkeypatch):
    install_plugin("st-mnr-plus-broken", "broken_plugin", "import a_module_that_does_not_exist\n")
    monkeypatch.setenv("ST_MNR_PLUS_DISABLE_PLUGINS", "broken_plugin")
    assert "mnrl" in registry.names("loss")
    assert "broken_plugin" not in sys.modules


def test_hook_returning_a_non_dict_names_the_plugin(install_plugin):
    install_plugin(
        "st-mnr-plus-list",
        "list_plugin",
        """
        from st_mnr_plus import hookimpl

        @hookimpl
        def register_callbacks():
            return ["not", "a", "dict"]
        """,
    )
    with pytest.raises(TypeError, match=r"list_plugin.*register_callbacks\(\) must return a dict"):
        registry.names("callback")


def test_misspelled_hook_is_rejected(install_plugin):
    install_plugin(
        "st-mnr-plus-typo",
        "typo_plugin",
        """
        from st_mnr_plus import hookimpl

        @hookimpl
        def register_loss():
            return {}
        """,
    )
    with pytest.raises(Exception, match="register_loss"):
        registry.names("loss")


@pytest.mark.slow  # a fresh process, about 10 s: CI's -m slow runs it
def test_import_creates_no_plugin_manager_and_loads_no_entry_point(tmp_path: Path):
    marker = tmp_path / "imported"
    root = write_plugin_dist(
        tmp_path / "probe",
        "st-mnr-plus-probe",
        "probe_plugin",
        f"""
        from pathlib import Path
        from st_mnr_plus import hookimpl

        Path({str(marker)!r}).write_text("imported")

        @hookimpl
        def register_evaluators():
            return {{"probe": dict}}
        """,
    )
    script = """
import json, sys
import st_mnr_plus
from st_mnr_plus.plugins import manager
state = {"manager_after_import": manager._plugin_manager is not None,
         "plugin_module_after_import": "probe_plugin" in sys.modules}
state["names"] = st_mnr_plus.registry.names("evaluator")
state["manager_after_lookup"] = manager._plugin_manager is not None
print(json.dumps(state))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("ST_MNR_PLUS_DISABLE_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state["manager_after_import"] is False
    assert state["plugin_module_after_import"] is False
    assert "probe" in state["names"]
    assert state["manager_after_lookup"] is True
    assert marker.read_text() == "imported"


def test_cli_lists_components_with_their_source(install_plugin):
    from st_mnr_plus.cli import main

    install_plugin("st-mnr-plus-thirdparty", "thirdparty_plugin", PLUGIN_SOURCE)
    # Runs in-process so that the temporary sys.path entry applies.
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["components", "loss"]) == 0
    output = buffer.getvalue()
    assert "third_party_loss" in output
    assert "[thirdparty_plugin]" in output
    assert "mnrl" in output
