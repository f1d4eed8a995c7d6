"""Test helper: run the ``tenshot`` command line with every process saving the weights it trained.

Used as ``torchrun --standalone --nproc_per_node 2 tests/rank_weights.py pretrain ...``. When the environment
variable ``TENSHOT_TEST_DUMP_RANK_WEIGHTS`` names a folder, each process writes ``rank-R.safetensors`` there
once its :class:`tenshot.train.loop.Trainer` has finished: the trainable parameters, the EMA shadow and the
optimizer's tensors as that process holds them. Everything else is the unchanged CLI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from tenshot.train import loop
from tenshot.train.checkpoint import optimizer_to_tensors

ENV = "TENSHOT_TEST_DUMP_RANK_WEIGHTS"
_train = loop.Trainer.train


def _train_and_dump(self: loop.Trainer):
    result = _train(self)
    folder = os.environ.get(ENV)
    if folder:
        tensors = {f"trainable.{k}": v.detach().cpu().contiguous() for k, v in self._trainable_state().items()}
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.ema.shadow.items()})
        optimizer, _ = optimizer_to_tensors(self.optimizer.state_dict())
        tensors.update({f"optimizer.{k}": v for k, v in optimizer.items()})
        Path(folder).mkdir(parents=True, exist_ok=True)
        metadata = {"rank": str(self.accelerator.process_index), "world": str(self.accelerator.num_processes)}
        save_file(tensors, str(Path(folder) / f"rank-{self.accelerator.process_index}.safetensors"), metadata=metadata)
    return result


loop.Trainer.train = _train_and_dump

if __name__ == "__main__":
    from tenshot.cli import main

    sys.exit(main())
