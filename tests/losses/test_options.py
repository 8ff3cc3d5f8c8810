"""The loss options, declared once (``st_mnr_plus.losses.options.LOSS_OPTIONS``): the constructors' signatures,
the checked attributes, the config dict / model card and the spec all agree with the table."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)

from st_mnr_plus.losses import CachedMNRPlus, MNRPlus
from st_mnr_plus.losses import options as opt
from st_mnr_plus.losses.functional import MNRSpec


def _signature(cls) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(cls).parameters.items() if name != "model"}


@pytest.mark.parametrize(("cls", "owner"), [(MNRPlus, "loss"), (CachedMNRPlus, "cache")], ids=["mnr_plus", "cached"])
def test_the_constructors_take_exactly_the_table_options_with_its_defaults(cls, owner):
    parameters = _signature(cls)
    table = {option.name: option for option in opt.options_of(owner)}
    assert list(parameters) == [name for name in parameters if name in table]
    assert set(parameters) == set(table)
    for name, parameter in parameters.items():
        assert parameter.default == table[name].default, name


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(MNRPlus, MultipleNegativesRankingLoss), (CachedMNRPlus, CachedMultipleNegativesRankingLoss)],
    ids=["mnrl", "cmnrl"],
)
def test_the_positional_arguments_are_sentence_transformers_own_in_its_order(ours, theirs):
    """A drop-in: every argument of MNRL/CMNRL, in its order and with its default, then ours as keyword-only."""
    mine, original = _signature(ours), _signature(theirs)
    assert list(mine)[: len(original)] == list(original)
    for name, parameter in original.items():
        assert mine[name].default == parameter.default, name
        assert mine[name].kind == parameter.kind, name
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in mine.items() if name not in original)


@pytest.mark.parametrize(("cls", "owner"), [(MNRPlus, "loss"), (CachedMNRPlus, "cache")], ids=["mnr_plus", "cached"])
def test_the_config_dict_records_the_card_options_of_the_table(tiny_model, cls, owner):
    loss_fn = cls(tiny_model)
    config = loss_fn.get_config_dict()
    assert list(config) == [o.name for o in opt.options_of(owner) if o.card is not False]
    assert config["similarity_fct"] == "cos_sim"
    assert config["backend"] == "auto"


def test_every_option_is_a_checked_attribute_and_the_spec_carries_the_computation_options():
    loss_fn = MNRPlus(None, false_negative_ratio=0.9, hard_negatives="own", tile_size=5)
    for option in opt.options_of("loss"):
        assert hasattr(loss_fn, option.name), option.name
    spec = opt.spec_values(loss_fn)
    assert list(spec) == [o.name for o in opt.SPEC_OPTIONS]
    assert (spec["false_negative_ratio"], spec["hard_negatives"], spec["tile_size"]) == (0.9, "own", 5)


def test_a_spec_built_outside_a_loss_is_checked_with_the_same_messages():
    with pytest.raises(opt.OptionError, match="false_negative_ratio must be a number in"):
        MNRSpec.of(4, false_negative_ratio=2.0)
    with pytest.raises(opt.OptionError, match=r"unknown option\(s\) \['tile_rows'\]"):
        MNRSpec.of(4, tile_rows=2)
    assert MNRSpec.of(4, tile_size=2).tile_size == 2


def test_the_kernel_column_names_the_options_the_gpu_path_does_not_compute():
    defaults = opt.checked_spec_values({})
    assert opt.kernel_fallbacks(defaults) == []
    covered = opt.checked_spec_values(
        {"directions": ("query_to_doc", "doc_to_query"), "hard_negatives": "own", "hardness_strength": 2.0}
    )
    assert opt.kernel_fallbacks(covered) == []
    outside = opt.checked_spec_values({"directions": ("query_to_doc", "query_to_query"), "hardness_strength": 2.0})
    assert opt.kernel_fallbacks(outside) == ["directions=('query_to_doc', 'query_to_query')"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("scale", -1.0),
        ("scale", float("inf")),
        ("directions", ("doc_to_query",)),
        ("partition_mode", "both"),
        ("hardness_mode", "hardest"),
        ("hardness_strength", -1.0),
        ("mask_duplicates", "no"),
        ("gather_across_devices", 1),
        ("false_negative_ratio", 1.5),
        ("tile_size", 0),
        ("mini_batch_size", 0),
    ],
)
def test_an_invalid_assignment_raises_value_error_naming_the_option(tiny_model, name, value):
    for loss_fn in (MNRPlus(None), CachedMNRPlus(tiny_model)):
        if not hasattr(loss_fn, name):
            continue
        before = getattr(loss_fn, name)
        with pytest.raises(ValueError, match=name):
            setattr(loss_fn, name, value)
        assert getattr(loss_fn, name) == before


@pytest.mark.parametrize("option", ["mask_duplicates", "symmetric", "learnable_scale", "gather_across_devices"])
def test_boolean_options_take_only_booleans(option):
    """`MNRPlus(model, mask_duplicates="no")` used to mean True."""
    with pytest.raises(ValueError, match=f"{option} must be True or False"):
        MNRPlus(None, **{option: "no"})


def test_learnable_scale_is_fixed_at_construction():
    with pytest.raises(AttributeError):
        MNRPlus(None).learnable_scale = True


def test_symmetric_can_be_switched_on_and_off():
    loss_fn = MNRPlus(None)
    loss_fn.symmetric = True
    assert loss_fn.directions == ("query_to_doc", "doc_to_query")
    assert loss_fn.partition_mode == "per_direction"
    loss_fn.symmetric = False
    assert (loss_fn.directions, loss_fn.partition_mode) == (("query_to_doc",), "joint")


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        pytest.param({"mini_batch_size": 0}, "mini_batch_size", id="mini_batch_size-0"),
        pytest.param({"mini_batch_size": -4}, "mini_batch_size", id="mini_batch_size-negative"),
        pytest.param({"mini_batch_size": True}, "mini_batch_size", id="mini_batch_size-bool"),
        pytest.param({"mini_batch_size": 2.5}, "mini_batch_size", id="mini_batch_size-float"),
        pytest.param({"mini_batch_num_tokens": 0}, "mini_batch_num_tokens", id="mini_batch_num_tokens-0"),
        pytest.param({"scale": -1.0}, "scale", id="scale-negative"),
        pytest.param({"directions": ("doc_to_doc",)}, "directions", id="directions-without-query_to_doc"),
        pytest.param({"hard_negatives": "mine"}, "hard_negatives", id="hard_negatives-unknown"),
    ],
)
def test_bad_arguments_raise(tiny_model, kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        CachedMNRPlus(tiny_model, **kwargs)


def test_options_and_model_card(tiny_model) -> None:
    loss_fn = CachedMNRPlus(tiny_model, 25.0, mini_batch_size=16, learnable_scale=True, false_negative_margin=0.2)
    assert loss_fn.scale == pytest.approx(25.0)
    assert loss_fn.temperature == pytest.approx(1 / 25.0)
    assert loss_fn.learnable_scale is True
    assert loss_fn.uses_gradient_cache is True
    config = loss_fn.get_config_dict()
    assert config["mini_batch_size"] == 16
    assert config["false_negative_margin"] == 0.2
    assert config["group_by_length"] is True
    assert config["scale"] == pytest.approx(25.0)
    assert "gao2021scaling" in loss_fn.citation
    # The learnable scale is a parameter of the loss, so the trainer's optimizer picks it up.
    assert [n for n, _ in loss_fn.named_parameters() if "log_scale" in n] == ["loss.log_scale_offset"]


def test_positional_arguments_follow_st_cmnrl(tiny_model) -> None:
    """Drop-in: CMNRL's positional order (model, scale, similarity_fct, mini_batch_size, ...)."""
    from sentence_transformers.util import dot_score

    loss_fn = CachedMNRPlus(tiny_model, 1.0, dot_score, 8)
    assert (loss_fn.scale, loss_fn.similarity_fct, loss_fn.mini_batch_size) == (1.0, dot_score, 8)


