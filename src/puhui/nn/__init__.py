"""puhui.nn: a from-scratch NumPy neural-network engine for teaching (the seed essay's section 4).

An autograd Tensor (tensor.py), layers (layers.py), losses (losses.py), SGD and Adam (optim.py) and a
training loop (train.py). Small enough to read in one sitting; gradient-checked and compared with
PyTorch in tests/test_nn.py. Never used by the server: models in puhui.models are PyTorch.

    from puhui import nn
    model = nn.MLP([30, 16, 1], activation="relu")
    opt = nn.Adam(model.parameters(), lr=1e-2)
    losses = nn.fit(model, X, y, nn.binary_cross_entropy_with_logits, opt, epochs=50, rng=0)
    nn.predict_proba(model, X)        # (n, 2)
"""
from .layers import ACTIVATIONS, MLP, Linear, Module, ReLU, Sigmoid, Softmax, Tanh
from .losses import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, mse_loss
from .optim import SGD, Adam
from .tensor import Tensor, as_tensor
from .train import fit, predict, predict_proba

__all__ = ["Tensor", "as_tensor", "Module", "Linear", "ReLU", "Sigmoid", "Tanh", "Softmax", "ACTIVATIONS", "MLP",
           "mse_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
           "SGD", "Adam", "fit", "predict_proba", "predict"]
