"""``st-mnr-plus bench``: st-mnr-plus's components against the sentence-transformers originals, on this machine.

Registered in :mod:`st_mnr_plus.cli` with :func:`add_parser`; :func:`main` runs it. torch and the workloads are
imported when the command runs, so that registering it keeps ``st-mnr-plus --help`` fast.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st_mnr_plus.bench import report

if TYPE_CHECKING:
    from st_mnr_plus.bench.harness import Measurement

logger = logging.getLogger(__name__)

__all__ = ["add_parser", "main", "run"]

SECTIONS = ("loss", "step", "cached", "sampler")
#: Each section's sentence-transformers baseline; the cached section has one per mini-batch setting (every
#: ``cmnrl-*`` variant, see :func:`_baselines`).
BASELINES = {"loss": "mnrl", "step": "mnrl", "cached": "cmnrl", "sampler": "st_plain"}
#: The default token budget of the cached section, per row of ``--mini-batch-size``: about the mean token count
#: of the shipped sentences (14-18 with all-MiniLM-L6-v2's tokenizer), so that a budget holds about as many rows
#: as a mini-batch of ``--mini-batch-size`` rows.
TOKENS_PER_ROW = 16

# Sizes: (quick, full). The full loss batch also depends on the device, see _settings.
QUICK = {
    "batch_size": 1024,
    "dim": 384,
    "step_batch_size": 32,
    "steps": 2,
    "rounds": 1,
    "sampler_rows": 10_000,
    "repeats": 3,
    "cached_batch_size": 64,
    "mini_batch_size": 16,
    "cached_steps": 1,
}
FULL = {
    "batch_size": None,  # 4,096 on CPU, 16,384 on CUDA
    "dim": 768,
    "step_batch_size": 128,
    "steps": 3,
    "rounds": 2,
    "sampler_rows": 100_000,
    "repeats": 5,
    "cached_batch_size": None,  # 256 on CPU, 4,096 on CUDA
    "mini_batch_size": 64,
    "cached_steps": 1,
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``st-mnr-plus``'s subparsers; it runs :func:`main`."""
    parser = subparsers.add_parser(
        "bench",
        help="Time MNRPlus, a training step, CachedMNRPlus and the sampler against the sentence-transformers "
        "originals here.",
        description="Run st-mnr-plus's benchmark comparisons on this machine (CUDA when available, else CPU): "
        "(loss) forward + backward of MNRPlus vs MultipleNegativesRankingLoss on random embeddings, time and "
        "peak memory; (step) training steps of a model through SentenceTransformerTrainer with MNRPlus "
        "(length-grouped) vs MultipleNegativesRankingLoss on the SNLI and STSb sentences shipped with the "
        "package, samples/s; (cached) one training step (forward + backward) of the model with CachedMNRPlus vs "
        "CachedMultipleNegativesRankingLoss, each with mini_batch_size and with mini_batch_num_tokens, every "
        "CachedMNRPlus setting against every CMNRL one; (sampler) NoDuplicatesSampler vs NoDuplicatesBatchSampler, "
        "one epoch. Prints a table of ratios and writes results.json and results.png.",
    )
    parser.add_argument("--quick", action="store_true", help="Small sizes: about a minute on 2 CPU cores.")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="Default: auto.")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="Run only this section; repeatable.")
    loss = parser.add_argument_group("loss")
    loss.add_argument(
        "--batch-size", type=int, help="Rows per column. Default: 4096 on CPU, 16384 on CUDA; 1024 quick."
    )
    loss.add_argument("--dim", type=int, help="Embedding dimension. Default: 768; 384 quick.")
    loss.add_argument("--negatives", type=int, default=0, help="Hard-negative columns. Default: 0.")
    loss.add_argument(
        "--dtype", choices=["bfloat16", "float16", "float32"], default="float32", help="Embedding dtype."
    )
    loss.add_argument("--no-memory", action="store_true", help="Skip the peak-memory measurement.")
    step = parser.add_argument_group("training step")
    step.add_argument("--model", help="Model directory or hub id. Default: all-MiniLM-L6-v2 (the 'model' extra).")
    step.add_argument("--max-seq-length", type=int, default=128, help="Default: 128.")
    step.add_argument("--step-batch-size", type=int, help="Training batch size. Default: 128; 32 quick.")
    step.add_argument("--steps", type=int, help="Timed steps per run, after one warm-up step. Default: 3; 2 quick.")
    step.add_argument(
        "--rounds",
        type=int,
        help="Training runs per loss (step) and rounds of --cached-steps per variant (cached), alternating the "
        "order. Default: 2; 1 quick.",
    )
    cached = parser.add_argument_group(
        "cached loss",
        "The model of --model at --max-seq-length, in train mode; the first --cached-batch-size shipped sentence "
        "pairs. Peak memory is measured on CUDA only (torch.cuda.max_memory_allocated).",
    )
    cached.add_argument(
        "--cached-batch-size", type=int, help="Training batch size. Default: 256 on CPU, 4096 on CUDA; 64 quick."
    )
    cached.add_argument("--mini-batch-size", type=int, help="mini_batch_size of both losses. Default: 64; 16 quick.")
    cached.add_argument(
        "--mini-batch-num-tokens",
        type=int,
        action="append",
        help=f"mini_batch_num_tokens of both losses; repeatable. Default: {TOKENS_PER_ROW} x --mini-batch-size "
        "(about the mean token count of the shipped sentences, so about --mini-batch-size rows per mini-batch).",
    )
    cached.add_argument("--cached-steps", type=int, help="Timed steps per variant in each round. Default: 1.")
    sampler = parser.add_argument_group("sampler")
    sampler.add_argument("--sampler-rows", type=int, help="Dataset rows. Default: 100000; 10000 quick.")
    sampler.add_argument("--sampler-batch-size", type=int, default=128, help="Default: 128.")
    output = parser.add_argument_group("timing and output")
    output.add_argument("--repeats", type=int, help="Timed calls per loss/sampler case. Default: 5; 3 quick.")
    output.add_argument("--warmup", type=int, default=1, help="Untimed calls first. Default: 1.")
    output.add_argument("--output-dir", default="st-mnr-plus-bench", help="Where results.json/.png go.")
    output.add_argument("--compare", metavar="OLD_JSON", help="A results.json of an earlier run to compare with.")
    output.add_argument("--no-plot", action="store_true", help="Write no PNG (matplotlib not needed).")
    parser.set_defaults(func=main)
    return parser


