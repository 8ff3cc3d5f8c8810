"""NLI labels: the names and codes accepted, a user's ``label_map``, and the codes of a batch's label column."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from st_mnr_plus.common.errors import ConfigurationError
from st_mnr_plus.datasets.readers import Batch, NLIFormatError, Source

ENTAILMENT, NEUTRAL, CONTRADICTION, NO_CONSENSUS = 0, 1, 2, -1

# Label names accepted (after strip() and lower()) and the codes they stand for; the hub's integer codes too.
_DEFAULT_LABELS: dict[str, int] = {
    "entailment": ENTAILMENT,
    "neutral": NEUTRAL,
    "contradiction": CONTRADICTION,
    "-": NO_CONSENSUS,
    "0": ENTAILMENT,
    "1": NEUTRAL,
    "2": CONTRADICTION,
    "-1": NO_CONSENSUS,
}
_LABEL_TARGETS: dict[str, int] = {
    "entailment": ENTAILMENT,
    "neutral": NEUTRAL,
    "contradiction": CONTRADICTION,
    "no_consensus": NO_CONSENSUS,
    "-": NO_CONSENSUS,
}
_UNKNOWN = np.int8(99)


def check_label_map(label_map: Mapping[str | int, str | int] | None) -> dict[str | int, int]:
    """Check a user's ``label_map`` and return it as normalised raw value (``strip().lower()``) -> code.

    Raises:
        ValueError: A key is neither a string nor an integer, or a meaning is not a label name or code.
    """
    if label_map is None:
        return {}
    if not isinstance(label_map, Mapping):
        raise ConfigurationError(
            f"label_map must be a mapping of label value -> meaning, got {type(label_map).__name__}."
        )
    checked: dict[str | int, int] = {}
    for raw, meaning in label_map.items():
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise ConfigurationError(f"label_map keys must be strings or integers, got {raw!r}.")
        if isinstance(meaning, str) and meaning.strip().lower() in _LABEL_TARGETS:
            code = _LABEL_TARGETS[meaning.strip().lower()]
        elif isinstance(meaning, int) and not isinstance(meaning, bool) and meaning in (0, 1, 2, -1):
            code = meaning
        else:
            raise ConfigurationError(
                f"label_map[{raw!r}] = {meaning!r}: expected 'entailment', 'neutral', 'contradiction', "
                "'no_consensus', or 0, 1, 2, -1."
            )
        checked[raw.strip().lower() if isinstance(raw, str) else raw] = code
    return checked


class LabelCoder:
    """Turns label columns into codes (0, 1, 2, -1), remembering each distinct value's code across batches.

    Args:
        label_map: A checked ``label_map`` (see :func:`check_label_map`): raw value -> code, before the built-ins.
    """

    def __init__(self, label_map: Mapping[str | int, int]) -> None:
        self.label_map = label_map
        self.cache: dict[Any, int | None] = {}

    def _code(self, value: Any) -> int | None:
        label_map = self.label_map
        if isinstance(value, str):
            key = value.strip().lower()
            if key in label_map:
                return label_map[key]
            return _DEFAULT_LABELS.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            if value in label_map:
                return label_map[value]
            return value if value in (0, 1, 2, -1) else None
        return None

    def codes(self, column: pa.ChunkedArray, batch: Batch, source: Source) -> np.ndarray:
        """Label codes (0, 1, 2, -1) of a batch; an unknown value raises naming it and its line or row."""
        encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        values = encoded.dictionary.to_pylist()
        lut = np.empty(len(values), dtype=np.int8)
        for i, value in enumerate(values):
            if value not in self.cache:
                self.cache[value] = self._code(value)
            code = self.cache[value]
            lut[i] = _UNKNOWN if code is None else code
        codes = lut[encoded.indices.to_numpy(zero_copy_only=False)]
        unknown = np.flatnonzero(codes == _UNKNOWN)
        if unknown.size:
            first = int(unknown[0])
            value = values[encoded.indices[first].as_py()]
            location = int(batch.locations[first])
            column_name = source.layout.mapping["label"]
            raise NLIFormatError(
                f"{source.where(location)}: unknown label {value!r} in column {column_name!r}. Expected "
                "entailment/neutral/contradiction in any case, 0/1/2, or '-'/-1 for no consensus; pass "
                "label_map={...} to map other values.",
                source.name,
                location,
            )
        return codes


__all__ = ["CONTRADICTION", "ENTAILMENT", "NEUTRAL", "NO_CONSENSUS", "LabelCoder", "check_label_map"]
