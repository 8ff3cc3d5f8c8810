"""What the README shows, runs: every Python block, and every shell command, on local stand-ins.

Each Python block runs pasted alone (its imports included), or starts with ``# continues the <Name> example
above (names)`` and then runs where the first block of the section whose heading holds ``<Name>`` left off. The
blocks run in a folder of stand-ins for what a user would have: files under the names the README uses (the
first SNLI dev rows as ``snli_1.0_train.jsonl``, ...), the tiny test model in a folder named like the hub id, and
``datasets.load_dataset`` (the network boundary) answering the hub ids the README names from local copies.

Every shell command of the README is listed in :data:`COMMANDS` with how it runs: in the default suite when it
takes seconds, under ``-m slow`` when it trains, or not at all with the reason (installs, a GPU). A command added
to the README without an entry here fails :func:`test_every_readme_command_is_listed`, so they cannot drift.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from st_mnr_plus.cli import main
from tests.conftest import PACKAGE_DATA, REPO_ROOT, TEST_DATA

README = REPO_ROOT / "README.md"


# ---- the README's blocks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    section: str

    @property
    def id(self) -> str:
        return f"line{self.line}"


def readme_blocks() -> list[Block]:
    """Every fenced block, with its language, first line number and the ``##``/``###`` heading above it."""
    blocks, section, lang, start, lines = [], "", None, 0, []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if lang is None and line.startswith("#") and not line.startswith("####"):
            section = line.lstrip("#").strip()
        elif lang is None and line.startswith("```"):
            lang, start, lines = line[3:].strip() or "text", number + 1, []
        elif lang is not None and line.startswith("```"):
            blocks.append(Block(lang, "\n".join(lines) + "\n", start, section))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


BLOCKS = readme_blocks()
PYTHON = [block for block in BLOCKS if block.lang == "python"]
CONTINUES = re.compile(r"^# continues the (?P<name>.+?) example above \((?P<names>[^)]*)\)")


def shell_commands() -> list[str]:
    """The commands of the bash blocks: continuation lines joined, comments and extra blanks removed."""
    commands = []
    for block in BLOCKS:
        if block.lang != "bash":
            continue
        for command in block.code.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#\s.*$", "", command).strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


# ---- the stand-ins ----------------------------------------------------------------------------------------------


def _snli_lines(path: Path, count: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line for _, line in zip(range(count), handle, strict=False)]


def _write_gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)


