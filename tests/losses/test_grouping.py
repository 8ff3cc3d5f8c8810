"""Length-grouped embedding (``embed_columns_grouped``, ``MNRPlus(group_by_length=True)``): the same loss and
gradients as sentence-transformers' ``embed_columns`` for fewer padded tokens, and ``embed_columns`` itself for
inputs it cannot group."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from sentence_transformers.base.losses.merged_forward import column_merging_disabled, embed_columns
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from st_mnr_plus.bench.workloads import packaged_text_pairs, set_dropout, trainer_steps
from st_mnr_plus.losses import MNRPlus, grouping
from st_mnr_plus.losses.grouping import (
    DEFAULT_MAX_TOKENS_PER_CHUNK,
    chunk_ranges,
    embed_columns_grouped,
    inverse_permutation,
    length_order,
    sorted_by_length,
)

# Real sentences of mixed length (4 to 40 tokens), one long outlier mid-batch: what makes padding expensive.
ANCHORS = [
    "A man is playing a guitar on stage.",
    "Two dogs run.",
    "The chef is slicing onions in the kitchen while the guests wait at their tables for dinner.",
    "A child rides a red bicycle down the street.",
    "A woman who is wearing a long blue coat and a hat is walking along the river with a small brown dog "
    "on a leash, past the old bridge and the market stalls, on a cold and windy morning in late autumn.",
    "People wait.",
    "The team celebrates after scoring a goal.",
    "An old man feeds pigeons by the fountain in the square.",
    "A cat sleeps.",
    "Workers repair the road at night under bright lights.",
]
POSITIVES = [
    "Someone performs music.",
    "Dogs are running through the deep snow in a field near the forest.",
    "A cook cuts vegetables.",
    "A kid is cycling.",
    "A woman walks her dog by the river.",
    "People stand at a bus stop while it rains heavily in the city centre.",
    "Players are happy.",
    "A man gives food to birds.",
    "A cat is napping in the warm afternoon sun on the windowsill of the kitchen.",
    "A road is being fixed.",
]
NEGATIVES = [
    "The stage is empty.",
    "Cats sleep indoors by the fire.",
    "The kitchen is closed for the day because the chef is ill.",
    "A child is sleeping.",
    "The sun shines on an empty street.",
    "A man is swimming.",
    "The team lost the match badly in front of their own supporters.",
    "A girl chases the pigeons.",
    "A dog barks.",
    "The road is empty and quiet tonight.",
]

# Float64: the grouped chunks are padded to their own width, which in float32 moves the encoder's reductions
# (attention softmax, mean pooling, weight gradients summed over tokens) by float32 rounding. In float64 that
# rounding is ~1e-16 and torch's float64 tolerances apply, so any real difference shows.
F64 = {"rtol": 1e-7, "atol": 1e-9}
# float32: measured differences are ~2e-7 on embeddings and ~1e-6 relative on gradients summed over tokens.
F32 = {"rtol": 1e-4, "atol": 1e-5}


# These batches are tiny: every test runs on one thread (tests/losses/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def minilm64(minilm):
    minilm.max_seq_length = 64
    return minilm.eval().to(torch.float64)


class Recorder(torch.nn.Module):
    """Calls ``model`` and records the shape of each call's ``input_ids`` (a stand-in for the encoder's work)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, ...]] = []

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        ids = features.get("input_ids")
        self.calls.append(tuple(ids.shape) if isinstance(ids, torch.Tensor) else ())
        return self.model(features)

    def preprocess(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.model.preprocess(*args, **kwargs)


def columns(num_columns: int) -> list[list[str]]:
    return [list(ANCHORS), list(POSITIVES), list(NEGATIVES)][:num_columns]


def step(loss_fn: torch.nn.Module, model: torch.nn.Module, cols: list[list[str]], **kwargs: Any):
    """Loss and gradients (by parameter name) of one backward pass."""
    model.zero_grad(set_to_none=True)
    loss = loss_fn([model.preprocess(c, **kwargs) for c in cols], None)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same(actual, expected, **tol: float) -> None:
    torch.testing.assert_close(actual[0], expected[0], **tol, msg=lambda m: f"loss: {m}")
    assert sorted(actual[1]) == sorted(expected[1]), "different sets of parameters got gradients"
    for name, grad in expected[1].items():
        torch.testing.assert_close(actual[1][name], grad, **tol, msg=lambda m, name=name: f"{name}: {m}")
    assert any(g.abs().sum() > 0 for g in expected[1].values()), "all gradients are zero"


# ------------------------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("lengths", "budget", "expected"),
    [
        pytest.param([10, 10, 10, 10], 40, [(0, 4)], id="one-chunk"),
        pytest.param([10, 10, 10, 10], 20, [(0, 2), (2, 4)], id="even"),
        pytest.param([30, 10, 10, 10, 5, 5, 5], 30, [(0, 1), (1, 4), (4, 7)], id="short-rows-share-a-chunk"),
        pytest.param([50, 8, 8], 30, [(0, 1), (1, 3)], id="row-longer-than-budget-alone"),
        pytest.param([9, 9, 9], 20, [(0, 2), (2, 3)], id="ragged-last"),
        pytest.param([5], 4096, [(0, 1)], id="one-row"),
        pytest.param([0, 0], 10, [(0, 2)], id="empty-texts"),
    ],
)
def test_chunk_ranges(lengths: list[int], budget: int, expected: list[tuple[int, int]]) -> None:
    assert chunk_ranges(lengths, budget) == expected


