from __future__ import annotations

import hashlib
import logging
import math
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from sentence_transformers.base.evaluation.sequential import SequentialEvaluator
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator, TripletEvaluator

from st_mnr_plus.evaluation import (
    PACKAGED_STSB,
    STSEvaluator,
    nli_triplet_evaluator,
    sickr_evaluator,
    sts_suite,
    stsb_evaluator,
)

STSB_ROWS = {"train": 5749, "validation": 1500, "test": 1379}
SICK_ROWS = {"train": 4500, "validation": 500, "test": 4927}
STSB_FILES = {"train": "sts-train.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}


def read_stsb_by_hand(path: Path) -> tuple[list[str], list[str], list[float]]:
    """The reading every user writes: split each line on tabs, fields 4-6, score / 5."""
    s1, s2, scores = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        scores.append(float(fields[4]) / 5)
        s1.append(fields[5])
        s2.append(fields[6])
    return s1, s2, scores


@pytest.fixture(scope="module")
def stsb_test(stsb_dir: Path) -> tuple[list[str], list[str], list[float]]:
    return read_stsb_by_hand(stsb_dir / "sts-test.csv")


# --- the shipped release -----------------------------------------------------------------------------------


# SHA-256 of the files of the original release (stsbenchmark.tar.gz, 2017), which the package ships unchanged.
STSB_SHA256 = {
    "sts-train.csv": "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82",
    "sts-dev.csv": "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234",
    "sts-test.csv": "affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a",
}


@pytest.mark.parametrize("name", sorted(STSB_SHA256))
def test_shipped_release_is_the_original(name: str):
    assert hashlib.sha256((PACKAGED_STSB / name).read_bytes()).hexdigest() == STSB_SHA256[name]
    assert (PACKAGED_STSB / "LICENSE.txt").is_file()


# --- STSb from the original CSV ------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_stsb_reads_every_line_like_a_hand_split_on_tabs(stsb_dir: Path, split: str):
    s1, s2, scores = read_stsb_by_hand(stsb_dir / STSB_FILES[split])
    evaluator = stsb_evaluator(split)
    assert len(evaluator.sentences1) == STSB_ROWS[split]
    assert evaluator.sentences1 == s1
    assert evaluator.sentences2 == s2
    # Exactly score / 5, as a hand-built evaluator divides.
    assert evaluator.scores == scores
    assert min(evaluator.scores) == 0.0
    assert max(evaluator.scores) == 1.0


def test_stsb_ragged_lines_keep_their_sentences_verbatim():
    evaluator = stsb_evaluator("test")
    # sts-test.csv:626 has two trailing source-note fields and sentences ending in a space.
    row = 625
    assert evaluator.sentences1[row] == (
        "I remained under the banyan tree, exhausted by my daily ritual of dragooning the men every two hours. "
    )
    assert evaluator.sentences2[row].startswith("I remained under the banyan tree")
    assert evaluator.scores[row] == 3 / 5
    assert not any("StackExchange" in s for s in evaluator.sentences2)
    # Quotes inside sentences survive (a CSV reader would eat them).
    assert sum('"' in s for s in evaluator.sentences1 + evaluator.sentences2) == 79


@pytest.mark.parametrize(
    ("split", "name"), [("test", "sts-test"), ("validation", "sts-dev"), ("dev", "sts-dev"), ("train", "sts-train")]
)
def test_stsb_names_and_defaults(split: str, name: str):
    evaluator = stsb_evaluator(split, batch_size=8)
    assert isinstance(evaluator, EmbeddingSimilarityEvaluator)
    assert evaluator.name == name
    assert evaluator.batch_size == 8
    assert evaluator.similarity_fn_names == ["cosine"]
    assert evaluator.deduplicate is False


def test_stsb_folder_source_equals_default(stsb_dir: Path, tmp_path: Path):
    for name in STSB_FILES.values():
        shutil.copy(stsb_dir / name, tmp_path / name)
    folder = stsb_evaluator("validation", tmp_path)
    default = stsb_evaluator("validation")
    assert (folder.sentences1, folder.sentences2, folder.scores) == (
        default.sentences1,
        default.sentences2,
        default.scores,
    )
    as_string = stsb_evaluator("validation", str(tmp_path))
    assert as_string.scores == default.scores


# --- STSb from a datasets.Dataset and from the hub ----------------------------------------------------------


def stsb_dataset(stsb_test, scale: float, score_column: str = "score") -> Dataset:
    s1, s2, scores = stsb_test
    return Dataset.from_dict({"sentence1": s1, "sentence2": s2, score_column: [s * scale for s in scores]})


@pytest.mark.parametrize(("scale", "detected"), [(1.0, "0-1"), (5.0, "0-5")], ids=["scores_0_1", "scores_0_5"])
def test_stsb_dataset_source_detects_the_range_and_says_so(stsb_test, caplog, scale: float, detected: str):
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.evaluation"):
        evaluator = stsb_evaluator("test", stsb_dataset(stsb_test, scale))
    assert f"range is taken as {detected}" in caplog.text
    np.testing.assert_allclose(evaluator.scores, stsb_test[2], rtol=0, atol=1e-12)
    assert evaluator.sentences1 == stsb_test[0]


def test_stsb_declared_range_is_used_without_detection(stsb_test, caplog):
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.evaluation"):
        evaluator = stsb_evaluator("test", stsb_dataset(stsb_test, 5.0), score_range=(0, 5))
    assert "range is taken" not in caplog.text
    assert evaluator.scores == stsb_test[2]


def test_stsb_dataset_dict_source_takes_the_split(stsb_test):
    dataset_dict = DatasetDict({"test": stsb_dataset(stsb_test, 1.0, "label")})
    evaluator = stsb_evaluator("test", dataset_dict, score_range=(0, 1))
    assert evaluator.scores == stsb_test[2]
    with pytest.raises(ValueError, match=r"has no split 'validation'; its splits are test"):
        stsb_evaluator("validation", dataset_dict)


def test_stsb_dataset_columns_can_be_named(stsb_test):
    s1, s2, scores = stsb_test
    dataset = Dataset.from_dict({"a": s1, "b": s2, "gold": scores})
    evaluator = stsb_evaluator("test", dataset, columns=("a", "b", "gold"), score_range=(0, 1))
    assert evaluator.scores == scores
    with pytest.raises(ValueError, match=r"cannot tell which columns.*columns: a, b, gold.*columns="):
        stsb_evaluator("test", dataset)


HUB_CASES = [
    # (source, path and config load_dataset must get, its split, score column, scale of its scores)
    pytest.param(
        "sentence-transformers/stsb", ("sentence-transformers/stsb", None), "test", "score", 1.0, id="st_stsb"
    ),
    pytest.param("mteb/stsbenchmark-sts", ("mteb/stsbenchmark-sts", None), "test", "score", 5.0, id="mteb"),
    pytest.param("glue/stsb", ("nyu-mll/glue", "stsb"), "validation", "label", 5.0, id="glue"),
    pytest.param("nyu-mll/glue", ("nyu-mll/glue", "stsb"), "train", "label", 5.0, id="nyu_mll_glue"),
]


@pytest.mark.parametrize(("source", "expected_call", "split", "score_column", "scale"), HUB_CASES)
def test_stsb_hub_sources_go_through_load_dataset_with_their_known_range(
    monkeypatch, caplog, source, expected_call, split, score_column, scale
):
    # Only the network boundary is replaced: load_dataset returns what the hub copy holds.
    reference = stsb_evaluator(split)
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return Dataset.from_dict(
            {
                "sentence1": reference.sentences1,
                "sentence2": reference.sentences2,
                score_column: [s * scale for s in reference.scores],
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.evaluation"):
        evaluator = stsb_evaluator(split, source)
    assert calls == [(*expected_call, split)]
    assert "range is taken" not in caplog.text  # known range, no detection
    np.testing.assert_allclose(evaluator.scores, reference.scores, rtol=0, atol=1e-12)
    assert evaluator.sentences2 == reference.sentences2


def test_glue_test_split_is_refused_because_it_has_no_labels(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", pytest.fail)
    with pytest.raises(ValueError, match=r"glue has no labelled 'test' split.*no labels"):
        stsb_evaluator("test", "glue")


def test_hub_failure_names_the_source(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"Could not load 'someone/my-stsb'.*not a local folder.*no network"):
        stsb_evaluator("test", "someone/my-stsb")


def test_known_hub_range_is_enforced(monkeypatch, stsb_test):
    # sentence-transformers/stsb is 0-1: a copy holding 0-5 scores is an error, not a silent rescale.
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: stsb_dataset(stsb_test, 5.0))
    with pytest.raises(
        ValueError, match=r"sentence-transformers/stsb \(test\), row 0, column 'score'.*outside the range 0-1"
    ):
        stsb_evaluator("test", "sentence-transformers/stsb")


# --- bad input -------------------------------------------------------------------------------------------


def write_release(folder: Path, lines: list[str], name: str = "sts-test.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder


GOOD = "main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is styling her hair.\tA girl is brushing her hair."


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        pytest.param(
            [GOOD, GOOD.replace("2.500", "5.2")],
            r"sts-test.csv:2: score 5.2 is outside the range 0-5",
            id="out_of_range",
        ),
        pytest.param([GOOD, GOOD.replace("2.500", "-0.1")], r"sts-test.csv:2: score -0.1 is outside", id="negative"),
        pytest.param(
            [GOOD.replace("2.500", "n/a")],
            r"sts-test.csv:1, field 5 \(score\): expected a number, got 'n/a'",
            id="not_a_number",
        ),
        pytest.param(
            [GOOD.replace("2.500", "nan")], r"sts-test.csv:1, field 5 \(score\): expected a finite number", id="nan"
        ),
        pytest.param(
            [GOOD, "main-captions\tMSRvid\t2012test\t0024\t2.5\tonly one sentence"],
            r"sts-test.csv:2: expected at least 7 tab-separated fields.*got 6",
            id="short_line",
        ),
        pytest.param([GOOD.replace("\t", "  ")], r"sts-test.csv:1: expected at least 7", id="spaces_not_tabs"),
        pytest.param([], r"sts-test.csv: no sentence pairs", id="empty_file"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path: Path, lines: list[str], error: str):
    folder = write_release(tmp_path / "release", lines)
    with pytest.raises(ValueError, match=error):
        stsb_evaluator("test", folder)


def test_blank_lines_are_counted_not_rows(tmp_path: Path, caplog):
    folder = write_release(tmp_path / "release", [GOOD, "", GOOD])
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.evaluation"):
        evaluator = stsb_evaluator("test", folder)
    assert len(evaluator.scores) == 2
    assert "skipped 1 blank line" in caplog.text


@pytest.mark.parametrize(
    ("call", "exception", "error"),
    [
        pytest.param(
            lambda p: stsb_evaluator("tst"),
            ValueError,
            r"split must be one of train, validation, test.*'tst'",
            id="bad_split",
        ),
        pytest.param(
            lambda p: stsb_evaluator("test", p / "missing"),
            FileNotFoundError,
            r"source folder '.*missing' does not exist",
            id="missing_folder",
        ),
        pytest.param(
            lambda p: stsb_evaluator("test", "./not/here"),
            FileNotFoundError,
            r"does not exist",
            id="missing_relative_folder",
        ),
        pytest.param(
            lambda p: stsb_evaluator("validation", write_release(p / "r", [GOOD])),
            FileNotFoundError,
            r"sts-dev.csv not found.*has sts-test.csv",
            id="missing_split_file",
        ),
        pytest.param(
            lambda p: stsb_evaluator("test", write_release(p / "r", [GOOD]) / "sts-test.csv"),
            ValueError,
            r"is a file; pass the folder",
            id="file_not_folder",
        ),
        pytest.param(
            lambda p: stsb_evaluator("test", 42), ValueError, r"source must be a hub id.*got int", id="bad_source_type"
        ),
        pytest.param(
            lambda p: stsb_evaluator("test", score_range=(5, 0)),
            ValueError,
            r"score_range must be finite with low < high",
            id="reversed_range",
        ),
        pytest.param(
            lambda p: stsb_evaluator("test", score_range="0-5"),
            ValueError,
            r"score_range must be a pair",
            id="range_string",
        ),
        pytest.param(
            lambda p: stsb_evaluator("test", columns=("a", "b")),
            ValueError,
            r"columns must name three columns",
            id="two_columns",
        ),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, call, exception, error):
    with pytest.raises(exception, match=error):
        call(tmp_path)


@pytest.mark.parametrize(
    ("data", "kwargs", "error"),
    [
        pytest.param(
            {"sentence1": ["a"], "sentence2": ["b"], "score": [7.0]},
            {},
            r"scores span 7..7, which fits none of the ranges 0-1, 0-5",
            id="undetectable",
        ),
        pytest.param(
            {"sentence1": ["a", None], "sentence2": ["b", "c"], "score": [1.0, 2.0]},
            {},
            r"row 1, column 'sentence1': expected a string, got NoneType",
            id="none_sentence",
        ),
        pytest.param(
            {"sentence1": ["a"], "sentence2": ["b"], "score": [None]},
            {},
            r"row 0, column 'score': expected a number, got None",
            id="none_score",
        ),
        pytest.param(
            {"sentence1": [], "sentence2": [], "score": []}, {"score_range": (0, 5)}, r"no sentence pairs", id="empty"
        ),
        pytest.param(
            {"sentence1": ["a"], "sentence2": ["b"], "score": [1.0]},
            {"columns": ("sentence1", "sentence2", "gold")},
            r"no column 'gold'",
            id="missing_column",
        ),
        pytest.param(
            {"sentence1": ["a", "b"], "sentence2": ["b", "c"], "score": [0.5, 1.5]},
            {"score_range": (0, 1)},
            r"row 1, column 'score': score 1.5 is outside the range 0-1 \(1 score\(s\) outside",
            id="declared_range_violated",
        ),
    ],
)
def test_bad_dataset_rows_are_named(data, kwargs, error):
    with pytest.raises(ValueError, match=error):
        stsb_evaluator("test", Dataset.from_dict(data), **kwargs)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match=r"same length, got 2, 1 and 2"):
        STSEvaluator(["a", "b"], ["c"], [0.1, 0.2])


# --- SICK-R ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "name"), [("train", "sickr-train"), ("trial", "sickr-dev"), ("test", "sickr-test")])
def test_sickr_reads_the_release_and_maps_1_5_to_0_1(sick_dir: Path, split: str, name: str):
    folder = sick_dir
    evaluator = sickr_evaluator(split, folder)
    canonical = "validation" if split == "trial" else split
    assert evaluator.name == name
    assert len(evaluator.scores) == SICK_ROWS[canonical]
    # By hand: header line, then pair_ID, sentence_A, sentence_B, relatedness_score, entailment_judgment.
    file = {"train": "SICK_train.txt", "validation": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}[canonical]
    rows = [line.split("\t") for line in (folder / file).read_text(encoding="utf-8").splitlines()[1:]]
    assert evaluator.sentences1 == [row[1] for row in rows]
    assert evaluator.sentences2 == [row[2] for row in rows]
    assert evaluator.scores == [(float(row[3]) - 1) / 4 for row in rows]
    # The test file has CRLF line ends: none may leak into the text.
    assert not any("\r" in s for s in evaluator.sentences1 + evaluator.sentences2)


def test_sickr_single_file_release_is_filtered_by_semeval_set(tmp_path: Path, caplog):
    header = "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tSemEval_set"
    rows = ["1\tA\tB\tNEUTRAL\t4.5\tTRAIN", "2\tC\tD\tENTAILMENT\t1.0\tTEST", "3\tE\tF\tNEUTRAL\t5.0\tTEST"]
    (tmp_path / "SICK.txt").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.evaluation"):
        evaluator = sickr_evaluator("test", tmp_path)
    assert evaluator.sentences1 == ["C", "E"]
    assert evaluator.scores == [0.0, 1.0]
    assert "left 1 of other sets" in caplog.text


def test_sickr_bad_header_is_named(tmp_path: Path):
    (tmp_path / "SICK_test_annotated.txt").write_text("id\ta\tb\tscore\n1\tx\ty\t3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"SICK_test_annotated.txt:1: the header must name.*missing sentence_A"):
        sickr_evaluator("test", tmp_path)


def test_sickr_default_source_is_the_hub_test_split(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [1.0, 5.0]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    evaluator = sickr_evaluator()
    assert calls == [("mteb/sickr-sts", None, "test")]
    assert evaluator.scores == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"mteb/sickr-sts has no labelled 'train' split"):
        sickr_evaluator("train")


def test_sickr_dataset_with_1_5_scores_must_declare_its_range():
    dataset = Dataset.from_dict({"sentence_A": ["a", "b"], "sentence_B": ["c", "d"], "relatedness_score": [1.2, 4.8]})
    with pytest.raises(ValueError, match=r"fits the ranges 0-5 and 1-5; declare which"):
        sickr_evaluator("test", dataset)
    evaluator = sickr_evaluator("test", dataset, score_range=(1, 5))
    np.testing.assert_allclose(evaluator.scores, [0.05, 0.95])


# --- evaluation: equivalence with hand-built evaluators ------------------------------------------------------


def test_deduplicate_encodes_each_unique_sentence_once_and_agrees(tiny_model, stsb_test):
    s1, s2, scores = (column[:200] for column in stsb_test)
    hand = EmbeddingSimilarityEvaluator(s1, s2, scores, name="sts-test", main_similarity="cosine")
    dedup = STSEvaluator(s1, s2, scores, name="sts-test", main_similarity="cosine", deduplicate=True)
    encoded: list[int] = []
    original_encode = tiny_model.encode

    def counting_encode(sentences, *args, **kwargs):
        encoded.append(len(sentences))
        return original_encode(sentences, *args, **kwargs)

    expected = hand(tiny_model)
    tiny_model.encode = counting_encode
    got = dedup(tiny_model)
    assert encoded == [len(set(s1) | set(s2))]
    assert encoded[0] < len(s1) + len(s2)
    assert got.keys() == expected.keys()
    for key in expected:
        # Differently composed batches: equal up to float rounding, not bit for bit.
        assert math.isclose(got[key], expected[key], rel_tol=0, abs_tol=1e-6), key
    assert dedup.get_config_dict() == {"deduplicate": True}


def test_quantized_precision_takes_the_plain_path(tiny_model, stsb_test):
    s1, s2, scores = (column[:64] for column in stsb_test)
    kwargs = {"name": "q", "main_similarity": "cosine", "precision": "int8"}
    expected = EmbeddingSimilarityEvaluator(s1, s2, scores, **kwargs)(tiny_model)
    assert STSEvaluator(s1, s2, scores, deduplicate=True, **kwargs)(tiny_model) == expected


def test_nli_triplet_evaluator_equals_a_hand_built_one(tiny_model):
    triplets = Dataset.from_dict(
        {
            "anchor": ["A man is eating.", "A dog runs.", "Kids play outside."],
            "positive": ["Someone eats.", "An animal moves.", "Children are outdoors."],
            "negative": ["Nobody eats.", "The dog sleeps.", "Kids are in bed."],
        }
    )
    evaluator = nli_triplet_evaluator(triplets, batch_size=2)
    assert isinstance(evaluator, TripletEvaluator)
    hand = TripletEvaluator(
        triplets["anchor"],
        triplets["positive"],
        triplets["negative"],
        name="nli-triplets",
        batch_size=2,
        main_similarity_function="cosine",
    )
    results = evaluator(tiny_model)
    assert results == hand(tiny_model)
    assert len(nli_triplet_evaluator(triplets, max_triplets=2).anchors) == 2


def test_nli_triplet_evaluator_builds_the_triplets_with_build_nli(tiny_model, snli_dev: Path):
    from st_mnr_plus import build_nli

    snli = snli_dev
    options = {"max_triplets_per_premise": 1}
    evaluator = nli_triplet_evaluator(snli, max_triplets=48, build_options=options, batch_size=16)
    triplets = build_nli(snli, output="triplets", **options).select(range(48))
    assert evaluator.anchors == triplets["anchor"]
    assert evaluator.positives == triplets["positive"]
    assert evaluator.negatives == triplets["negative"]
    hand = TripletEvaluator(
        triplets["anchor"],
        triplets["positive"],
        triplets["negative"],
        name="nli-triplets",
        batch_size=16,
        main_similarity_function="cosine",
    )
    assert evaluator(tiny_model) == hand(tiny_model)
    with pytest.raises(ValueError, match=r"build_options apply only when build_nli builds"):
        nli_triplet_evaluator(triplets, build_options=options)


@pytest.mark.parametrize(
    ("data", "kwargs", "error"),
    [
        pytest.param({"anchor": ["a"], "positive": ["b"]}, {}, r"missing negative", id="missing_column"),
        pytest.param(
            {"anchor": ["a"], "positive": ["b"], "negative": [None]},
            {},
            r"row 0, column 'negative': expected a string",
            id="none",
        ),
        pytest.param({"anchor": [], "positive": [], "negative": []}, {}, r"no triplets", id="empty"),
        pytest.param(
            {"anchor": ["a"], "positive": ["b"], "negative": ["c"]},
            {"max_triplets": 0},
            r"max_triplets must be a positive integer",
            id="max_zero",
        ),
    ],
)
def test_nli_triplet_bad_input(data, kwargs, error):
    with pytest.raises(ValueError, match=error):
        nli_triplet_evaluator(Dataset.from_dict(data), **kwargs)


def test_sts_suite_runs_both_presets_and_scores_their_mean(tiny_model, sick_dir: Path):
    suite = sts_suite("validation", sickr_source=sick_dir, batch_size=64)
    assert isinstance(suite, SequentialEvaluator)
    assert [e.name for e in suite.evaluators] == ["sts-dev", "sickr-dev"]
    results = suite(tiny_model)
    assert suite.primary_metric == "sequential_score"
    expected = (results["sts-dev_spearman_cosine"] + results["sickr-dev_spearman_cosine"]) / 2
    assert results["sequential_score"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param(
            {"include": ("stsb", "mteb")}, r"include must list distinct presets among stsb, sickr", id="unknown"
        ),
        pytest.param({"include": ("stsb", "stsb")}, r"include must list distinct", id="repeated"),
        pytest.param({"include": ()}, r"evaluate nothing", id="empty"),
        pytest.param({"extra": [object()]}, r"extra must hold sentence-transformers evaluators", id="bad_extra"),
    ],
)
def test_sts_suite_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        sts_suite(**kwargs)