def _settings(args: argparse.Namespace, device: str) -> dict[str, Any]:
    defaults = dict(QUICK if args.quick else FULL)
    if defaults["batch_size"] is None:
        defaults["batch_size"] = 16384 if device == "cuda" else 4096
    settings = {
        key: getattr(args, key) if getattr(args, key) is not None else value for key, value in defaults.items()
    }
    settings.update(
        negatives=args.negatives,
        dtype=args.dtype,
        memory=not args.no_memory,
        model=args.model,
        max_seq_length=args.max_seq_length,
        sampler_batch_size=args.sampler_batch_size,
        warmup=args.warmup,
        quick=args.quick,
        sections=list(args.only or SECTIONS),
    )
    if settings["cached_batch_size"] is None:
        settings["cached_batch_size"] = 4096 if device == "cuda" else 256
    tokens = args.mini_batch_num_tokens or [TOKENS_PER_ROW * settings["mini_batch_size"]]
    settings["mini_batch_num_tokens"] = list(dict.fromkeys(tokens))  # in order, once each
    positive = ("batch_size", "dim", "step_batch_size", "steps", "rounds", "sampler_rows", "repeats")
    positive += ("cached_batch_size", "mini_batch_size", "cached_steps")
    for key in positive:
        if settings[key] < 1:
            raise report.BenchSettingsError(
                f"--{key.replace('_', '-')} must be a positive integer, got {settings[key]}"
            )
    for key in ("negatives", "warmup"):
        if settings[key] < 0:
            raise report.BenchSettingsError(f"--{key} must be a non-negative integer, got {settings[key]}")
    for tokens in settings["mini_batch_num_tokens"]:
        if tokens < 1:
            raise report.BenchSettingsError(f"--mini-batch-num-tokens must be a positive integer, got {tokens}")
    return settings


