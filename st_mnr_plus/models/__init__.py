"""Ready-made starting models: word vectors (GloVe, word2vec) as a static sentence-transformers model."""

from __future__ import annotations

from st_mnr_plus.models.glove import (
    WordVectorFormatError,
    WordVectors,
    glove_static_embedding,
    load_glove_model,
    load_word_vectors,
    read_word_vectors,
)

__all__ = [
    "WordVectorFormatError",
    "WordVectors",
    "glove_static_embedding",
    "load_glove_model",
    "load_word_vectors",
    "read_word_vectors",
]
