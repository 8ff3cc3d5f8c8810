"""The config schema of ``st-mnr-plus train``, in one place: the names (the recipe's options and every trainer
field, with their aliases), the types values are coerced to (the true/false words included, defined once here),
reading a YAML/TOML/JSON ``--config`` file, merging command-line flags over it, and writing a run's arguments back
as ``config.yaml``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import functools
import inspect
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from st_mnr_plus.common.switches import FALSE_WORDS as FALSE_WORDS
from st_mnr_plus.common.switches import TRUE_WORDS as TRUE_WORDS
from st_mnr_plus.common.switches import switch_word
from st_mnr_plus.recipe.options import RecipeError, RecipeOptions

# Short or earlier names, accepted as flags and config keys, and the field each sets.
TRAINER_ALIASES = {
    "batch_size": "per_device_train_batch_size",
    "epochs": "num_train_epochs",
    "lr": "learning_rate",
    "resume": "resume_from_checkpoint",
}
CONFIG_ALIASES = {
    **TRAINER_ALIASES,
    "source": "sources",
    "evaluator": "evaluators",
    "callback": "callbacks",
    "loss_option": "loss_options",
    "evaluator_option": "evaluator_options",
}

# TRUE_WORDS / FALSE_WORDS: what a config value or a KEY=VALUE option may say for true or false (any case), listed
# once in st_mnr_plus.common.switches, which environment switches read too; re-exported here.
_NULL_WORDS = ("null", "none")


class ConfigFileError(RecipeError):
    """A ``--config`` file that cannot be read, names an unknown option or gives a value of the wrong type."""


def as_bool(value: Any) -> bool | None:
    """``value`` as a boolean: ``True``/``False`` themselves, or one of :data:`TRUE_WORDS` / :data:`FALSE_WORDS`
    (any case; an integer counts as its digits). ``None`` for anything else."""
    if isinstance(value, bool):
        return value
    return switch_word(str(value)) if isinstance(value, str | int) else None


def parse_value(raw: str) -> Any:
    """A ``KEY=VALUE`` value from the command line: ``true``/``false``/``null``/``none`` (any case) as those, a
    Python/JSON literal as its value, anything else as the text. A boolean option also takes the other
    :data:`TRUE_WORDS`/:data:`FALSE_WORDS`, converted where the option's type is known (:func:`conform`)."""
    lowered = raw.strip().lower()
    if lowered in ("true", "false") or lowered in _NULL_WORDS:
        return as_bool(lowered) if lowered in ("true", "false") else None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def merge_option(target: dict[str, Any], key: str, value: Any, nested: bool) -> None:
    if nested and isinstance(value, Mapping) and isinstance(target.get(key), Mapping):
        target[key] = {**target[key], **value}
    else:
        target[key] = value


