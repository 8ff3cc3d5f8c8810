"""Config files and flags: one schema, coerced and checked, reaching the trainer."""

from __future__ import annotations

import pytest

from st_mnr_plus.cli import main, parse_train_args
from st_mnr_plus.recipe import (
    RecipeError,
    RecipeOptions,
    build_loss,
    prepare_recipe,
)
from st_mnr_plus.recipe.config import ConfigFileError, load_config_file


def test_config_file_trainer_options_reach_the_trainer(tmp_path, tiny_model_dir, nli_rows):
    from transformers.trainer_utils import SchedulerType

    from st_mnr_plus.sampler import NoDuplicatesSampler

    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\nsource: {nli_rows}\nmax_rows: 64\nevaluators: []\n"
        "use_cpu: true\nbf16: true\ngradient_accumulation_steps: 2\nlr_scheduler_type: cosine\n"
        "weight_decay: 0.01\nbatch_size: 8\nmax_steps: 3\nwarmup_ratio: 0.2\n"
    )
    options, training_args = parse_train_args(
        ["--config", str(config), "--weight_decay", "0.05", "--lr", "1e-4", "--output_dir", str(tmp_path / "out")]
    )
    trainer = prepare_recipe(options, training_args).trainer
    args = trainer.args
    assert args.use_cpu is True
    assert args.bf16 is True
    assert args.gradient_accumulation_steps == 2
    assert args.lr_scheduler_type == SchedulerType.COSINE
    assert args.weight_decay == 0.05  # the flag over the file
    assert args.learning_rate == 1e-4  # --lr, an alias
    assert args.per_device_train_batch_size == 8  # batch_size, an alias, in the file
    assert args.warmup_steps == 0.2  # the recipe's --warmup-ratio of old, as transformers 5 takes a ratio
    # The recipe's own defaults where nothing was given.
    assert args.save_total_limit == 2
    assert args.report_to == []  # offline (HF_HUB_OFFLINE=1 in the tests): "none"
    assert args.batch_sampler is NoDuplicatesSampler
    assert args.output_dir == str(tmp_path / "out")


def test_flags_override_the_file_and_merge_its_options(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        'sources = ["a.jsonl"]\nevaluators = ["stsb", "sickr"]\nseed = 1\n'
        "[loss_options]\nsymmetric = true\nscale = 20\n"
        '[evaluator_options.sickr]\nsource = "SICK"\n'
    )
    options, training_args = parse_train_args(
        [
            "--config", str(config), "--source", "b.jsonl", "--loss-option", "scale=30",
            "--evaluator-option", "sickr.name=mine", "--seed", "2",
        ]
    )  # fmt: skip
    assert options.sources == ["b.jsonl"]
    assert options.evaluators == ["stsb", "sickr"]
    assert options.loss_options == {"symmetric": True, "scale": 30}
    assert options.evaluator_options == {"sickr": {"source": "SICK", "name": "mine"}}
    assert training_args == {"seed": 2}


def test_repeated_and_listed_flags_both_work():
    options, _ = parse_train_args(["--source", "a", "--source", "b", "c", "--callbacks", "--evaluator", "stsb"])
    assert options.sources == ["a", "b", "c"]
    assert options.callbacks == []
    assert options.evaluators == ["stsb"]


def test_unknown_config_key_is_one_line_listing_the_known_ones(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("batch_sise: 16\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "'batch_sise'" in err
    assert "did you mean 'batch_size'" in err
    assert "'per_device_train_batch_size'" in err  # a trainer field among the known ones
    assert "'loss_options'" in err  # a recipe option among them


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("bf16: maybe\n", r"'bf16' expected true or false, got 'maybe'", id="bool"),
        pytest.param("gradient_accumulation_steps: two\n", r"expected an integer, got 'two'", id="int"),
        pytest.param("kind: quads\n", r"'kind' expected one of 'pairs', 'triplets'", id="choice"),
        pytest.param("loss_options: [1, 2]\n", r"'loss_options' expected a mapping", id="mapping"),
    ],
)
def test_config_values_of_the_wrong_type_are_named(tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        load_config_file(str(config))


def test_boolean_loss_options_reject_non_booleans(tiny_model):
    options = RecipeOptions(loss_options={"symmetric": "maybe"})
    with pytest.raises(RecipeError, match=r"'symmetric' must be true or false.*'maybe'"):
        build_loss(options, tiny_model)
    _, loss = build_loss(RecipeOptions(loss_options={"symmetric": "yes", "mask_duplicates": 0}), tiny_model)
    assert loss.symmetric is True
    assert loss.mask_duplicates is False


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        pytest.param(
            ".yaml",
            "kind: triplets\nbatch_size: 16\nloss_options:\n  symmetric: true\nsource: a.jsonl\nmax-steps: 5\n",
            id="yaml",
        ),
        pytest.param(
            ".toml",
            'kind = "triplets"\nbatch_size = 16\nsources = ["a.jsonl"]\nmax_steps = 5\n[loss_options]\nsymmetric = true\n',
            id="toml",
        ),
    ],
)
def test_config_file_is_equivalent_to_flags(tmp_path, suffix, text):
    path = tmp_path / f"config{suffix}"
    path.write_text(text)
    from_file = parse_train_args(["--config", str(path)])
    flags = ["--kind", "triplets", "--batch-size", "16", "--loss-option", "symmetric=true", "--source", "a.jsonl"]
    assert from_file == parse_train_args([*flags, "--max-steps", "5"])
    assert from_file == (
        RecipeOptions(kind="triplets", loss_options={"symmetric": True}, sources=["a.jsonl"]),
        {"per_device_train_batch_size": 16, "max_steps": 5},
    )


def test_config_file_with_unknown_option_names_file_and_option(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("batch_sise: 16\n")
    with pytest.raises(ConfigFileError, match=r"config\.yaml.*'batch_sise'.*known options: .*'max_steps'"):
        load_config_file(str(path))


def test_missing_config_file_names_the_path(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err
