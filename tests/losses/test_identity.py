"""Row identities: which inputs are equal (token ids under the mask, pixel values, ...), so duplicates are masked
however dropout moves their embeddings, and columns that cannot be identified are left unmasked."""

from __future__ import annotations

import logging
from typing import Any

import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_mnr_plus.losses import MNRPlus
from st_mnr_plus.losses.identity import row_hashes

F32 = {"rtol": 1.3e-6, "atol": 1e-5}


def _embeddings(batch: int, columns: int, dim: int = 16, seed: int = 0, **kwargs: Any) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator).to(**kwargs) for _ in range(columns)]


def test_image_only_columns_are_identified_and_equal_images_masked():
    """mask_duplicates used to raise on a column without input_ids."""
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(5, 3, 4, 4, generator=generator) for _ in range(2)]
    images[1][3] = images[1][0]  # rows 0 and 3 share a positive image
    loss_fn = MNRPlus(None)
    row_ids = loss_fn.row_ids([{"pixel_values": images[0]}, {"pixel_values": images[1]}])
    assert row_ids[1][0] == row_ids[1][3]
    assert len(set(row_ids[0].tolist())) == 5
    embeddings = _embeddings(5, 2, seed=2)
    embeddings[1][3] = embeddings[1][0]
    loss_fn.compute_loss_from_embeddings(embeddings, None, row_ids=row_ids)
    assert loss_fn.diagnostics["masked_duplicates"] == 2  # row 0's and row 3's copy of the shared positive


def test_multimodal_rows_with_shared_placeholders_but_different_images_are_not_masked():
    """Rows whose token ids are all image placeholders used to be masked as duplicates: the loss was exactly 0."""
    generator = torch.Generator().manual_seed(1)
    columns = [
        {
            "input_ids": torch.full((6, 5), 32000),  # the same placeholder tokens in every row
            "attention_mask": torch.ones(6, 5, dtype=torch.long),
            "pixel_values": torch.rand(6, 3, 4, 4, generator=generator),
        }
        for _ in range(2)
    ]
    loss_fn = MNRPlus(None)
    embeddings = _embeddings(6, 2, seed=4)
    actual = loss_fn.compute_loss_from_embeddings(embeddings, None, row_ids=loss_fn.row_ids(columns))
    expected = MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(embeddings, None)
    torch.testing.assert_close(actual, expected, **F32)
    assert loss_fn.diagnostics["masked_duplicates"] == 0


def test_a_column_that_cannot_be_identified_is_left_unmasked_with_one_warning(caplog):
    images = {"input_ids": torch.full((4, 3), 7), "pixel_values": torch.rand(10, 8)}  # patches flattened over rows
    text = {"input_ids": torch.arange(12).reshape(4, 3)}
    loss_fn = MNRPlus(None)
    embeddings = _embeddings(4, 2, seed=5)
    with caplog.at_level(logging.WARNING, logger="st_mnr_plus.losses.mnr_plus"):
        for _ in range(2):
            actual = loss_fn.compute_loss_from_embeddings(embeddings, None, row_ids=loss_fn.row_ids([text, images]))
    assert caplog.text.count("cannot identify the rows of input column 1") == 1
    expected = MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(embeddings, None)
    torch.testing.assert_close(actual, expected, **F32)


def test_row_hashes_ignore_padding_and_tell_texts_apart():
    right = {
        "input_ids": torch.tensor([[101, 7, 8, 102, 0, 0], [101, 7, 9, 102, 0, 0], [101, 7, 8, 9, 102, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]]),
    }
    narrow = {"input_ids": torch.tensor([[101, 7, 8, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    left = {"input_ids": torch.tensor([[0, 0, 101, 7, 8, 102]]), "attention_mask": torch.tensor([[0, 0, 1, 1, 1, 1]])}
    h = row_hashes(right)
    assert h.dtype == torch.int64
    assert h.shape == (3,)
    assert len(set(h.tolist())) == 3
    assert row_hashes(narrow).item() == h[0].item()
    assert row_hashes(left).item() == h[0].item()
    assert (h >= 0).all()


def test_row_hashes_of_flat_embedding_bag_inputs():
    flat = {"input_ids": torch.tensor([5, 6, 7, 5, 6, 7, 5]), "offsets": torch.tensor([0, 3, 6])}
    h = row_hashes(flat)
    assert h[0] == h[1]
    assert h[0] != h[2]