def test_sorted_by_length_and_inverse(tiny_model) -> None:
    features = tiny_model.preprocess(ANCHORS)
    ordered, order = sorted_by_length(features)
    lengths = ordered["attention_mask"].sum(dim=1)
    assert bool((lengths[:-1] >= lengths[1:]).all())
    assert ordered["modality"] == features["modality"]
    inverse = inverse_permutation(order)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(ordered[key][inverse], features[key]), key
    # Already sorted: left as it is.
    again, none = sorted_by_length(ordered)
    assert none is None
    assert again is ordered


@pytest.mark.parametrize("value", [0, -5, 2.5, True, "64"])
def test_bad_max_tokens_per_chunk_raises(tiny_model, value) -> None:
    features = [tiny_model.preprocess(c) for c in columns(2)]
    with pytest.raises(ValueError, match="max_tokens_per_chunk"):
        embed_columns_grouped(tiny_model, features, max_tokens_per_chunk=value)


# ------------------------------------------------------------------------------------------------ equality


@pytest.mark.parametrize("num_columns", [2, 3], ids=["pairs", "triplets"])
@pytest.mark.parametrize("budget", [DEFAULT_MAX_TOKENS_PER_CHUNK, 48], ids=["default-budget", "ragged-chunks"])
def test_same_loss_and_gradients_tiny(tiny_model, num_columns: int, budget: int) -> None:
    """Float64, dropout off: the grouped forward gives MNRL's loss and gradients, through fewer padded tokens."""
    cols = columns(num_columns)
    mnrl_model = tiny_model.eval().to(torch.float64)
    ours = Recorder(copy.deepcopy(mnrl_model))
    expected = step(MultipleNegativesRankingLoss(mnrl_model), mnrl_model, cols)
    loss_fn = MNRPlus(ours, group_by_length=True)
    loss_fn.forward = lambda features, labels: loss_fn.compute_loss_from_embeddings(
        embed_columns_grouped(ours, list(features), max_tokens_per_chunk=budget), labels
    )
    loss, grads = step(loss_fn, ours, cols)
    assert_same((loss, {k.removeprefix("model."): g for k, g in grads.items()}), expected, **F64)
    padded_tokens = sum(rows * width for rows, width in ours.calls)
    ungrouped = sum(len(c) * tiny_model.preprocess(c)["input_ids"].shape[1] for c in cols)
    if budget == 48:  # several chunks per column, the last ones ragged, each trimmed to its own longest text
        assert len(ours.calls) > 2 * num_columns
        assert padded_tokens < 0.7 * ungrouped
    else:  # 20-30 rows in one or two chunks per column: never more padded tokens than embed_columns
        assert len(ours.calls) <= 2 * num_columns
        assert padded_tokens <= ungrouped


def test_same_loss_and_gradients_minilm(minilm64, monkeypatch) -> None:
    monkeypatch.setattr(grouping, "DEFAULT_MAX_TOKENS_PER_CHUNK", 96)  # 10 rows: several chunks per column
    cols = columns(3)
    ours = Recorder(copy.deepcopy(minilm64))
    expected = step(MultipleNegativesRankingLoss(minilm64), minilm64, cols)
    loss, grads = step(MNRPlus(ours, group_by_length=True), ours, cols)
    assert_same((loss, {k.removeprefix("model."): g for k, g in grads.items()}), expected, **F64)
    assert len(ours.calls) >= 3
    assert sum(r * w for r, w in ours.calls) < 0.6 * sum(
        len(c) * minilm64.preprocess(c)["input_ids"].shape[1] for c in cols
    )


