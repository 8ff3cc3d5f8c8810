from __future__ import annotations

import gzip
import inspect
import json
import logging
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest

from st_mnr_plus.datasets._build import pair_order
from st_mnr_plus.datasets.nli import (
    SKIP_REASONS,
    BuildReport,
    EmptyBuildError,
    NLIBuilder,
    build_nli,
)
from st_mnr_plus.datasets.readers import NLIFormatError
from tests.datasets.conftest import SNLI_LABELS
from tests.datasets.reference import reference_pairs, reference_triplets

SNLI_TXT_HEADER = [
    "gold_label",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "captionID",
    "pairID",
    "label1",
    "label2",
    "label3",
    "label4",
    "label5",
]


def triples(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(r["sentence1"], r["sentence2"], r["gold_label"]) for r in rows]


def as_tuples(dataset: datasets.Dataset) -> list[tuple[str, ...]]:
    return list(zip(*(dataset[c] for c in dataset.column_names), strict=True))


def write_jsonl(path: Path, rows: list[dict], *, gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_snli_txt(path: Path, rows: list[dict[str, str]], *, gz: bool = False) -> Path:
    """The SNLI 1.0 release ``.txt`` layout: tab-separated with a header, parses and ids filled in."""
    lines = ["\t".join(SNLI_TXT_HEADER)]
    for i, r in enumerate(rows):
        fields = dict.fromkeys(SNLI_TXT_HEADER, "")
        fields.update(
            gold_label=r["gold_label"],
            sentence1=r["sentence1"],
            sentence2=r["sentence2"],
            sentence1_parse=f"(ROOT {r['sentence1']})",
            captionID=f"{i}.jpg#0",
            pairID=f"{i}.jpg#0r1e",
            label1=r["gold_label"],
        )
        lines.append("\t".join(fields[h] for h in SNLI_TXT_HEADER))
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def hub_dataset(rows: list[dict[str, str]]) -> datasets.Dataset:
    """The rows in the stanfordnlp/snli hub schema: premise, hypothesis, label (ClassLabel ints, -1 no consensus)."""
    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "premise": [r["sentence1"] for r in rows],
            "hypothesis": [r["sentence2"] for r in rows],
            "label": [SNLI_LABELS[r["gold_label"]] for r in rows],
        },
        features=features,
    )


def check_invariant(report: BuildReport) -> None:
    assert set(report.skipped) == set(SKIP_REASONS)
    assert report.rows_read == report.rows_kept + sum(report.skipped.values())


# ------------------------------------------------------------------------------------------ real SNLI dev


def test_snli_dev_pairs_one_per_distinct_entailment_pair(snli_dev, snli_rows):
    builder = NLIBuilder("pairs")
    pairs = builder.build(snli_dev)
    report = builder.report
    assert pairs.column_names == ["anchor", "positive"]
    expected = reference_pairs(triples(snli_rows))
    assert as_tuples(pairs) == expected
    entailment = [(r["sentence1"], r["sentence2"]) for r in snli_rows if r["gold_label"] == "entailment"]
    assert len(entailment) == 3329
    exact_duplicates = sum(n - 1 for n in Counter(entailment).values())
    assert exact_duplicates > 0  # the file has some: the report must count them
    assert report.skipped["duplicate"] == exact_duplicates
    assert report.rows_read == 9842
    assert report.rows_kept == report.rows_out == len(pairs) == 3329 - exact_duplicates
    assert report.skipped["neutral"] == 3235
    assert report.skipped["contradiction"] == 3278
    check_invariant(report)
    assert pairs.build_report is report


