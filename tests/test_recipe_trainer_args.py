"""The recipe speaks SentenceTransformerTrainingArguments: config files and flags reach the trainer, runs resume,
report to TensorBoard, push to a (mocked) hub, and repeat from their results.json."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
import types
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from st_mnr_plus import registry
from st_mnr_plus.cli import ConfigFileError, load_config_file, main, parse_train_args, train_parser
from st_mnr_plus.recipe import (
    INTERRUPTED_CHECKPOINT,
    RecipeError,
    RecipeOptions,
    build_loss,
    find_last_checkpoint,
    load_model,
    prepare_recipe,
    resolve_resume,
)
from tests.plugins.conftest import write_plugin_dist

TEXTS = ["a man is playing a guitar .", "two dogs run across a field ."]


@pytest.fixture(scope="module")
def tiny_model_dir(_tiny_model_session, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    _tiny_model_session.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def nli_rows(snli_dev, tmp_path_factory) -> Path:
    """The first 200 SNLI dev lines: enough for a few batches of 16 entailment pairs, quick to build."""
    path = tmp_path_factory.mktemp("rows") / "nli-rows.jsonl"
    with gzip.open(snli_dev, "rt", encoding="utf-8") as handle:
        path.write_text("".join(line for _, line in zip(range(200), handle, strict=False)), encoding="utf-8")
    return path


def fast_run(model_dir: Path, rows: Path, output_dir: Path, *extra: str) -> list[str]:
    """A few steps of the tiny model on a handful of rows, no evaluators, no checkpoints unless asked."""
    return [
        "--model", str(model_dir), "--source", str(rows), "--max-rows", "64", "--batch-size", "16",
        "--max-steps", "2", "--evaluators", "--save_strategy", "no", "--logging_steps", "1",
        "--use_cpu", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def encode(model_dir: Path) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS, convert_to_tensor=True)


# -- configuration -------------------------------------------------------------------------------------------------


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


def test_unknown_flag_is_one_line_with_the_close_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--batch-sise", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "--batch-sise" in err
    assert "--batch-size" in err


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


def test_boolean_flags_reject_non_booleans(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--bf16", "maybe"])
    assert exit_info.value.code == 2
    assert "Truthy value expected" in capsys.readouterr().err


def test_boolean_loss_options_reject_non_booleans(tiny_model):
    options = RecipeOptions(loss_options={"symmetric": "maybe"})
    with pytest.raises(RecipeError, match=r"'symmetric' must be true or false.*'maybe'"):
        build_loss(options, tiny_model)
    _, loss = build_loss(RecipeOptions(loss_options={"symmetric": "yes", "mask_duplicates": 0}), tiny_model)
    assert loss.symmetric is True
    assert loss.mask_duplicates is False


def test_help_names_every_trainer_option_and_the_recipe_defaults():
    text = train_parser().format_help()
    for flag in ("--gradient_accumulation_steps", "--bf16", "--push_to_hub", "--hub_model_id", "--report_to"):
        assert flag in text
    assert "--resume_from_checkpoint" in text
    assert "recipe options" in text
    assert "default in the recipe: 64; the trainer's: 8" in " ".join(text.split())
    for alias in ("--batch-size", "--epochs", "--lr", "--resume"):
        assert alias in text


def test_a_warmup_ratio_outside_0_1_is_refused_before_any_data_is_built(capsys):
    assert main(["train", "--warmup-ratio", "1.5", "--dry-run"]) == 2
    assert "warmup_ratio must be in [0, 1), got 1.5" in capsys.readouterr().err


def test_the_recipe_sets_the_batch_sampler(capsys):
    assert main(["train", "--batch_sampler", "no_duplicates", "--dry-run"]) == 2
    assert "use --sampler" in capsys.readouterr().err


# -- resuming ------------------------------------------------------------------------------------------------------


def test_interrupted_run_resumes_to_the_same_step_and_model(tmp_path, monkeypatch, tiny_model_dir, nli_rows):
    """Ctrl-C (a plugin callback raises KeyboardInterrupt at step 2 of 4) leaves checkpoint-interrupted/; --resume
    with the run's config.yaml continues it to step 4 and ends with the model of an uninterrupted run, which it
    reaches only if the learnable scale, the optimizer, the scheduler and the RNG all come back."""
    from st_mnr_plus.plugins.manager import reset_plugin_manager

    plugin = write_plugin_dist(
        tmp_path / "plugin",
        "st-mnr-plus-interrupt",
        "interrupt_plugin_resume",
        """
        from transformers import TrainerCallback
        from st_mnr_plus import hookimpl

        class InterruptAtStep2(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 2:
                    raise KeyboardInterrupt

        @hookimpl
        def register_callbacks():
            return {"interrupt_at_2": InterruptAtStep2}
        """,
    )
    monkeypatch.syspath_prepend(str(plugin))
    monkeypatch.delenv("ST_MNR_PLUS_DISABLE_PLUGINS", raising=False)
    reset_plugin_manager()
    try:
        # A learning rate this high moves the learnable scale visibly in two steps.
        common = ["--max-steps", "4", "--loss-option", "learnable_scale=true", "--lr", "0.05"]
        whole, split = tmp_path / "whole", tmp_path / "split"
        assert main(["train", *fast_run(tiny_model_dir, nli_rows, whole), *common]) == 0

        interrupted = fast_run(tiny_model_dir, nli_rows, split)
        assert main(["train", *interrupted, *common, "--callbacks", "mnr_diagnostics", "interrupt_at_2"]) == 130
        folder = split / INTERRUPTED_CHECKPOINT
        for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "loss_state.pt"):
            assert (folder / name).is_file(), name
        assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 2
        assert not (split / "results.json").exists()

        # The config.yaml written at the start of the run, without the interrupting callback.
        resume = ["--config", str(split / "config.yaml"), "--callbacks", "mnr_diagnostics", "--resume"]
        assert main(["train", *resume]) == 0
    finally:
        sys.modules.pop("interrupt_plugin_resume", None)
        reset_plugin_manager()
    summary = json.loads((split / "results.json").read_text())
    assert summary["steps"] == 4
    assert summary["resumed_from"] == str(folder)
    torch.testing.assert_close(encode(split / "final"), encode(whole / "final"))


def test_last_checkpoint_is_the_highest_step_interrupted_included(tmp_path):
    def checkpoint(name: str, step: int | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if step is not None:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        return folder

    checkpoint("checkpoint-2", 2)
    interrupted = checkpoint(INTERRUPTED_CHECKPOINT, 3)
    checkpoint("checkpoint-5", None)  # no trainer state: not resumable
    checkpoint("other-9", 9)
    assert find_last_checkpoint(tmp_path) == interrupted
    assert resolve_resume("last", tmp_path) == interrupted
    assert resolve_resume(True, tmp_path) == interrupted
    assert resolve_resume("false", tmp_path) is None
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(RecipeError, match=r"no readable trainer_state\.json"):
        resolve_resume(str(tmp_path / "checkpoint-5"), tmp_path)


def test_resume_without_a_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["train", "--resume", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "no resumable checkpoint" in err


def test_a_failure_inside_training_keeps_its_traceback_and_the_output(
    tmp_path, monkeypatch, caplog, tiny_model_dir, nli_rows
):
    from transformers import TrainerCallback

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("boom at step 2")

    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: Boom if name == "boom" else real_get(kind, name))
    output = tmp_path / "out"
    argv = [*fast_run(tiny_model_dir, nli_rows, output), "--max-steps", "3", "--callbacks", "boom"]
    with pytest.raises(RuntimeError, match="boom at step 2"), caplog.at_level("ERROR", logger="st_mnr_plus.recipe"):
        main(["train", *argv, "--save_strategy", "steps", "--save_steps", "1"])
    assert (output / "checkpoint-1" / "trainer_state.json").is_file()
    assert "partial output" in caplog.text


# -- one finished run: TensorBoard, the hub, the model card, results.json ---------------------------------------


class _FakeHub:
    """huggingface_hub.HfApi at the network boundary: records create_repo and upload_folder."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, api, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return types.SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def upload_folder(self, api, **kwargs):
        # What upload_folder gets is all there is: copy the folder's file names now (they change afterwards).
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        self.calls.append(("upload_folder", {**kwargs, "files": files}))
        info = types.SimpleNamespace(commit_url="https://huggingface.co/me/commit/1", oid="1")
        if kwargs.get("run_as_future"):
            future: Future = Future()
            future.set_result(info)
            return future
        return info


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir, nli_rows):
    import huggingface_hub

    hub = _FakeHub()
    output = tmp_path_factory.mktemp("run") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            huggingface_hub.HfApi, "create_repo", lambda api, repo_id, **kw: hub.create_repo(api, repo_id, **kw)
        )
        patch.setattr(huggingface_hub.HfApi, "upload_folder", lambda api, **kw: hub.upload_folder(api, **kw))
        argv = fast_run(tiny_model_dir, nli_rows, output)
        hub_flags = ["--push_to_hub", "--hub_model_id", "me/tiny-mnr", "--hub_private_repo", "true"]
        hub_flags += ["--hub_token", "hf_secret_token_for_the_test"]
        reporter = ["--report_to", "tensorboard"] if importlib.util.find_spec("tensorboard") else []
        assert main(["train", *argv, *hub_flags, *reporter]) == 0
    return output, hub