def _cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine(device: str) -> dict[str, Any]:
    import sentence_transformers
    import torch

    from st_mnr_plus import __version__

    name = torch.cuda.get_device_name(0) if device == "cuda" else _cpu_name()
    return {
        "device": device,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sentence_transformers": sentence_transformers.__version__,
        "st_mnr_plus": __version__,
    }


def _bench_loss(settings: dict[str, Any], device: str) -> list[Measurement]:

    from st_mnr_plus.bench import workloads
    from st_mnr_plus.bench.fresh import run_fresh
    from st_mnr_plus.bench.harness import Measurement, time_call

    batch, dim, negatives, dtype_name = (
        settings["batch_size"],
        settings["dim"],
        settings["negatives"],
        settings["dtype"],
    )
    dtype = workloads.DTYPES[dtype_name]
    group = f"loss B={batch} d={dim} neg={negatives} {dtype_name}"
    measurements = []
    for name in workloads.LOSSES:
        logger.info("bench: %s, %s", group, name)
        loss_fn = workloads.make_loss(name)
        params = {"batch": batch, "dim": dim, "negatives": negatives, "dtype": dtype_name}
        measurement = Measurement(group=group, name=name, params=params)

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (workloads.make_embeddings(batch, dim, negatives, device=device, dtype=dtype),), {}

        try:
            measurement.times, _ = time_call(
                lambda embeddings, loss_fn=loss_fn: workloads.loss_step(loss_fn, embeddings),
                setup=setup,
                warmup=settings["warmup"],
                repeats=settings["repeats"],
                device=device,
            )
        except (MemoryError, RuntimeError) as error:  # out of memory: record it, the table shows it
            _record_error(measurement, error, device)
        if settings["memory"] and "error" not in measurement.extra and device == "cuda":
            memory = workloads.measure_loss_memory(loss_fn, batch, dim, negatives, device=device, dtype=dtype)
            _record_memory(measurement, memory)
        measurements.append(measurement)
    if settings["memory"] and device != "cuda":
        # Peak RSS is a high-water mark: a fresh process per loss. They run side by side, after the timings:
        # memory does not mind sharing the cores, and each process spends most of its life importing.
        todo = [m for m in measurements if "error" not in m.extra]
        with ThreadPoolExecutor(max_workers=len(todo) or 1) as pool:
            results = list(pool.map(lambda m: run_fresh(m.name, batch, dim, negatives, dtype=dtype_name), todo))
        for measurement, memory in zip(todo, results, strict=True):
            _record_memory(measurement, memory)
    return measurements


