"""Whole runs: dry runs, the outputs, reporters, the (mocked) hub, repeating a run from its results."""

from __future__ import annotations

import importlib.util
import json
import types
from concurrent.futures import Future
from pathlib import Path

import pytest

from st_mnr_plus import registry
from st_mnr_plus.cli import main, parse_train_args
from st_mnr_plus.recipe import (
    RecipeOptions,
    prepare_recipe,
)
from tests.recipe.conftest import fast_run, run_cli


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


def test_existing_output_dir_is_not_overwritten(tmp_path, tiny_model_dir, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    status = main(["train", "--model", str(tiny_model_dir), "--output-dir", str(out_dir), "--max-steps", "1"])
    assert status == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out_dir / "keep.txt").read_text() == "mine"


def test_dry_run_builds_and_validates_without_training(tmp_path, tiny_model_dir, capsys):
    out_dir = tmp_path / "out"
    status = main(["train", "--model", str(tiny_model_dir), "--output-dir", str(out_dir), "--dry-run"])
    out, err = capsys.readouterr()
    assert status == 0, err[-3000:]
    assert "dry run" in out
    assert not out_dir.exists()


def test_dry_run_builds_the_sampler_as_the_trainer_will(monkeypatch, tmp_path, tiny_model_dir):
    # The trainer passes drop_last=args.dataloader_drop_last (False by default) and seed=args.seed: the dry run's
    # validation must see the same layout.
    from st_mnr_plus import registry
    from st_mnr_plus.recipe import run_recipe
    from st_mnr_plus.sampler import NoDuplicatesSampler

    built = []

    class Recording(NoDuplicatesSampler):
        def __init__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
            super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
            built.append((batch_size, drop_last, seed))

    real_get = registry.get
    monkeypatch.setattr(
        registry, "get", lambda kind, name: Recording if kind == "batch_sampler" else real_get(kind, name)
    )
    options = RecipeOptions(model=str(tiny_model_dir), dry_run=True, max_rows=64)
    summary = run_recipe(options, {"output_dir": str(tmp_path / "out"), "seed": 7, "per_device_train_batch_size": 16})
    assert summary["dry_run"] is True
    assert built == [(16, False, 7)]


@pytest.mark.slow  # a full recipe run with STS evaluation in a subprocess: ~12 s
def test_train_end_to_end_saves_a_loadable_model_whose_scores_match(tmp_path, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    from st_mnr_plus import stsb_evaluator

    out_dir = tmp_path / "out"
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'model = "{tiny_model_dir}"\noutput_dir = "{out_dir}"\nmax_rows = 96\nbatch_size = 16\n'
        "max_steps = 4\nmax_seq_length = 32\neval_steps = 4\nlogging_steps = 1\n"
    )
    result = run_cli("train", "--config", str(config), "--loss-option", "symmetric=true")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out_dir / "results.json").read_text())
    assert summary["steps"] == 4
    assert summary["loss"]["name"] == "mnr_plus"
    assert "->" in result.stdout  # the before -> after line of the printed summary
    assert (out_dir / "training.png").stat().st_size > 0

    model = SentenceTransformer(summary["model_dir"], device="cpu")
    fresh = stsb_evaluator(split="test")(model)
    (key,) = summary["scores_after"]
    assert fresh[key] == pytest.approx(summary["scores_after"][key], abs=1e-6)
    assert summary["scores_before"][key] != pytest.approx(summary["scores_after"][key], abs=1e-9)


@pytest.mark.parametrize(("rows", "batch"), [(70, 64), (64, 16)], ids=["partial-last-batch", "full-batches"])
def test_the_dry_run_plans_the_steps_the_run_takes(tmp_path, tiny_model_dir, nli_rows, capsys, rows, batch):
    """The plan used to count full batches only: 70 rows at batch 64 planned 1 step, and the run took 2."""
    argv = fast_run(tiny_model_dir, nli_rows, tmp_path / "out")
    argv = [a for a in argv if a not in ("--max-steps", "2")]
    argv[argv.index("--max-rows") + 1], argv[argv.index("--batch-size") + 1] = str(rows), str(batch)
    assert main(["train", *argv, "--sampler", "default", "--dry-run"]) == 0
    planned = json.loads(capsys.readouterr().out.split("=" * 72)[-1])["planned_steps"]
    assert main(["train", *argv, "--sampler", "default"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert planned == results["planned_steps"] == results["steps"] == -(-rows // batch)


def test_the_summary_reports_the_trained_scale(tmp_path, tiny_model_dir, nli_rows, capsys):
    argv = fast_run(tiny_model_dir, nli_rows, tmp_path / "out")
    options = ["--loss-option", "learnable_scale=true", "--loss-option", "scale_learning_rate=0.2"]
    assert main(["train", *argv, *options]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert results["loss"]["scale"] != 20.0
    assert abs(results["loss"]["scale"] - 20.0) > 0.5  # two steps at rate 0.2 move it by about 40%
    assert f"scale={results['loss']['scale']}" in capsys.readouterr().out
