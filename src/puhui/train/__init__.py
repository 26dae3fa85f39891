"""Training: one loop (fit) for every model, with atomic checkpoints, exact resume and early stopping."""
from .checkpoint import atomic_write, load_checkpoint, load_weights, save_checkpoint, save_weights
from .plot import plot_loss_curve
from .trainer import TrainConfig, TrainResult, fit, lr_factor, make_optimizer, seed_everything, to_device

__all__ = ["TrainConfig", "TrainResult", "fit", "lr_factor", "make_optimizer", "seed_everything", "to_device",
           "atomic_write", "load_checkpoint", "load_weights", "save_checkpoint", "save_weights", "plot_loss_curve"]