def _record_error(measurement: Measurement, error: BaseException, device: str) -> None:
    """A measurement that ran out of memory: its first line goes into the table; the GPU's cache is freed."""
    measurement.extra["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _record_memory(measurement: Measurement, memory: dict[str, Any]) -> None:
    if memory.get("ok"):
        measurement.extra["peak_extra_gib"] = memory["peak_extra_gib"]
        measurement.extra["memory"] = memory["memory"]
    else:
        measurement.extra["memory_error"] = memory.get("error")


def _bench_step(settings: dict[str, Any], device: str) -> list[Measurement]:
    import torch

    from st_mnr_plus.bench import workloads
    from st_mnr_plus.bench.harness import Measurement

    base = workloads.load_model(settings["model"], max_seq_length=settings["max_seq_length"], device=device)
    pairs = workloads.packaged_text_pairs()
    batch, steps, warmup = settings["step_batch_size"], settings["steps"], settings["warmup"]
    model_name = Path(settings["model"]).name if settings["model"] else "all-MiniLM-L6-v2"
    group = f"step {model_name} B={batch} L={settings['max_seq_length']}"
    names = ["mnrl", "mnr_plus"] if settings["quick"] else list(workloads.STEP_LOSSES)
    measurements = {
        name: Measurement(
            group=group, name=name, params={"batch": batch, "max_seq_length": settings["max_seq_length"]}
        )
        for name in names
    }
    for round_index in range(settings["rounds"]):
        # Alternate the order between rounds, so that a machine getting busier favours no loss.
        for name in names if round_index % 2 == 0 else names[::-1]:
            logger.info("bench: %s, %s (round %d)", group, name, round_index + 1)
            model = workloads.fresh_copy(base)
            loss = workloads.make_step_loss(name, model)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = workloads.trainer_steps(
                model, loss, pairs, batch_size=batch, steps=warmup + steps, seed=round_index, device=device
            )
            measurements[name].times += times[warmup:]
            if device == "cuda":
                peak = torch.cuda.max_memory_allocated() / workloads.GIB
                measurements[name].extra["peak_allocated_gib"] = max(
                    peak, measurements[name].extra.get("peak_allocated_gib", 0.0)
                )
            del model, loss
    for measurement in measurements.values():
        measurement.extra["samples_per_s"] = batch / measurement.stats["median"]
    return list(measurements.values())


def _cached_variants(settings: dict[str, Any]) -> list[str]:
    """The cached section's variants, CMNRL before ours in each mini-batch setting (each name says the setting)."""
    from st_mnr_plus.bench import workloads

    settings_run = [{"mini_batch_size": settings["mini_batch_size"]}]
    settings_run += [{"mini_batch_num_tokens": tokens} for tokens in settings["mini_batch_num_tokens"]]
    return [workloads.cached_variant(loss, **kw) for kw in settings_run for loss in workloads.CACHED_LOSSES]


def _bench_cached(settings: dict[str, Any], device: str) -> list[Measurement]:
    import torch

    from st_mnr_plus.bench import workloads
    from st_mnr_plus.bench.harness import Measurement, time_call

    model = workloads.load_model(settings["model"], max_seq_length=settings["max_seq_length"], device=device)
    model.train()  # dropout on, as a trainer runs it
    batch = settings["cached_batch_size"]
    features = workloads.tokenized_columns(model, workloads.packaged_text_pairs(), batch, device=device)
    real_tokens = workloads.real_tokens(features)
    model_name = Path(settings["model"]).name if settings["model"] else "all-MiniLM-L6-v2"
    group = f"cached {model_name} B={batch} L={settings['max_seq_length']}"
    variants = _cached_variants(settings)
    measurements = {}
    for name in variants:
        _, kwargs = workloads.parse_cached_variant(name)
        params = {"batch": batch, "max_seq_length": settings["max_seq_length"], **kwargs}
        measurements[name] = Measurement(group=group, name=name, params=params)
    warmup = settings["warmup"]  # untimed steps before the section's first timed one: one model serves all
    for round_index in range(settings["rounds"]):
        # Alternate the order between rounds, so that a machine getting busier favours no variant.
        for name in variants if round_index % 2 == 0 else variants[::-1]:
            logger.info("bench: %s, %s (round %d)", group, name, round_index + 1)
            measurement = measurements[name]
            loss = workloads.make_cached_loss(name, model)
            model.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                baseline = torch.cuda.memory_allocated()
            try:
                with workloads.count_encoder_inputs(model) as encoder:
                    times, _ = time_call(
                        workloads.training_step,
                        setup=lambda loss=loss: ((loss, model, features), {}),
                        warmup=warmup,
                        repeats=settings["cached_steps"],
                        device=device,
                    )
            except (MemoryError, RuntimeError) as error:  # out of memory: record it, the table shows it
                _record_error(measurement, error, device)
                continue
            measurement.times += times
            # Per step, both encoder passes (each mini-batch is embedded twice): what the setting changes.
            steps_run, warmup = warmup + len(times), 0
            measurement.extra["encoder_calls"] = encoder["calls"] // steps_run
            measurement.extra["encoder_padded_tokens"] = encoder["tokens"] // steps_run
            if device == "cuda":
                peak = (torch.cuda.max_memory_allocated() - baseline) / workloads.GIB
                measurement.extra["peak_extra_gib"] = max(peak, measurement.extra.get("peak_extra_gib", 0.0))
                measurement.extra["memory"] = "cuda_max_memory_allocated"
            del loss
    for measurement in measurements.values():
        if measurement.times:
            measurement.extra["samples_per_s"] = batch / measurement.stats["median"]
        measurement.extra["real_tokens"] = real_tokens
    return list(measurements.values())


def _bench_sampler(settings: dict[str, Any]) -> list[Measurement]:
    from datasets import Dataset

    from st_mnr_plus.bench import workloads
    from st_mnr_plus.bench.harness import Measurement, time_call

    rows, batch = settings["sampler_rows"], settings["sampler_batch_size"]
    dataset = Dataset(workloads.synthetic_pairs(rows))
    group = f"sampler N={rows} b={batch}"
    measurements = []
    for kind in workloads.SAMPLER_KINDS:
        logger.info("bench: %s, %s", group, kind)
        # sentence-transformers' samplers take 10-100x longer per epoch: fewer rounds of them.
        repeats = settings["repeats"] if kind == "ours" else max(1, settings["repeats"] // 3)
        times, batches = time_call(
            workloads.one_epoch, setup=lambda kind=kind: ((kind, dataset, batch), {}), warmup=0, repeats=repeats
        )
        if not batches:
            raise RuntimeError(f"sampler {kind!r} yielded no batch over {rows} rows")
        extra = {"batches": len(batches), "rows_yielded": sum(len(b) for b in batches)}
        measurements.append(
            Measurement(group=group, name=kind, params={"rows": rows, "batch": batch}, times=times, extra=extra)
        )
    return measurements


def _baselines(section: str, settings: dict[str, Any]) -> list[str]:
    """The variants of a section's group that every other variant of the group is compared with."""
    if section == "cached":  # CMNRL in each mini-batch setting: ours in each setting against each of them
        return [name for name in _cached_variants(settings) if name.split("-", 1)[0] == BASELINES["cached"]]
    return [BASELINES[section]]


def run(settings: dict[str, Any], device: str) -> dict[str, Any]:
    """Run the selected sections; the JSON document (machine, settings, results, ratios)."""
    measurements: list[Measurement] = []
    section_seconds: dict[str, float] = {}
    for section, bench in (
        ("loss", lambda: _bench_loss(settings, device)),
        ("step", lambda: _bench_step(settings, device)),
        ("cached", lambda: _bench_cached(settings, device)),
        ("sampler", lambda: _bench_sampler(settings)),
    ):
        if section in settings["sections"]:
            start = time.perf_counter()
            measurements += bench()
            section_seconds[section] = time.perf_counter() - start
    results = [m.to_dict() for m in measurements]
    baselines = {m.group: _baselines(m.group.split(" ", 1)[0], settings) for m in measurements}
    return {
        "schema": report.SCHEMA,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(device),
        "settings": settings,
        "section_seconds": section_seconds,
        "results": results,
        "ratios": report.ratios(results, baselines),
    }


def _device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise report.BenchSettingsError("--device cuda: torch.cuda.is_available() is False on this machine")
    return requested


def main(args: argparse.Namespace) -> int:
    """Run ``st-mnr-plus bench`` with parsed ``args``; prints the tables and writes JSON (and PNG)."""
    device = _device(args.device)
    settings = _settings(args, device)
    old = report.load_results(args.compare) if args.compare else None
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as error:  # fail before the benchmarks run, not after
            raise ImportError(
                "the PNG needs matplotlib: pip install 'st-mnr-plus[model]', or pass --no-plot"
            ) from error
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    document = run(settings, device)
    json_path = output_dir / "results.json"
    if old is not None:
        document["compared_with"] = {"path": str(args.compare), "rows": report.compare(document, old)}
    json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(report.format_table(document))
    if old is not None:
        print()
        print(
            report.format_comparison(document["compared_with"]["rows"], f"{args.compare} ({old.get('created', '?')})")
        )
    written = [str(json_path)]
    if not args.no_plot:
        png_path = output_dir / "results.png"
        report.plot(document, png_path, old=old)
        written.append(str(png_path))
    print(f"\nwrote {', '.join(written)}")
    return 0
