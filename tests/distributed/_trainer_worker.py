"""One rank of the trainer check, launched by ``torchrun --nproc_per_node 2 -m tests.distributed._trainer_worker``.

For each loss named in ``--losses``, trains a fresh copy of the model with ``SentenceTransformerTrainer`` for a few
steps with ``gather_across_devices=True`` and writes ``<loss>.rank<r>.json``: a checksum of the weights (the
model's and the loss's own parameters) before and after, and the logged training losses.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from tests.distributed._common import TRAINER_CASES, batch_columns, build_loss


def checksums(model: torch.nn.Module, loss_fn: torch.nn.Module) -> dict[str, str]:
    """SHA-256 over the bytes of the model's parameters, and over the loss's own (e.g. a learnable scale)."""
    model_params = {id(p) for p in model.parameters()}
    own = [(n, p) for n, p in loss_fn.named_parameters() if id(p) not in model_params]
    result = {}
    for key, named in (("model", list(model.named_parameters())), ("loss", own)):
        digest = hashlib.sha256()
        for name, param in named:
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        result[key] = digest.hexdigest()
    result["loss_params"] = ",".join(n for n, _ in own)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--losses", required=True, help="comma-separated ids from TRAINER_CASES")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    base = SentenceTransformer(str(args.model_dir), device="cpu")
    for case_id in args.losses.split(","):
        case = TRAINER_CASES[case_id]
        model = copy.deepcopy(base)
        # DDP cannot use find_unused_parameters with several forwards per step; the pooler is the only unused part.
        for name, param in model.named_parameters():
            if ".pooler." in name:
                param.requires_grad_(False)
        loss_fn = build_loss(case, model, gather=True)
        columns = batch_columns(case.batch_size * 4, case.num_columns, duplicates=False)
        dataset = Dataset.from_dict({f"column_{c}": texts for c, texts in enumerate(columns)})
        training_args = SentenceTransformerTrainingArguments(
            output_dir=str(args.out / f"trainer-{case_id}"),
            per_device_train_batch_size=case.batch_size // 2,
            max_steps=3,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            ddp_backend="gloo",
            ddp_find_unused_parameters=False,
            dataloader_drop_last=True,
            seed=12,
            disable_tqdm=True,
        )
        before = checksums(model, loss_fn)
        trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss_fn)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        result = {
            "before": before,
            "after": checksums(model, loss_fn),
            "losses": losses,
            "world_size": trainer.args.world_size,
            "wrapper": type(trainer.model_wrapped).__name__,
        }
        (args.out / f"{case_id}.rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