def _hub_datasets() -> dict[str, Callable[[str | None], Any]]:
    """Local copies of the data sets the README loads by hub id, in the hub's layout, by split."""
    from datasets import Dataset

    from st_mnr_plus.evaluation.readers import read_sick_txt, read_stsb_csv

    def snli(split: str | None) -> Dataset:
        rows = [json.loads(line) for line in _snli_lines(PACKAGE_DATA / "snli" / "snli_1.0_dev.jsonl.gz", 600)]
        labels = {"entailment": 0, "neutral": 1, "contradiction": 2, "-": -1}
        return Dataset.from_dict(
            {
                "premise": [r["sentence1"] for r in rows],
                "hypothesis": [r["sentence2"] for r in rows],
                "label": [labels[r["gold_label"]] for r in rows],
            }
        )

    def pairs_dataset(pairs, divisor: float) -> Dataset:
        scores = [score / divisor for score in pairs.scores]
        return Dataset.from_dict({"sentence1": pairs.sentences1, "sentence2": pairs.sentences2, "score": scores})

    def stsb(split: str | None) -> Dataset:  # the hub copy's scores are 0-1, the release's 0-5
        name = {"train": "sts-train.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}[split or "test"]
        return pairs_dataset(read_stsb_csv(PACKAGE_DATA / "stsbenchmark" / name), 5.0)

    def sickr(split: str | None) -> Dataset:  # 1-5 in both
        return pairs_dataset(read_sick_txt(TEST_DATA / "sick2014" / "SICK_test_annotated.txt"), 1.0)

    return {"stanfordnlp/snli": snli, "sentence-transformers/stsb": stsb, "mteb/sickr-sts": sickr}


@pytest.fixture(scope="module")
def standins(tmp_path_factory, _tiny_model_session) -> Path:
    """A folder holding what the README's examples name, made from the repository's real data."""
    root = tmp_path_factory.mktemp("readme")
    train = "".join(_snli_lines(PACKAGE_DATA / "snli" / "snli_1.0_dev.jsonl.gz", 240))
    (root / "snli_1.0_train.jsonl").write_text(train, encoding="utf-8")
    (root / "snli_1.0_dev.jsonl").write_text(train, encoding="utf-8")
    _write_gz(root / "snli_1.0_train.jsonl.gz", train)
    _write_gz(
        root / "multinli_1.0_train.jsonl.gz",
        "".join(_snli_lines(PACKAGE_DATA / "snli" / "snli_1.0_test.jsonl.gz", 400)),
    )
    rows = [json.loads(line) for line in train.splitlines()[:60]]
    verdicts = {"entailment": "yes", "neutral": "maybe", "contradiction": "no", "-": "yes"}
    with open(root / "my_nli.csv", "w", encoding="utf-8") as handle:
        handle.write("text_a,text_b,verdict\n")
        handle.writelines(f'"{r["sentence1"]}","{r["sentence2"]}",{verdicts[r["gold_label"]]}\n' for r in rows)
    _write_gz(
        root / "headerless.tsv.gz",
        "".join(f"{r['sentence1']}\t{r['sentence2']}\t{r['gold_label']}\n" for r in rows if r["gold_label"] != "-"),
    )
    shutil.copytree(PACKAGE_DATA / "stsbenchmark", root / "path" / "to" / "stsbenchmark")
    shutil.copytree(TEST_DATA / "sick2014", root / "path" / "to" / "SICK")
    for hub_id in ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"):
        _tiny_model_session.save(str(root / hub_id))  # a local folder named like the hub id is what loads
    words = ["cat", "dog", "fish", "a", "the", "man", "plays"]
    vectors = np.random.default_rng(0).normal(size=(len(words), 300))
    (root / "glove.840B.300d.txt").write_text(
        "".join(f"{w} {' '.join(f'{v:.4f}' for v in row)}\n" for w, row in zip(words, vectors, strict=True)),
        encoding="utf-8",
    )
    return root


@pytest.fixture
def in_standins(standins: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the stand-ins folder, with the hub ids the README loads answered locally."""
    import datasets

    hub = _hub_datasets()
    real = datasets.load_dataset

    def load_dataset(path: str, name: str | None = None, *args: Any, split: str | None = None, **kwargs: Any):
        if path in hub:
            return hub[path](split)
        return real(path, name, *args, split=split, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.chdir(standins)
    return standins


# ---- the Python blocks ------------------------------------------------------------------------------------------

_NAMESPACES: dict[int, dict[str, Any]] = {}


def run_block(block: Block) -> dict[str, Any]:
    """Run ``block`` (once per session) and return the names it left."""
    if block.line in _NAMESPACES:
        return _NAMESPACES[block.line]
    match = CONTINUES.match(block.code)
    namespace: dict[str, Any] = {"__name__": f"readme_line{block.line}"}
    if match:
        base = next(b for b in PYTHON if match["name"] in b.section and not CONTINUES.match(b.code))
        namespace.update(run_block(base))
        missing = [name.strip() for name in match["names"].split(",") if name.strip() not in namespace]
        assert not missing, f"line {block.line} continues the {match['name']} example, which leaves no {missing}"
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
    _NAMESPACES[block.line] = namespace
    return namespace


# The README trains with the trainer's defaults, pin_memory included, which torch warns about on a CPU-only machine.
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")
@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_readme_python_block_runs(block: Block, in_standins: Path):
    run_block(block)


def test_a_block_that_uses_earlier_names_says_what_it_continues():
    """Pasted alone, a block must run: it imports what it uses, or says which example it continues."""
    for block in PYTHON:
        if CONTINUES.match(block.code):
            continue
        first = block.code.lstrip().splitlines()[0]
        assert first.startswith(("from ", "import ", "# ")), f"README.md:{block.line} starts with {first!r}"


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")
def test_the_callbacks_block_reads_what_the_run_logged(in_standins: Path):
    block = next(b for b in PYTHON if "MNRDiagnosticsCallback(loss).attach" in b.code)
    namespace = run_block(block)
    logged = [log for log in namespace["trainer"].state.log_history if "loss" in log]
    # One accuracy per training log (none when the run is shorter than logging_steps, as the stand-in's is).
    assert len(namespace["accuracy"]) == len(logged)
    assert all(0.0 <= value <= 1.0 for value in namespace["accuracy"])


# ---- the shell commands -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """How a README command is checked: ``"fast"`` (default suite), ``"slow"``, or ``"skip"`` with the reason."""

    how: str
    why: str = ""
    #: Arguments replacing stand-in paths of the command (an output folder in the test's tmp_path, ...).
    replace: tuple[tuple[str, str], ...] = ()


INSTALL = "an install into a fresh virtual environment: .ci/run runs the test command in a clean clone"
COMMANDS: dict[str, Run] = {
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install ".[model,plot]" '
    "&& st-mnr-plus train": Run("skip", INSTALL + "; `st-mnr-plus train` itself runs below, under -m slow"),
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[test]" '
    "&& pytest": Run("skip", INSTALL),
    "st-mnr-plus train --dry-run": Run("fast"),
    "st-mnr-plus train --source snli_1.0_train.jsonl.gz --source multinli_1.0_train.jsonl.gz --kind triplets "
    "--loss-option learnable_scale=true --batch-size 256 --output_dir output/allnli": Run("slow"),
    "st-mnr-plus train --mini-batch-size 32 --batch-size 1024": Run("slow"),
    "st-mnr-plus train --loss mnrl --sampler st_no_duplicates": Run("slow"),
    "st-mnr-plus train --help": Run("fast"),
    'pip install "st-mnr-plus[cuda]"': Run("skip", INSTALL),
    "st-mnr-plus kernels --arch 80,90": Run("fast"),
    "st-mnr-plus components": Run("fast"),
    "st-mnr-plus train --source snli_1.0_train.jsonl.gz --source multinli_1.0_train.jsonl.gz --kind triplets "
    "--model sentence-transformers/all-mpnet-base-v2 --max-seq-length 128 --per_device_train_batch_size 128 "
    "--gradient_accumulation_steps 4 --bf16 --lr_scheduler_type cosine --weight_decay 0.01 "
    "--dataloader_num_workers 4 --report_to tensorboard --output_dir output/allnli-mpnet --push_to_hub "
    "--hub_model_id my-org/mpnet-allnli-mnr-plus --hub_private_repo true": Run(
        "skip", "a GPU run that pushes to the hub; its pieces (bf16, reporters, the mocked hub) run in tests/recipe"
    ),
    "st-mnr-plus train --config output/allnli-mpnet/config.yaml --resume": Run(
        "skip", "resumes the GPU run above; resuming from a config.yaml runs in tests/recipe/test_checkpoints.py"
    ),
    "st-mnr-plus train --config output/allnli-mpnet/config.yaml --resume_from_checkpoint "
    "output/allnli-mpnet/checkpoint-500": Run("skip", "the same, from an explicit checkpoint folder"),
    'pip install -e ".[glove,model,plot]"': Run("skip", INSTALL),
    "python -m benchmarks.quality.run --start glove --seeds 5": Run(
        "skip", "110 training runs (25 min); its runner is tested in tests/test_quality_benchmark.py"
    ),
    "python -m benchmarks.quality.run --start minilm --seeds 3": Run("skip", "15 runs of 25 min, as above"),
    "st-mnr-plus train --config examples/quality/static_glove_recommended.toml --seed 1 --output-dir output/glove-1": (
        Run("slow", replace=(("output/glove-1", "{tmp}/glove-1"),))
    ),
    "examples/quality/run.sh": Run("slow"),
    'pip install "st-mnr-plus[model]"': Run("skip", INSTALL),
    "st-mnr-plus bench --quick": Run("slow"),
    "st-mnr-plus bench --batch-size 65536 --dim 768 --dtype bfloat16 --only loss": Run("skip", "a GPU command"),
    "st-mnr-plus bench --compare st-mnr-plus-bench/results.json --output-dir after": Run("slow"),
    'pip install "datasets==5.0.*" && pytest && pytest -m slow': Run(
        "skip", "how to widen a dependency range: the suite itself"
    ),
}


def test_every_readme_command_is_listed():
    readme = shell_commands()
    assert sorted(set(readme) - set(COMMANDS)) == [], "README commands with no entry in COMMANDS"
    assert sorted(set(COMMANDS) - set(readme)) == [], "COMMANDS entries the README no longer shows"


def _command_params(how: str) -> list[Any]:
    marks = [pytest.mark.slow] if how == "slow" else []
    return [pytest.param(cmd, id=cmd[:60], marks=marks) for cmd, run in COMMANDS.items() if run.how == how]


def _run(command: str, tmp_path: Path, capsys) -> str:
    for old, new in COMMANDS[command].replace:
        command = command.replace(old, new.format(tmp=tmp_path))
    argv = shlex.split(command)
    if argv[0] != "st-mnr-plus":
        import os
        import subprocess

        # The script calls st-mnr-plus and python by name: those of the environment running the tests, activated or not.
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout
    try:
        status = main(argv[1:])
    except SystemExit as exit_:  # --help
        status = exit_.code
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    return out


@pytest.mark.parametrize("command", _command_params("fast"))
def test_readme_command_runs(command: str, in_standins: Path, tmp_path: Path, capsys):
    out = _run(command, tmp_path, capsys)
    assert out.strip()


@pytest.mark.parametrize("command", _command_params("slow"))
def test_readme_training_command_runs(command: str, in_standins: Path, tmp_path: Path, capsys, monkeypatch):
    if command.startswith(("examples/", "st-mnr-plus train --config examples/")):
        monkeypatch.chdir(REPO_ROOT)  # the example configs name the repository's data files
    if "--compare" in command:
        _run("st-mnr-plus bench --quick", tmp_path, capsys)
    out = _run(command, tmp_path, capsys)
    if command.startswith("examples/quality/run.sh"):
        assert "static_glove_mnrl (seeds 0, 1, 2):" in out
        assert "static_glove_recommended (seeds 0, 1, 2):" in out


def test_every_skipped_command_says_why():
    assert all(run.why for run in COMMANDS.values() if run.how == "skip")
    assert {run.how for run in COMMANDS.values()} <= {"fast", "slow", "skip"}