def test_snli_dev_triplets_counted_and_spot_checked(snli_dev, snli_rows):
    builder = NLIBuilder("triplets")
    triplets = builder.build(snli_dev)
    assert triplets.column_names == ["anchor", "positive", "negative"]
    got = as_tuples(triplets)
    assert len(got) == len(set(got)), "no duplicate triplets"
    assert set(got) == reference_triplets(triples(snli_rows))
    labels = {(r["sentence1"], r["sentence2"]): r["gold_label"] for r in snli_rows}
    # Spot-check every 97th triplet against the file: entailment and contradiction of the same premise.
    for anchor, positive, negative in got[::97]:
        assert labels[(anchor, positive)] == "entailment"
        assert labels[(anchor, negative)] == "contradiction"
    report = builder.report
    assert report.rows_out == len(got)
    check_invariant(report)
    assert report.skipped["entailment_without_partner"] + report.skipped["contradiction_without_partner"] > 0


@pytest.mark.parametrize("output", ["pairs", "triplets"])
def test_hub_schema_dataset_gives_the_same_output_as_jsonl(snli_dev, snli_rows, output):
    from_file = build_nli(snli_dev, output)
    from_hub = build_nli(hub_dataset(snli_rows), output)
    assert as_tuples(from_hub) == as_tuples(from_file)
    assert from_hub.build_report.skipped == from_file.build_report.skipped


def test_sick_train_builds(sick_train):
    import csv

    with sick_train.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == 4500
    sick = [(r["sentence_A"], r["sentence_B"], r["entailment_judgment"].lower()) for r in rows]
    pairs = build_nli(sick_train)
    assert as_tuples(pairs) == reference_pairs(sick)
    assert pairs.build_report.rows_read == 4500
    triplets = build_nli(sick_train, "triplets")
    assert set(as_tuples(triplets)) == reference_triplets(sick)
    check_invariant(triplets.build_report)


# ------------------------------------------------------------------------------------------ file formats


@pytest.mark.parametrize(
    "writer",
    [
        pytest.param(lambda p, rows: write_jsonl(p / "snli.jsonl.gz", rows, gz=True), id="jsonl.gz"),
        pytest.param(lambda p, rows: write_snli_txt(p / "snli_1.0_dev.txt", rows), id="txt"),
        pytest.param(lambda p, rows: write_snli_txt(p / "snli_1.0_dev.txt.gz", rows, gz=True), id="txt.gz"),
    ],
)
@pytest.mark.parametrize("output", ["pairs", "triplets"])
def test_release_formats_give_the_same_output_as_jsonl(tmp_path, snli_dev, snli_rows, writer, output):
    rows = snli_rows[:1500]
    reference = build_nli(write_jsonl(tmp_path / "ref.jsonl", rows), output)
    other = build_nli(writer(tmp_path, rows), output)
    assert as_tuples(other) == as_tuples(reference)
    assert other.build_report.skipped == reference.build_report.skipped


def test_multinli_jsonl_with_extra_fields(tmp_path):
    rows = [
        {"annotator_labels": ["entailment"], "genre": "fiction", "gold_label": "entailment", "pairID": "1e",
         "promptID": "1", "sentence1": "A man reads.", "sentence1_parse": "(ROOT)", "sentence2": "Someone reads."},
        {"annotator_labels": ["contradiction"], "genre": "fiction", "gold_label": "contradiction", "pairID": "1c",
         "promptID": "1", "sentence1": "A man reads.", "sentence1_parse": "(ROOT)", "sentence2": "Nobody reads."},
    ]  # fmt: skip
    triplets = build_nli(write_jsonl(tmp_path / "multinli_1.0_dev_matched.jsonl", rows), "triplets")
    assert as_tuples(triplets) == [("A man reads.", "Someone reads.", "Nobody reads.")]