def test_report_to_tensorboard_writes_the_callbacks_figures(finished_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output, _ = finished_run
    (events,) = output.glob("runs/*/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/mnr/accuracy", "train/throughput/samples_per_second"} <= tags


def test_push_to_hub_creates_the_repo_and_uploads_the_model_folder(finished_run):
    output, hub = finished_run
    (create,) = [kwargs for name, kwargs in hub.calls if name == "create_repo"]
    assert create["repo_id"] == "me/tiny-mnr"
    assert create["private"] is True
    uploads = [kwargs for name, kwargs in hub.calls if name == "upload_folder"]
    final = uploads[-1]
    assert final["repo_id"] == "me/tiny-mnr"
    assert Path(final["folder_path"]) == output
    assert {"model.safetensors", "modules.json", "README.md", "results.json", "config.yaml"} <= set(final["files"])
    for name in ("results.json", "config.yaml"):
        assert "hf_secret_token_for_the_test" not in (output / name).read_text()


def test_model_card_names_the_data_loss_and_sampler(finished_run):
    output, _ = finished_run
    card = (output / "README.md").read_text()
    assert "nli-rows.jsonl (pairs)" in card
    assert "MNRPlus" in card
    assert "NoDuplicatesSampler" in card


@pytest.mark.parametrize("name", ["results.json", "config.yaml"])
def test_results_repeat_the_configuration(finished_run, tmp_path, name):
    output, _ = finished_run
    recorded = json.loads((output / "results.json").read_text())["arguments"]
    assert recorded["gradient_accumulation_steps"] == 1  # the trainer's to_dict(), in full
    assert recorded["sources"]
    assert recorded["push_to_hub"] is True
    options, training_args = parse_train_args(
        ["--config", str(output / name), "--output_dir", str(tmp_path / "again"), "--dry-run"]
    )
    repeated = prepare_recipe(options, training_args).summary["arguments"]
    differ = {key for key in recorded.keys() | repeated.keys() if recorded.get(key) != repeated.get(key)}
    assert differ == {"output_dir", "dry_run"}


# -- model loading ---------------------------------------------------------------------------------------------------


def test_glove_models_come_from_the_glove_module(monkeypatch, tiny_model):
    seen = []

    def load_glove_model(spec: str):
        seen.append(spec)
        return tiny_model

    fake = types.ModuleType("st_mnr_plus.models.glove")
    fake.load_glove_model = load_glove_model
    monkeypatch.setitem(sys.modules, "st_mnr_plus.models.glove", fake)
    assert load_model("glove:path/to/glove.6B.50d.txt", 48) is tiny_model
    assert seen == ["path/to/glove.6B.50d.txt"]
    assert tiny_model.max_seq_length == 48

    monkeypatch.setitem(sys.modules, "st_mnr_plus.models.glove", None)  # the module is missing
    with pytest.raises(RecipeError, match=r"glove:x.*st_mnr_plus\.models\.glove"):
        load_model("glove:x", None)


def test_offline_errors_are_recognised_by_their_type():
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    from st_mnr_plus.recipe import _is_offline_error

    def raised_from(outer: BaseException, inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as error:
                raise outer from error
        except BaseException as chained:
            return chained

    # What sentence-transformers raises for an uncached model when offline, and what datasets raises.
    assert _is_offline_error(raised_from(OSError("We couldn't connect"), LocalEntryNotFoundError("not cached")))
    assert _is_offline_error(OfflineModeIsEnabled("offline"))
    assert _is_offline_error(ConnectionError("Couldn't reach 'x' on the Hub"))
    # A message that merely mentions the network is not an offline error.
    assert not _is_offline_error(ValueError("could not resolve the connection string; network offline?"))
    assert not _is_offline_error(raised_from(RuntimeError("x"), KeyError("offline")))