def test_same_loss_and_gradients_minilm_float32(minilm, monkeypatch) -> None:
    """The realistic dtype: equal up to float32 rounding of differently padded chunks."""
    monkeypatch.setattr(grouping, "DEFAULT_MAX_TOKENS_PER_CHUNK", 96)
    minilm.max_seq_length = 64
    model = minilm.eval()
    ours = copy.deepcopy(model)
    expected = step(MNRPlus(model, group_by_length=False), model, columns(2))
    actual = step(MNRPlus(ours, group_by_length=True), ours, columns(2))
    assert_same(actual, expected, **F32)


def test_embeddings_in_batch_order_minilm_float32(minilm) -> None:
    minilm.max_seq_length = 64
    model = minilm.eval()
    features = [model.preprocess(c) for c in columns(3)]
    with torch.no_grad():
        expected = embed_columns(model, features)
        actual = embed_columns_grouped(model, features, max_tokens_per_chunk=64)
    for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
        # ~2e-7 measured: reductions over a shorter padded width.
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"column {k}: {m}")


def test_with_prompt(tiny_model) -> None:
    """A prompt (``prompt_length`` in the features) travels with every chunk: same embeddings, still grouped."""
    model = tiny_model.eval().to(torch.float64)
    model[1].include_prompt = False  # Pooling then reads prompt_length: the case where it matters
    features = [model.preprocess(c, prompt="query: ") for c in columns(2)]
    assert features[0]["prompt_length"] > 0
    ours = Recorder(model)
    with torch.no_grad():
        expected = embed_columns(model, [dict(f) for f in features])
        actual = embed_columns_grouped(ours, [dict(f) for f in features], max_tokens_per_chunk=48)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **F64)
    assert len(ours.calls) > 2  # several chunks per column


def test_columns_that_cannot_share_a_forward_are_grouped_each_on_its_own(tiny_model) -> None:
    """Different prompts per column (a query and a document prompt): no pooled chunk mixes them."""
    model = tiny_model.eval().to(torch.float64)
    model[1].include_prompt = False
    cols = columns(2)
    features = [
        model.preprocess(cols[0], prompt="query: "),
        model.preprocess(cols[1], prompt="Represent this passage: "),
    ]
    assert features[0]["prompt_length"] != features[1]["prompt_length"]
    ours = Recorder(model)
    with torch.no_grad():
        expected = embed_columns(model, [dict(f) for f in features])
        actual = embed_columns_grouped(ours, [dict(f) for f in features], max_tokens_per_chunk=48)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **F64)
    # Chunks of one column only: their rows add up to 10 twice, never a chunk straddling the two.
    rows = [r for r, _ in ours.calls]
    cumulative = [sum(rows[: i + 1]) for i in range(len(rows))]
    assert 10 in cumulative
    assert cumulative[-1] == 20


def test_inside_matryoshka_loss(tiny_model, monkeypatch) -> None:
    """MatryoshkaLoss replays the model's outputs call by call for each dimension: the chunks replay too."""
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    monkeypatch.setattr(grouping, "DEFAULT_MAX_TOKENS_PER_CHUNK", 48)  # several chunks per column
    cols = columns(3)
    model = tiny_model.eval().to(torch.float64)
    ours = copy.deepcopy(model)
    expected = step(MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), [32, 16, 8]), model, cols)
    actual = step(MatryoshkaLoss(ours, MNRPlus(ours, group_by_length=True), [32, 16, 8]), ours, cols)
    assert_same(actual, expected, **F64)


def test_dropout_on_gives_a_finite_loss_with_gradients(tiny_model) -> None:
    """Train mode: masks are drawn per chunk (so not MNRL's draws), and the step still trains every layer."""
    model = tiny_model.train()
    loss, grads = step(MNRPlus(model), model, columns(3))
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any("encoder.layer.0." in name and g.abs().sum() > 0 for name, g in grads.items())


# ------------------------------------------------------------------------------------------------ fallbacks


def assert_falls_back(model: torch.nn.Module, features: list[dict[str, Any]]) -> None:
    """``embed_columns_grouped`` makes exactly ``embed_columns``'s calls and returns its embeddings, bit for bit."""
    reference, ours = Recorder(model), Recorder(model)
    with torch.no_grad():
        expected = embed_columns(reference, [dict(f) for f in features])
        actual = embed_columns_grouped(ours, [dict(f) for f in features])
    assert ours.calls == reference.calls
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)