def test_csv_with_column_mapping_and_quoted_fields(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text(
        'id,text_a,text_b,gold\n1,"A man, tall, walks.","A ""man"" walks.",yes\n2,A dog runs.,A cat sleeps.,no\n'
        '3,"A line\nthat wraps.",It wraps.,yes\n',
        encoding="utf-8",
    )
    pairs = build_nli(
        path,
        columns={"premise": "text_a", "hypothesis": "text_b", "label": "gold"},
        label_map={"yes": "entailment", "no": "contradiction"},
    )
    assert as_tuples(pairs) == [("A man, tall, walks.", 'A "man" walks.'), ("A line\nthat wraps.", "It wraps.")]


def test_tsv_without_header_by_position(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("ENTAILMENT\tx\tA man walks.\tSomeone walks.\nNEUTRAL\tx\tA b.\tC d.\n", encoding="utf-8")
    pairs = build_nli(path, columns={"premise": 2, "hypothesis": 3, "label": 0})
    assert as_tuples(pairs) == [("A man walks.", "Someone walks.")]
    assert pairs.build_report.skipped["neutral"] == 1


def test_utf8_bom_and_blank_lines_are_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    body = json.dumps({"gold_label": "entailment", "sentence1": "A é.", "sentence2": "B."})
    path.write_bytes(b"\xef\xbb\xbf" + body.encode() + b"\n\n" + body.replace("B.", "C.").encode() + b"\n")
    pairs = build_nli(path)
    assert as_tuples(pairs) == [("A é.", "B."), ("A é.", "C.")]


def test_small_read_chunks_give_the_same_batches(snli_dev, snli_rows):
    """Lines that straddle read chunks: the reader must stitch them and keep the line numbers."""
    from st_mnr_plus.datasets.readers import file_source

    source = file_source(snli_dev, None, "raise", chunk_bytes=997)
    batches = list(source.batches())
    assert len(batches) > 100
    premises = [p for b in batches for p in b.table.column("premise").to_pylist()]
    lines = [int(n) for b in batches for n in b.locations]
    assert premises == [r["sentence1"] for r in snli_rows]
    assert lines == list(range(1, len(snli_rows) + 1))


# ------------------------------------------------------------------------------------------ hub sources


def test_hub_id_is_loaded_with_load_dataset(monkeypatch, snli_dev, snli_rows):
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return hub_dataset(snli_rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pairs = build_nli("stanfordnlp/snli", split="validation")
    assert calls == [("stanfordnlp/snli", None, "validation")]
    assert as_tuples(pairs) == as_tuples(build_nli(snli_dev))
    assert pairs.build_report.sources == ["stanfordnlp/snli [validation]"]


def test_hub_id_with_config(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"anchor": ["a", "b"], "positive": ["c", "d"], "negative": ["e", "f"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    triplets = build_nli("sentence-transformers/all-nli:triplet", "triplets")
    assert calls == [("sentence-transformers/all-nli", "triplet", "train")]
    assert as_tuples(triplets) == [("a", "c", "e"), ("b", "d", "f")]


def test_dataset_dict_takes_the_split(snli_rows):
    dd = datasets.DatasetDict({"train": hub_dataset(snli_rows[:300]), "test": hub_dataset(snli_rows[300:600])})
    train = build_nli(dd)
    assert as_tuples(train) == reference_pairs(triples(snli_rows[:300]))
    test = build_nli(dd, split="test")
    assert as_tuples(test) == reference_pairs(triples(snli_rows[300:600]))
    with pytest.raises(ValueError, match=r"without split 'validation' \(it has \['train', 'test'\]\)"):
        build_nli(dd, split="validation")


def test_iterable_dataset(snli_rows):
    iterable = hub_dataset(snli_rows[:500]).to_iterable_dataset()
    assert as_tuples(build_nli(iterable)) == reference_pairs(triples(snli_rows[:500]))


def test_all_nli_pair_and_triplet_schemas():
    pair = datasets.Dataset.from_dict({"anchor": ["a", "a", "b", " "], "positive": ["c", "c", "d", "x"]})
    triplet = datasets.Dataset.from_dict({"anchor": ["a", "b", "b"], "positive": ["c", "d", "d"], "negative": ["e", "f", "f"]})  # fmt: skip
    pairs = build_nli([pair, triplet])
    assert as_tuples(pairs) == [("a", "c"), ("b", "d")]
    report = pairs.build_report
    assert report.skipped["duplicate"] == 4  # 1 in the pair subset, then 3 pairs repeating earlier ones
    assert report.skipped["empty_text"] == 1
    check_invariant(report)
    triplets = build_nli(triplet, "triplets")
    assert as_tuples(triplets) == [("a", "c", "e"), ("b", "d", "f")]
    assert triplets.build_report.skipped["duplicate"] == 1


def test_several_sources_are_merged_and_counted(tmp_path, snli_rows):
    first = write_jsonl(tmp_path / "a.jsonl", snli_rows[:600])
    second = hub_dataset(snli_rows[400:1000])
    pairs = build_nli([first, second])
    assert as_tuples(pairs) == reference_pairs(triples(snli_rows[:1000]))
    report = pairs.build_report
    assert report.rows_read_by_source == {str(first): 600, "sources[1] (dataset)": 600}
    assert report.rows_read == 1200
    check_invariant(report)
    assert "rows read by source" in str(report)


# ------------------------------------------------------------------------------------------ labels and options


@pytest.mark.parametrize(
    ("labels", "expected_kept"),
    [
        pytest.param(["entailment", "neutral", "contradiction", "-"], 1, id="lower"),
        pytest.param(["ENTAILMENT", "NEUTRAL", "CONTRADICTION", "-"], 1, id="upper"),
        pytest.param([" Entailment ", "Neutral", "Contradiction", "-"], 1, id="mixed-case-padded"),
        pytest.param([0, 1, 2, -1], 1, id="ints"),
        pytest.param(["0", "1", "2", "-1"], 1, id="digit-strings"),
    ],
)
def test_label_spellings(tmp_path, labels, expected_kept):
    rows = [{"premise": "P.", "hypothesis": f"H{i}.", "label": label} for i, label in enumerate(labels)]
    pairs = build_nli(write_jsonl(tmp_path / "x.jsonl", rows))
    assert as_tuples(pairs) == [("P.", "H0.")]
    report = pairs.build_report
    assert report.rows_kept == expected_kept
    assert (report.skipped["neutral"], report.skipped["contradiction"], report.skipped["no_consensus"]) == (1, 1, 1)


def test_label_map_for_other_corpora(tmp_path):
    rows = [
        {"premise": "P.", "hypothesis": f"H{i}.", "label": lab} for i, lab in enumerate(["Yes", "maybe", "no", "?"])
    ]
    label_map = {"yes": "entailment", "maybe": "neutral", "no": "contradiction", "?": "no_consensus"}
    triplets = build_nli(write_jsonl(tmp_path / "x.jsonl", rows), "triplets", label_map=label_map)
    assert as_tuples(triplets) == [("P.", "H0.", "H2.")]
    assert triplets.build_report.skipped["no_consensus"] == 1


def test_unknown_label_names_value_file_and_line(tmp_path, snli_rows):
    rows = [*snli_rows[:6], {"gold_label": "entailed", "sentence1": "a", "sentence2": "b"}]
    path = write_jsonl(tmp_path / "bad_label.jsonl", rows)
    with pytest.raises(
        NLIFormatError, match=r"bad_label\.jsonl, line 7: unknown label 'entailed' in column 'gold_label'"
    ):
        build_nli(path)


def test_unknown_label_in_dataset_names_the_row(snli_rows):
    ds = datasets.Dataset.from_dict({"premise": ["a", "b", "c"], "hypothesis": ["d", "e", "f"], "label": [0, 1, 5]})
    with pytest.raises(NLIFormatError, match=r"sources\[0\] \(dataset\), row 2: unknown label 5 in column 'label'"):
        build_nli(ds)


def test_whitespace_only_texts_are_dropped_and_counted(tmp_path):
    rows = [
        {"premise": "P.", "hypothesis": "   ", "label": 0},
        {"premise": "\t", "hypothesis": "H.", "label": 0},
        {"premise": "", "hypothesis": "H.", "label": 1},  # neutral first: counted as neutral
        {"premise": "P.", "hypothesis": "H.", "label": 0},
    ]
    pairs = build_nli(write_jsonl(tmp_path / "x.jsonl", rows))
    assert as_tuples(pairs) == [("P.", "H.")]
    assert pairs.build_report.skipped["empty_text"] == 2
    assert pairs.build_report.skipped["neutral"] == 1
    check_invariant(pairs.build_report)


def test_reversed_pairs(tmp_path):
    rows = [
        {"premise": "A.", "hypothesis": "B.", "label": 0},
        {"premise": "B.", "hypothesis": "A.", "label": 0},  # already the reverse of the first pair
        {"premise": "C.", "hypothesis": "D.", "label": 0},
    ]
    pairs = build_nli(write_jsonl(tmp_path / "x.jsonl", rows), add_reversed=True)
    assert as_tuples(pairs) == [("A.", "B."), ("B.", "A."), ("C.", "D."), ("D.", "C.")]
    report = pairs.build_report
    assert (report.rows_kept, report.reversed_added, report.reversed_duplicates, report.rows_out) == (3, 1, 2, 4)
    check_invariant(report)


def grid_rows(e: int, c: int) -> list[dict]:
    rows = [{"premise": "P.", "hypothesis": f"E{i}.", "label": 0} for i in range(e)]
    return rows + [{"premise": "P.", "hypothesis": f"C{j}.", "label": 2} for j in range(c)]


@pytest.mark.parametrize(
    ("e", "c", "cap", "expected"),
    [
        pytest.param(1, 1, None, 1, id="1x1"),
        pytest.param(2, 3, None, 6, id="2x3-all"),
        pytest.param(2, 3, 3, 3, id="2x3-cap3"),
        pytest.param(3, 3, 1, 1, id="3x3-cap1"),
        pytest.param(4, 2, 100, 8, id="4x2-cap-above"),
    ],
)
def test_triplets_per_premise_and_cap(tmp_path, e, c, cap, expected):
    builder = NLIBuilder("triplets", max_triplets_per_premise=cap)
    triplets = builder.build(write_jsonl(tmp_path / "x.jsonl", grid_rows(e, c)))
    got = as_tuples(triplets)
    assert len(got) == len(set(got)) == expected
    report = builder.report
    if cap is not None and cap >= max(e, c):
        assert report.skipped["over_cap"] == 0  # a cap of max(e, c) leaves no hypothesis unused
        assert {p for _, p, _ in got} == {f"E{i}." for i in range(e)}
        assert {n for _, _, n in got} == {f"C{j}." for j in range(c)}
    if cap is not None and cap < max(e, c):
        assert report.skipped["over_cap"] > 0
    check_invariant(report)


@pytest.mark.parametrize("e", range(1, 8))
@pytest.mark.parametrize("c", range(1, 8))
def test_pair_order_is_a_bijection_covering_both_sides_first(e, c):
    pairs = [pair_order(e, c, k) for k in range(e * c)]
    assert sorted(pairs) == [(i, j) for i in range(e) for j in range(c)]
    first = pairs[: max(e, c)]
    assert {i for i, _ in first} == set(range(e))
    assert {j for _, j in first} == set(range(c))


def test_triplets_without_partner_are_counted(tmp_path):
    rows = [
        {"premise": "P.", "hypothesis": "E.", "label": 0},
        {"premise": "Q.", "hypothesis": "C.", "label": 2},
        {"premise": "R.", "hypothesis": "E.", "label": 0},
        {"premise": "R.", "hypothesis": "C.", "label": 2},
        {"premise": "R.", "hypothesis": "C.", "label": 2},
    ]
    triplets = build_nli(write_jsonl(tmp_path / "x.jsonl", rows), "triplets")
    assert as_tuples(triplets) == [("R.", "E.", "C.")]
    skipped = triplets.build_report.skipped
    assert (skipped["entailment_without_partner"], skipped["contradiction_without_partner"]) == (1, 1)
    assert skipped["duplicate"] == 1
    check_invariant(triplets.build_report)


def test_report_as_dict_and_str(snli_dev, caplog):
    with caplog.at_level(logging.INFO, logger="st_mnr_plus.datasets.nli"):
        pairs = build_nli(snli_dev)
    report = pairs.build_report
    as_dict = report.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["rows_read"] == 9842
    assert as_dict["skipped"]["neutral"] == 3235
    assert as_dict["rows_skipped"] == 9842 - report.rows_kept
    text = str(report)
    assert "read 9,842 rows" in text
    assert "neutral" in text
    assert "duplicate" in text
    assert text in caplog.text


def test_cache_dir_keeps_the_arrow_file(tmp_path, snli_dev):
    pairs = build_nli(snli_dev, cache_dir=tmp_path / "out")
    files = list((tmp_path / "out").glob("*.arrow"))
    assert len(files) == 1
    assert datasets.Dataset.from_file(str(files[0]))[:] == pairs[:]


def test_build_nli_takes_the_options_declared_on_nli_builder(snli_dev):
    # One declaration of the options: build_nli's signature is (sources, <NLIBuilder's parameters>).
    ours = inspect.signature(build_nli).parameters
    builder = inspect.signature(NLIBuilder).parameters
    assert list(ours) == ["sources", *builder]
    assert len(builder) == 9
    for name, parameter in builder.items():
        assert (ours[name].kind, ours[name].default, ours[name].annotation) == (
            parameter.kind,
            parameter.default,
            parameter.annotation,
        ), name
    with pytest.raises(TypeError, match="no_such_option"):
        build_nli(snli_dev, no_such_option=1)


def test_default_output_is_in_a_temporary_directory_removed_at_exit(tmp_path, snli_dev):
    script = f"""
import sys
from st_mnr_plus import build_nli
pairs = build_nli({str(snli_dev)!r})
print(pairs.cache_files[0]["filename"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path)
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.parent.name.startswith("st_mnr_plus-")
    assert path.suffix == ".arrow"
    assert not path.parent.exists()


def test_show_progress(snli_dev, capsys):
    build_nli(snli_dev, show_progress=True)
    assert "snli_1.0_dev.jsonl" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ bad input


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "snli_1.0_train.jsonl"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_nli(missing)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"x")
    with pytest.raises(NLIFormatError, match=r"data\.parquet: unsupported file type '\.parquet'"):
        build_nli(path)


def malformed_json(rows):
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, '{"gold_label": "entailment", "sentence1": "x", "sentence2": ')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        pytest.param("bad.jsonl", malformed_json, r"bad\.jsonl, line 4: malformed JSON", id="json"),
        pytest.param(
            "missing.jsonl",
            lambda rows: "\n".join([*map(json.dumps, rows[:4]), '{"gold_label": "neutral", "sentence1": "x"}']) + "\n",
            r"missing\.jsonl, line 5: missing field 'sentence2'",
            id="json-missing-field",
        ),
        pytest.param(
            "array.jsonl",
            lambda rows: "\n".join([*map(json.dumps, rows[:2]), "[1, 2]", json.dumps(rows[2])]) + "\n",
            r"array\.jsonl, line 3: expected a JSON object, got list",
            id="json-not-object",
        ),
        pytest.param(
            "short.txt",
            lambda rows: "sentence_A\tsentence_B\tentailment_judgment\nA.\tB.\tENTAILMENT\nA.\tB.\nC.\tD.\tNEUTRAL\n",
            r"short\.txt, line 3: 2 field\(s\), expected at least 3",
            id="too-few-fields",
        ),
    ],
)
def test_malformed_lines_raise_with_file_and_line_or_are_skipped(tmp_path, snli_rows, name, make, message):
    path = tmp_path / name
    path.write_text(make(snli_rows[:8]), encoding="utf-8")
    with pytest.raises(NLIFormatError, match=message) as info:
        build_nli(path)
    assert info.value.source == str(path)
    skipped = build_nli(path, on_error="skip")
    report = skipped.build_report
    assert report.skipped["malformed"] == 1
    check_invariant(report)


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        pytest.param(
            "latin1.jsonl",
            b'{"gold_label": "entailment", "sentence1": "A.", "sentence2": "B."}\n'
            b'{"gold_label": "entailment", "sentence1": "Caf\xe9.", "sentence2": "B."}\n',
            2,
            id="jsonl",
        ),
        pytest.param(
            "latin1.txt",
            b"sentence_A\tsentence_B\tentailment_judgment\nA.\tB.\tENTAILMENT\nA.\tB.\tNEUTRAL\nCaf\xe9.\tB.\tNEUTRAL\n",
            4,
            id="txt",
        ),
        pytest.param(
            "latin1.jsonl.gz",
            gzip.compress(
                b'{"gold_label": "entailment", "sentence1": "A.", "sentence2": "B."}\n' * 3
                + b'{"gold_label": "neutral", "sentence1": "\xff", "sentence2": "B."}\n'
            ),
            4,
            id="jsonl.gz",
        ),
    ],
)
def test_non_utf8_bytes_name_the_line(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(NLIFormatError, match=re.escape(f"{name}, line {line}: not valid UTF-8")):
        build_nli(path)
    assert build_nli(path, on_error="skip").build_report.skipped["malformed"] == 1


@pytest.mark.parametrize("malformed_elsewhere", [False, True], ids=["fast-path", "slow-path"])
def test_non_utf8_bytes_in_an_unused_field_are_ignored(tmp_path, malformed_elsewhere):
    """Only the fields read are decoded, whichever path (pyarrow's block reader or line by line) reads them."""
    path = tmp_path / "release.jsonl"
    lines = [
        b'{"gold_label": "entailment", "sentence1": "A.", "sentence2": "B.", "captionID": "\xff"}',
        b'{"gold_label": "entailment", "sentence1": "C.", "sentence2": "D."}',
    ]
    if malformed_elsewhere:
        lines.append(b"{not json")
    path.write_bytes(b"\n".join(lines) + b"\n")
    pairs = build_nli(path, on_error="skip")
    assert as_tuples(pairs) == [("A.", "B."), ("C.", "D.")]
    assert pairs.build_report.skipped["malformed"] == int(malformed_elsewhere)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("file", id="file"),
        pytest.param("dataset", id="dataset"),
    ],
)
def test_missing_columns_lists_found_and_expected(tmp_path, source):
    if source == "file":
        path = tmp_path / "odd.jsonl"
        write_jsonl(path, [{"text": "a", "other": "b", "y": 0}])
        item = path
    else:
        item = datasets.Dataset.from_dict({"text": ["a"], "other": ["b"], "y": [0]})
    with pytest.raises(NLIFormatError, match=r"missing columns\. Found columns \['text', 'other', 'y'\]; expected one of: sentence1, sentence2, gold_label") as info:  # fmt: skip
        build_nli(item)
    assert "premise, hypothesis, label" in str(info.value)
    assert "anchor, positive, negative" in str(info.value)


def test_column_mapping_that_does_not_fit_is_named(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"text": "a", "other": "b", "y": 0}])
    with pytest.raises(NLIFormatError, match=r"columns= names hypothesis='nope', which the source does not have"):
        build_nli(path, columns={"premise": "text", "hypothesis": "nope", "label": "y"})


def test_a_mapping_naming_absent_columns_never_falls_back_to_a_recognised_layout(snli_dev):
    """The README promises that missing columns raise: a file in a known layout used to be built from its
    default columns when the given mapping did not fit."""
    with pytest.raises(NLIFormatError, match=r"columns= names premise='x', hypothesis='y', label='z'"):
        build_nli(snli_dev, columns={"premise": "x", "hypothesis": "y", "label": "z"})


def test_null_in_dataset_row(snli_rows):
    ds = datasets.Dataset.from_dict({"premise": ["a", None, "c"], "hypothesis": ["d", "e", "f"], "label": [0, 0, 0]})
    with pytest.raises(
        NLIFormatError, match=r"sources\[0\] \(dataset\), row 1: missing value \(null\) in column 'premise'"
    ):
        build_nli(ds)
    skipped = build_nli(ds, on_error="skip")
    assert as_tuples(skipped) == [("a", "d"), ("c", "f")]
    assert skipped.build_report.skipped["malformed"] == 1


@pytest.mark.parametrize(
    ("output", "rows", "mentioned"),
    [
        pytest.param(
            "pairs", [{"premise": "P.", "hypothesis": "H.", "label": 1}], "neutral 1", id="pairs-all-neutral"
        ),
        pytest.param(
            "triplets",
            [{"premise": "P.", "hypothesis": "H.", "label": 0}, {"premise": "Q.", "hypothesis": "H.", "label": 2}],
            "entailment_without_partner 1, contradiction_without_partner 1",
            id="triplets-no-partner",
        ),
        pytest.param("pairs", [{"premise": " ", "hypothesis": "H.", "label": 0}], "empty_text 1", id="pairs-empty"),
    ],
)
def test_empty_result_says_which_filters_removed_everything(tmp_path, output, rows, mentioned):
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    with pytest.raises(EmptyBuildError, match=mentioned) as info:
        build_nli(path, output)
    assert str(path) in str(info.value)
    assert info.value.report.rows_read == len(rows)
    assert list(tmp_path.glob("**/*.arrow")) == []


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(NLIFormatError, match=r"empty\.jsonl: missing columns\. Found columns \[\]"):
        build_nli(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"output": "pair"}, "output must be 'pairs' or 'triplets'", id="output"),
        pytest.param(
            {"output": "triplets", "add_reversed": True}, "add_reversed=True applies", id="reversed-triplets"
        ),
        pytest.param({"max_triplets_per_premise": 2}, "max_triplets_per_premise applies", id="cap-pairs"),
        pytest.param({"output": "triplets", "max_triplets_per_premise": 0}, "positive integer", id="cap-zero"),
        pytest.param({"on_error": "ignore"}, "on_error must be 'raise' or 'skip'", id="on_error"),
        pytest.param({"label_map": {"yes": "entails"}}, r"label_map\['yes'\] = 'entails'", id="label_map-value"),
        pytest.param({"columns": {"premise": "a", "hypothesis": "b"}}, "columns must map exactly", id="columns-keys"),
        pytest.param({"columns": {"premise": "a", "hypothesis": 1, "label": "c"}}, "not a mix", id="columns-mix"),
        pytest.param({"split": ""}, "split must be", id="split"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NLIBuilder(**kwargs)


def test_bad_sources_argument():
    with pytest.raises(ValueError, match="sources is empty"):
        build_nli([])
    with pytest.raises(ValueError, match="sources must be"):
        build_nli(42)
    with pytest.raises(ValueError, match=r"sources\[1\] must be"):
        build_nli([datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]}), 3.5])


