"""The acceptance figure: all-MiniLM-L6-v2 scores Spearman cosine 0.8203 on the STSb test split.

Each evaluation encodes 2,758 sentences with the real model (a minute or more on 2 busy cores), so the model runs
once, for the preset. The hand-built evaluator and the Dataset-source preset then get the preset's embeddings
through a memo keyed by the exact ``encode`` call (sentences in order and every keyword): a test fails if either
asks for anything else, so equal results mean equal inputs, settings and metric code, not a shared shortcut.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from datasets import Dataset
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_mnr_plus import stsb_evaluator

pytestmark = pytest.mark.slow  # all-MiniLM-L6-v2 encodes 2,758 sentences: ~25 s

PUBLISHED_SPEARMAN_COSINE = 0.8203


def read_stsb_by_hand(path: Path) -> tuple[list[str], list[str], list[float]]:
    s1, s2, scores = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        scores.append(float(fields[4]) / 5)
        s1.append(fields[5])
        s2.append(fields[6])
    return s1, s2, scores


@pytest.fixture(scope="module")
def model(_minilm_session):
    return copy.deepcopy(_minilm_session)


@pytest.fixture(scope="module")
def rows(stsb_dir: Path):
    return read_stsb_by_hand(stsb_dir / "sts-test.csv")


@pytest.fixture(scope="module")
def memo():
    """(sentences, encode kwargs) -> embeddings, filled by the preset's run."""
    return {}


@pytest.fixture(scope="module")
def preset_results(model, memo):
    original = model.encode

    def remembering_encode(sentences, **kwargs):
        embeddings = original(sentences, **kwargs)
        memo[(tuple(sentences), tuple(sorted(kwargs.items())))] = embeddings
        return embeddings

    model.encode = remembering_encode
    try:
        return stsb_evaluator("test")(model)
    finally:
        del model.encode


def run_from_memo(evaluator, model, memo) -> tuple[dict[str, float], list[int]]:
    """Run ``evaluator`` with ``model.encode`` answered from the memo; return its results and the encode sizes."""
    reused: list[int] = []

    def memo_encode(sentences, **kwargs):
        key = (tuple(sentences), tuple(sorted(kwargs.items())))
        assert key in memo, "this evaluator asked for other sentences or encode settings than the preset"
        reused.append(len(sentences))
        return memo[key]

    model.encode = memo_encode
    try:
        return evaluator(model), reused
    finally:
        del model.encode


@pytest.fixture(scope="module")
def hand_built_results(model, rows, memo, preset_results):
    s1, s2, scores = rows
    results, reused = run_from_memo(EmbeddingSimilarityEvaluator(s1, s2, scores, name="sts-test"), model, memo)
    assert reused == [len(s1), len(s2)]
    return results


def test_preset_reproduces_the_published_figure(preset_results):
    assert round(preset_results["sts-test_spearman_cosine"], 4) == PUBLISHED_SPEARMAN_COSINE


def test_preset_equals_a_hand_built_evaluator_exactly(preset_results, hand_built_results):
    assert preset_results == hand_built_results
    assert round(hand_built_results["sts-test_spearman_cosine"], 4) == PUBLISHED_SPEARMAN_COSINE


def test_dataset_source_gives_the_same_score(model, rows, memo, preset_results, hand_built_results):
    s1, s2, scores = rows
    # As the hub's sentence-transformers/stsb holds it: 0-1 scores.
    dataset = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores})
    results, reused = run_from_memo(stsb_evaluator("test", dataset), model, memo)
    assert reused == [len(s1), len(s2)]
    assert results == hand_built_results
    assert round(results["sts-test_spearman_cosine"], 4) == PUBLISHED_SPEARMAN_COSINE


@pytest.mark.slow
def test_deduplicated_preset_agrees_with_the_published_figure(model, hand_built_results):
    results = stsb_evaluator("test", deduplicate=True)(model)
    assert round(results["sts-test_spearman_cosine"], 4) == PUBLISHED_SPEARMAN_COSINE
    for key, value in hand_built_results.items():
        assert math.isclose(results[key], value, rel_tol=0, abs_tol=1e-6), key
