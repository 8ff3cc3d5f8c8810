"""``STSEvaluator``: sentence-transformers' ``EmbeddingSimilarityEvaluator`` that can encode each sentence once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from st_mnr_plus.evaluation.readers import EvaluatorError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class STSEvaluator(EmbeddingSimilarityEvaluator):
    """An ``EmbeddingSimilarityEvaluator`` that can encode each unique sentence once.

    With ``deduplicate=False`` (the default) it is exactly ``EmbeddingSimilarityEvaluator``. With
    ``deduplicate=True`` the union of both sides is encoded once, without repeats (STSb test: 2,552 unique
    sentences instead of 2,758), then looked up per pair. The embeddings then come from differently composed
    batches, so they can differ from the plain evaluator's in the last float bits (about 1e-7 on CPU); the
    correlations agree to about 1e-6, not bit for bit. Quantized ``precision`` settings always take the plain
    path, because sentence-transformers calibrates them over both sides together.

    Args:
        sentences1: The first sentence of each pair.
        sentences2: The second sentence of each pair.
        scores: The gold score of each pair, already normalised to 0-1.
        deduplicate: Encode each unique sentence once.
        **kwargs: Passed to ``EmbeddingSimilarityEvaluator`` (``batch_size``, ``main_similarity``, ``name``, ...).
    """

    def __init__(
        self,
        sentences1: list[str],
        sentences2: list[str],
        scores: list[float],
        *,
        deduplicate: bool = False,
        **kwargs: Any,
    ) -> None:
        if not (len(sentences1) == len(sentences2) == len(scores)):
            raise EvaluatorError(
                f"sentences1, sentences2 and scores must have the same length, got {len(sentences1)}, "
                f"{len(sentences2)} and {len(scores)}."
            )
        super().__init__(sentences1, sentences2, scores, **kwargs)
        self.deduplicate = deduplicate
        self._unique_embeddings: tuple[dict[str, int], np.ndarray] | None = None

    def __call__(
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        if not self.deduplicate or self.precision is not None:
            return super().__call__(model, output_path, epoch, steps)
        unique = list(dict.fromkeys([*self.sentences1, *self.sentences2]))
        embeddings = super().embed_inputs(model, unique)
        self._unique_embeddings = ({sentence: i for i, sentence in enumerate(unique)}, embeddings)
        try:
            # The parent asks embed_inputs for each side; those calls now read the table.
            return super().__call__(model, output_path, epoch, steps)
        finally:
            self._unique_embeddings = None

    def embed_inputs(self, model: SentenceTransformer, sentences: Any, **kwargs: Any) -> np.ndarray:
        table = self._unique_embeddings
        if table is not None and not kwargs and isinstance(sentences, list):
            index, embeddings = table
            rows = [index.get(sentence) if isinstance(sentence, str) else None for sentence in sentences]
            if None not in rows:
                return embeddings[rows]
        return super().embed_inputs(model, sentences, **kwargs)

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        if self.deduplicate:
            config["deduplicate"] = True
        return config


__all__ = ["STSEvaluator"]