def test_sentence_transformers_message_comes_first_where_it_rejects_the_value_too():
    with pytest.raises(opt.OptionError) as info:
        opt.validate("mini_batch_num_tokens", 0)
    assert str(info.value) == (
        "mini_batch_num_tokens must be a positive integer or None. mini_batch_num_tokens must be a positive integer, "
        "got 0"
    )
    with pytest.raises(opt.OptionError) as info:
        opt.validate("hardness_strength", -1)
    assert str(info.value).startswith("hardness_strength must be non-negative. hardness_strength must be")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        pytest.param("scale", float("inf"), "scale must be a finite number > 0, got inf", id="scale-inf"),
        pytest.param(
            "directions",
            ("query_to_doc", "query_to_doc"),
            "directions has repeated entries: ('query_to_doc', 'query_to_doc')",
            id="directions-repeated",
        ),
        pytest.param("scale", "20", "scale must be a finite number > 0, got '20'", id="scale-string"),
    ],
)
def test_our_message_alone_where_sentence_transformers_accepts_the_value_or_fails_otherwise(name, value, message):
    # MNRL takes an infinite scale and repeated directions; it fails on a string scale with a TypeError of its own.
    assert opt.mnrl_message(name, value) is None
    with pytest.raises(opt.OptionError) as info:
        opt.validate(name, value)
    assert str(info.value) == message
