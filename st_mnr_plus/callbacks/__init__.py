"""Trainer callbacks: MNR diagnostics and throughput in the training logs, and a loss's own state in checkpoints.

:mod:`~st_mnr_plus.callbacks.diagnostics` and :mod:`~st_mnr_plus.callbacks.throughput` add figures to the training
logs (the ones holding ``loss``), so they land in ``trainer.state.log_history`` and reach the reporters
(TensorBoard, W&B, ...) when added with their ``attach``; :mod:`~st_mnr_plus.callbacks.loss_state` keeps a
learnable scale in checkpoints and gives it its own learning rate; :mod:`~st_mnr_plus.callbacks.base` holds what
they share.
"""

from __future__ import annotations

from st_mnr_plus.bench.memory import peak_rss_mib
from st_mnr_plus.callbacks.diagnostics import MNRDiagnosticsCallback
from st_mnr_plus.callbacks.loss_state import LOSS_STATE_FILE, LossStateCallback, loss_own_parameters
from st_mnr_plus.callbacks.throughput import ThroughputCallback

__all__ = [
    "LOSS_STATE_FILE",
    "LossStateCallback",
    "MNRDiagnosticsCallback",
    "ThroughputCallback",
    "loss_own_parameters",
    "peak_rss_mib",
]