class Mismatch(Exception):
    """A value that does not conform to its declared type; ``expected`` says what it should be."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def conform(value: Any, hint: Any) -> Any:
    """``value`` as a field typed ``hint`` takes it (a string of digits for an int, ...), or :class:`Mismatch`."""
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
                return conform(value, member)
            except Mismatch as exc:
                expected.append(exc.expected)
        raise Mismatch(" or ".join(expected) + (" or null" if type(None) in members else ""))
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise Mismatch("one of " + ", ".join(repr(v) for v in typing.get_args(hint)))
    if origin is list or hint is list:
        if isinstance(value, str):
            value = [value]  # a single item
        if not isinstance(value, list):
            raise Mismatch("a list")
        (item,) = typing.get_args(hint) or (Any,)
        return [conform(v, item) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise Mismatch("a mapping")
        return dict(value)
    if hint is bool:
        checked = as_bool(value)
        if checked is None:
            raise Mismatch("true or false")
        return checked
    if hint is int or hint is float:
        # An int is also a float; a bool is neither. A string is parsed, as on the command line.
        if isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return hint(value)
            except ValueError:
                pass
        raise Mismatch("an integer" if hint is int else "a number")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise Mismatch("a string")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [member.value for member in hint]
        if isinstance(value, hint) or value in allowed:
            return value
        raise Mismatch("one of " + ", ".join(repr(v) for v in allowed))
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise Mismatch(f"a {hint.__name__}")
    return value  # Callable[...] and other hints a file cannot express: the dataclass decides


@functools.cache
def declared_types() -> dict[str, Any]:
    """Every config key's declared type: the recipe's options, then the trainer's arguments."""
    from sentence_transformers import SentenceTransformerTrainingArguments

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
    declared = declared_types()
    values: dict[str, Any] = {}
    unknown = []
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        key = CONFIG_ALIASES.get(key, key)
        if key not in declared:
            unknown.append(str(raw_key))
            continue
        if key.endswith("_token") and value == f"<{key.upper()}>":
            continue  # redacted by the trainer's to_dict() in a results.json: not a value
        if key in values:
            raise ConfigFileError(f"Config file {path!r}: {key!r} is given twice (under an alias and its name).")
        try:
            values[key] = conform(value, declared[key])
        except Mismatch as exc:
            raise ConfigFileError(
                f"Config file {path!r}: {raw_key!r} expected {exc.expected}, got {value!r}."
            ) from None
    if unknown:
        known = sorted(set(declared) | set(CONFIG_ALIASES))
        close = [match for key in unknown for match in difflib.get_close_matches(key.replace("-", "_"), known, n=1)]
        hint = f" (did you mean {', '.join(repr(m) for m in close)}?)" if close else ""
        raise ConfigFileError(
            f"Config file {path!r}: unknown option(s) {sorted(unknown)}{hint}; known options: {known}."
        )
    return values


def recipe_arguments(given: Mapping[str, Any]) -> tuple[RecipeOptions, dict[str, Any]]:
    """Options given on the command line (a ``config`` entry names a config file), over that file's:
    ``(RecipeOptions, the trainer arguments that were given)``.

    ``loss_options`` and ``evaluator_options`` given both ways are merged, the command line's winning.
    """
    flags = dict(given)
    config = flags.pop("config", None)
    values: dict[str, Any] = load_config_file(config) if config else {}
    for key in ("loss_options", "evaluator_options"):
        if key in flags and isinstance(values.get(key), Mapping):
            merged = dict(values[key])
            for name, value in flags[key].items():
                merge_option(merged, name, value, nested=key == "evaluator_options")
            flags[key] = merged
    values.update(flags)
    recipe_names = set(RecipeOptions.field_names())
    options = RecipeOptions(**{k: v for k, v in values.items() if k in recipe_names})
    return options, {k: v for k, v in values.items() if k not in recipe_names}


def _expects_bool(parameter: inspect.Parameter, hints: Mapping[str, Any]) -> bool:
    hint = hints.get(parameter.name, parameter.annotation)
    if hint is bool:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set(typing.get_args(hint)) <= {bool, type(None)} and bool in typing.get_args(hint)
    if isinstance(hint, str):
        return hint.replace(" ", "") in ("bool", "bool|None", "None|bool", "Optional[bool]")
    return hint is inspect.Parameter.empty and isinstance(parameter.default, bool)


def check_loss_options(loss_cls: Any, name: str, options: dict[str, Any]) -> dict[str, Any]:
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
        as_boolean = as_bool(value)
        if as_boolean is not None:
            checked[key] = as_boolean
            continue
        raise RecipeError(f"Loss {name!r} option {key!r} must be true or false (yes/no, 1/0), got {value!r}.")
    return checked


def resolved_arguments(options: RecipeOptions, args: Any) -> dict[str, Any]:
    """Everything that configures a run, as one flat mapping a config file can hold.

    The recipe's options, then the trainer's ``to_dict()`` (tokens come out redacted, the batch sampler class
    is named by the recipe's ``sampler``), without ``resume_from_checkpoint``: repeating a run is not resuming it.
    """
    trainer = {k: v for k, v in args.to_dict().items() if k not in ("resume_from_checkpoint", "batch_sampler")}
    merged = {**dataclasses.asdict(options), **trainer}
    return json.loads(json.dumps(merged, default=str))


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