@pytest.mark.parametrize("output", ["pairs", "triplets"])
def test_large_string_columns(snli_rows, output):
    ds = hub_dataset(snli_rows[:400])
    large = ds.cast_column("premise", datasets.Value("large_string")).cast_column(
        "hypothesis", datasets.Value("large_string")
    )
    assert as_tuples(build_nli(large, output)) == as_tuples(build_nli(ds, output))


def test_triplet_groups_of_a_premise_split_across_the_file(tmp_path):
    """A premise whose rows are far apart (and across sources) still gets all its triplets, emitted once."""
    rows_a = [{"premise": "P.", "hypothesis": "E1.", "label": 0}, {"premise": "Q.", "hypothesis": "E.", "label": 0}]
    rows_b = [
        {"premise": "Q.", "hypothesis": "C.", "label": 2},
        {"premise": "P.", "hypothesis": "C1.", "label": 2},
        {"premise": "P.", "hypothesis": "E1.", "label": 0},
    ]
    triplets = build_nli([write_jsonl(tmp_path / "a.jsonl", rows_a), hub_dataset_from(rows_b)], "triplets")
    assert sorted(as_tuples(triplets)) == [("P.", "E1.", "C1."), ("Q.", "E.", "C.")]
    assert triplets.build_report.skipped["duplicate"] == 1
    check_invariant(triplets.build_report)


def hub_dataset_from(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows)