def test_falls_back_for_static_embedding(minilm_path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    static = StaticEmbedding(Tokenizer.from_file(str(minilm_path / "tokenizer.json")), embedding_dim=8)
    model = SentenceTransformer(modules=[static], device="cpu")
    features = [model.preprocess(c) for c in columns(2)]
    assert "offsets" in features[0]
    assert length_order(features[0]) is None
    assert_falls_back(model, features)
    # And through the loss: the same as MNRL.
    expected = MultipleNegativesRankingLoss(model)([dict(f) for f in features], None)
    actual = MNRPlus(model, group_by_length=True)([dict(f) for f in features], None)
    torch.testing.assert_close(actual, expected)


class Echo(torch.nn.Module):
    """A stand-in encoder for inputs no real model here takes: one embedding per row, from ``input_ids``."""

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        ids = features["input_ids"]
        rows = len(features["cu_seq_lens_q"]) - 1 if "cu_seq_lens_q" in features else ids.shape[0]
        return {**features, "sentence_embedding": torch.ones(rows, 4) * ids.float().sum()}


def padded(rows: int, width: int) -> dict[str, Any]:
    lengths = torch.arange(rows) % width + 1
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return {"input_ids": mask * 7, "attention_mask": mask}


@pytest.mark.parametrize(
    "features",
    [
        pytest.param(
            [
                {"input_ids": torch.arange(9)[None], "cu_seq_lens_q": torch.tensor([0, 4, 9]), "max_length_q": 5},
                {"input_ids": torch.arange(7)[None], "cu_seq_lens_q": torch.tensor([0, 3, 7]), "max_length_q": 4},
            ],
            id="unpadded-cu_seq_lens",
        ),
        pytest.param([{**padded(4, 6), "pixel_values": torch.zeros(4, 3, 2, 2)}, padded(4, 5)], id="image-features"),
        pytest.param([{**padded(4, 6), "texts": ["a", "b", "c", "d"]}, padded(4, 5)], id="per-row-list"),
        pytest.param([padded(1, 6), padded(1, 5)], id="one-row"),
        pytest.param([{key: value.flip(1) for key, value in padded(4, 6).items()}, padded(4, 5)], id="left-padded"),
    ],
)
def test_falls_back_for_inputs_it_cannot_group(features: list[dict[str, Any]]) -> None:
    assert_falls_back(Echo(), features)


class RowSums(torch.nn.Module):
    """A stand-in encoder whose embedding of a row is the sum of its token ids; records each call's ids."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[torch.Tensor] = []

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(features["input_ids"])
        return {**features, "sentence_embedding": features["input_ids"].sum(dim=1, keepdim=True).float()}


def test_columns_pool_when_that_pads_fewer_tokens() -> None:
    """Two columns of lengths 6, 5, 4, 3 at 12 tokens a chunk: pooled, 37 padded tokens; apart, 40."""
    lengths = torch.tensor([3, 6, 4, 5])
    mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
    features = [{"input_ids": mask * 7, "attention_mask": mask}, {"input_ids": mask * 9, "attention_mask": mask}]
    model = RowSums()
    anchors, positives = embed_columns_grouped(model, features, max_tokens_per_chunk=12)
    assert anchors.flatten().tolist() == (lengths * 7).tolist()  # back in each column's row order
    assert positives.flatten().tolist() == (lengths * 9).tolist()
    assert sum(ids.numel() for ids in model.calls) == 37
    assert {7, 9} <= set(model.calls[0].unique().tolist())  # a chunk holding rows of both columns
    # Where pooling would pad more (one long column, one short), each column is chunked on its own.
    short = (torch.arange(6)[None, :] < torch.tensor([2, 1, 2, 1])[:, None]).long()[:, :2]
    model = RowSums()
    embed_columns_grouped(
        model, [features[0], {"input_ids": short * 9, "attention_mask": short}], max_tokens_per_chunk=48
    )
    assert all(len(set(ids.unique().tolist()) - {0}) == 1 for ids in model.calls)


def test_falls_back_inside_column_merging_disabled(tiny_model) -> None:
    """Wrapper losses (AdaptiveLayerLoss) pass state through the per-column dicts: they get embed_columns."""
    features = [tiny_model.preprocess(c) for c in columns(3)]
    with column_merging_disabled():
        assert_falls_back(tiny_model.eval(), features)


# ------------------------------------------------------------------------------------------------ the loss


def test_group_by_length_option(tiny_model) -> None:
    assert MNRPlus(tiny_model).group_by_length is True
    assert MNRPlus(tiny_model).get_config_dict()["group_by_length"] is True
    assert MNRPlus(tiny_model, group_by_length=False).get_config_dict()["group_by_length"] is False


def test_group_by_length_false_embeds_as_mnrl(tiny_model) -> None:
    """Off, the loss embeds exactly as MNRL does: the same forwards, so the same dropout draws."""
    model = Recorder(tiny_model.train())
    features = [model.preprocess(c) for c in columns(3)]
    torch.manual_seed(1)
    expected = MultipleNegativesRankingLoss(model)([dict(f) for f in features], None)
    mnrl_calls = list(model.calls)
    model.calls.clear()
    torch.manual_seed(1)
    actual = MNRPlus(model, group_by_length=False, mask_duplicates=False)([dict(f) for f in features], None)
    assert model.calls == mnrl_calls
    torch.testing.assert_close(actual, expected)


# ------------------------------------------------------------------------------------------------ through the trainer


def distinct_pairs(count: int) -> list[tuple[str, str]]:
    """Real pairs of mixed length whose positives are all different: MNRPlus masks no duplicate, so it is
    mathematically MNRL and the two must train to the same weights."""
    seen: set[str] = set()
    pairs = []
    for anchor, positive in packaged_text_pairs()[::7]:
        if positive not in seen and anchor not in seen:
            seen.update((anchor, positive))
            pairs.append((anchor, positive))
        if len(pairs) == count:
            return pairs
    raise AssertionError("not enough distinct pairs")


def trained_weights(model, loss_name: str, batch_size: int, steps: int) -> dict[str, torch.Tensor]:
    set_dropout(model, 0.0)
    loss = MultipleNegativesRankingLoss(model) if loss_name == "mnrl" else MNRPlus(model, group_by_length=True)
    trainer_steps(model, loss, distinct_pairs(batch_size * steps), batch_size=batch_size, steps=steps, seed=5)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_trains_like_mnrl(model, batch_size: int, monkeypatch=None) -> None:
    if monkeypatch is not None:  # small batches: a small budget, so that each column still gets several chunks
        monkeypatch.setattr(grouping, "DEFAULT_MAX_TOKENS_PER_CHUNK", 64)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    expected = trained_weights(copy.deepcopy(model), "mnrl", batch_size, steps=4)
    actual = trained_weights(copy.deepcopy(model), "mnr_plus", batch_size, steps=4)
    moved = [name for name, p in expected.items() if not torch.equal(p, initial[name])]
    assert any("encoder.layer" in name for name in moved), "4 steps did not move the encoder"
    for name, param in expected.items():
        # float32 training: rounding of differently padded chunks, passed through AdamW's normalised updates.
        torch.testing.assert_close(actual[name], param, **F32, msg=lambda m, n=name: f"{n}: {m}")


def test_four_trainer_steps_equal_mnrl_tiny(tiny_model, monkeypatch) -> None:
    assert_trains_like_mnrl(tiny_model, batch_size=16, monkeypatch=monkeypatch)


@pytest.mark.slow  # the tiny model's twin above runs by default
def test_four_trainer_steps_equal_mnrl_minilm(minilm, monkeypatch) -> None:
    minilm.max_seq_length = 128
    assert_trains_like_mnrl(minilm, batch_size=8, monkeypatch=monkeypatch)


@pytest.mark.slow
def test_four_trainer_steps_equal_mnrl_minilm_batch_128(minilm) -> None:
    """The acceptance setting: all-MiniLM-L6-v2, max_seq_length 128, batch 128, dropout 0, 4 steps."""
    minilm.max_seq_length = 128
    assert_trains_like_mnrl(minilm, batch_size=128)


def test_reads_the_device_once_per_forward(tiny_model, monkeypatch) -> None:
    """On CUDA each read of a tensor's values waits for the device: the token counts of every column, the pool's
    and the padding side come to the host in one copy; the encoder's own reads are not counted."""
    model = tiny_model.eval()
    features = [model.preprocess(c) for c in columns(3)]
    reads: list[str] = []
    inside_model = [False]

    class Counting(torch.nn.Module):
        def forward(self, chunk: dict[str, Any]) -> dict[str, Any]:
            inside_model[0] = True
            try:
                return model(chunk)
            finally:
                inside_model[0] = False

    def counted(name: str):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if not inside_model[0]:
                reads.append(name)
            return original(self, *args, **kwargs)

        return read

    for name in ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    with torch.no_grad():
        embeddings = embed_columns_grouped(Counting(), features, max_tokens_per_chunk=48)
    monkeypatch.undo()
    assert reads == ["tolist"]
    assert [e.shape[0] for e in embeddings] == [len(c) for c in columns(3)]
