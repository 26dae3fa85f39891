"""Helper for tests/test_trainer.py's kill test: a fixed-seed training run that can be killed and resumed.

usage: python trainer_resume_script.py OUT_DIR [resume]    (or import it and call main)
env:   PAUSE_AT_BATCH=k  after training batch k-1, write OUT_DIR/paused and sleep (the test then SIGKILLs us)
       STEP_SLEEP=s      sleep s seconds per training batch (makes a timed kill land mid-run)
Each training batch writes its running count to OUT_DIR/batches.txt. The final weights go to OUT_DIR/final.safetensors.
The data and the model use every RNG a resume must restore: torch (noise, dropout), numpy and python random.
"""
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from puhui.train import TrainConfig, fit



class Noisy(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] + self.x[:, 1] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        jitter = 0.05 * torch.randn(8) + 0.01 * float(np.random.randn()) + 0.01 * random.random()
        return self.x[i] + jitter, self.y[i]


def main(out: Path, resume: bool = False, pause_at: int = 0, step_sleep: float = 0.0) -> nn.Module:
    batches = 0

    def loss_fn(model, batch):
        nonlocal batches
        if model.training:
            batches += 1
            (out / "batches.txt").write_text(str(batches))
            if batches == pause_at:
                (out / "paused").write_text("1")
                time.sleep(600)
            if step_sleep:
                time.sleep(step_sleep)
        x, y = batch
        return F.cross_entropy(model(x), y)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
    cfg = TrainConfig(epochs=4, batch_size=8, lr=3e-3, optimizer="adamw", weight_decay=0.01, schedule="cosine",
                      warmup_steps=3, grad_accum=2, clip_grad_norm=1.0, checkpoint_every=3, seed=123,
                      out_dir=str(out), resume=resume)
    out.mkdir(parents=True, exist_ok=True)
    fit(model, loss_fn, Noisy(100, 1), cfg, val_data=Noisy(40, 2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "final.safetensors"))
    return model


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), resume=len(sys.argv) > 2 and sys.argv[2] == "resume",
         pause_at=int(os.environ.get("PAUSE_AT_BATCH", "0")), step_sleep=float(os.environ.get("STEP_SLEEP", "0")))
