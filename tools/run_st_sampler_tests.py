"""Run sentence-transformers' own batch-sampler tests with ``NoDuplicatesBatchSampler`` pointing at ours.

The tests are read from a sentence-transformers git repository (nothing of them is kept here), written to a
scratch folder with a ``conftest.py`` that swaps the class in ``sentence_transformers.base.sampler`` before the
test modules import it, and run with pytest; the outcome of every test is printed. With ``--value-key`` the
private ``_sample_value_str`` is swapped for :func:`st_mnr_plus.sampler.index.value_key` too, so that its tests
check our equivalent.

Usage::

    python tools/run_st_sampler_tests.py --st-repo PATH/TO/sentence-transformers [--value-key] [--out DIR]

``--st-repo`` is a clone (or a bare git directory) of https://github.com/huggingface/sentence-transformers;
``--rev`` picks the revision (default ``HEAD``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

TEST_FILES = (
    "tests/base/samplers/test_no_duplicates_batch_sampler.py",
    "tests/base/samplers/test_round_robin_batch_sampler.py",
)

CONFTEST = '''"""Point sentence-transformers' NoDuplicatesBatchSampler (and, if asked, _sample_value_str) at st-mnr-plus."""

import sentence_transformers.base.sampler as st_sampler

from st_mnr_plus.sampler.index import value_key
from st_mnr_plus.sampler import NoDuplicatesSampler

st_sampler.NoDuplicatesBatchSampler = NoDuplicatesSampler
if {value_key}:
    st_sampler._sample_value_str = value_key
'''


def extract(st_repo: Path, rev: str, out: Path) -> list[Path]:
    """Write the test files of ``st_repo`` at ``rev`` into ``out``; return their paths."""
    paths = []
    for name in TEST_FILES:
        text = subprocess.run(
            ["git", "-C", str(st_repo), "show", f"{rev}:{name}"], capture_output=True, text=True, check=True
        ).stdout
        path = out / Path(name).name
        path.write_text(text, encoding="utf8")
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--st-repo", type=Path, required=True, help="sentence-transformers clone or git directory")
    parser.add_argument("--rev", default="HEAD", help="revision of the tests (default HEAD)")
    parser.add_argument("--value-key", action="store_true", help="also swap _sample_value_str for value_key")
    parser.add_argument("--out", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="st_sampler_tests_"))
    out.mkdir(parents=True, exist_ok=True)
    paths = extract(args.st_repo, args.rev, out)
    (out / "conftest.py").write_text(CONFTEST.format(value_key=args.value_key), encoding="utf8")
    # rootdir is the scratch folder, so this repository's pytest options (filterwarnings=error, ...) do not apply.
    command = [sys.executable, "-m", "pytest", *map(str, paths), "-p", "no:cacheprovider", "-rA", "-q"]
    command += ["--rootdir", str(out), *args.pytest_args]
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, cwd=out, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
