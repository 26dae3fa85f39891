"""puhui.nn: gradient checks for every op, loss and layer; step-for-step parity with PyTorch;
the seed's three-layer sigmoid network on breast cancer; and why the seed's own backward pass is wrong."""
import numpy as np
import pytest

from puhui import nn
from puhui.errors import BadCheckpoint
from puhui.nn import Tensor

RNG = np.random.default_rng(1234)


def rand(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape)


def away_from_zero(*shape):
    """Values in ±[0.2, 1.5]: where relu/clip have no kink within the finite-difference step."""
    return RNG.uniform(0.2, 1.5, shape) * RNG.choice([-1.0, 1.0], shape)


def grad_check(f, tensors, h=1e-5, tol=1e-6):
    """Compare backward() with central differences (f(x+h) - f(x-h)) / 2h, entry by entry.

    f() builds a scalar from `tensors` (leaf Tensors it closes over). The relative error
    |analytic - numeric| / (|analytic| + |numeric|) is taken over each tensor as a whole.
    """
    for t in tensors:
        t.grad = np.zeros_like(t.data)
    f().backward()
    for t in tensors:
        analytic, numeric = t.grad.copy(), np.zeros_like(t.data)
        for idx in np.ndindex(t.shape):
            old = t.data[idx]
            t.data[idx] = old + h
            up = f().item()
            t.data[idx] = old - h
            down = f().item()
            t.data[idx] = old
            numeric[idx] = (up - down) / (2 * h)
        err = np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-12)
        assert err <= tol, f"relative error {err:.2e} for a tensor of shape {t.shape}"


def check_op(op, *arrays):
    """Grad-check a tensor-valued op: reduce it to a scalar with fixed random weights R, sum(op(...) * R)."""
    tensors = [Tensor(a) for a in arrays]
    R = RNG.normal(size=op(*tensors).shape)
    grad_check(lambda: (op(*tensors) * R).sum(), tensors)


# --- 1. every op, including broadcasting ------------------------------------------------------

OPS = {
    "add": (lambda a, b: a + b, [rand(3, 4), rand(3, 4)]),
    "add_bcast_row": (lambda a, b: a + b, [rand(3, 4), rand(4)]),
    "add_bcast_both": (lambda a, b: a + b, [rand(3, 1), rand(1, 4)]),
    "add_bcast_3d": (lambda a, b: a + b, [rand(2, 3, 4), rand(3, 1)]),
    "add_scalar_tensor": (lambda a, b: a + b, [rand(3, 4), rand()]),
    "sub": (lambda a, b: a - b, [rand(3, 4), rand(3, 4)]),
    "sub_bcast": (lambda a, b: a - b, [rand(4), rand(3, 4)]),
    "mul": (lambda a, b: a * b, [rand(3, 4), rand(3, 4)]),
    "mul_bcast": (lambda a, b: a * b, [rand(2, 3, 4), rand(1, 3, 1)]),
    "div": (lambda a, b: a / b, [rand(3, 4), away_from_zero(3, 4)]),
    "div_bcast": (lambda a, b: a / b, [rand(3, 4), away_from_zero(3, 1)]),
    "neg": (lambda a: -a, [rand(3, 4)]),
    "pow2": (lambda a: a**2, [rand(3, 4)]),
    "pow3": (lambda a: a**3, [rand(3, 4)]),
    "pow_frac": (lambda a: a**-1.5, [rand(3, 4, lo=0.5, hi=2.0)]),
    "python_scalars": (lambda a: 2.0 - a * 3.0 + 1.5 / (a + 4.0) - 1.0, [rand(3, 4)]),
    "ndarray_left": (lambda a: np.full((3, 4), 2.0) * a + np.ones(4) - np.ones((3, 1)) / (a + 3), [rand(3, 4)]),
    "matmul": (lambda a, b: a @ b, [rand(3, 4), rand(4, 5)]),
    "matmul_batched_bcast": (lambda a, b: a @ b, [rand(2, 3, 4), rand(4, 5)]),
    "matmul_batched": (lambda a, b: a @ b, [rand(2, 3, 4), rand(2, 4, 5)]),
    "rmatmul_ndarray": (lambda a, A=rand(2, 3): A @ a, [rand(3, 4)]),
    "sum_all": (lambda a: a.sum(), [rand(3, 4)]),
    "sum_axis0": (lambda a: a.sum(axis=0), [rand(3, 4)]),
    "sum_axis_last_keepdims": (lambda a: a.sum(axis=-1, keepdims=True), [rand(3, 4)]),
    "sum_axes_tuple": (lambda a: a.sum(axis=(0, 2)), [rand(2, 3, 4)]),
    "sum_axes_negative": (lambda a: a.sum(axis=(-1, -2)), [rand(2, 3, 4)]),
    "mean_all": (lambda a: a.mean(), [rand(3, 4)]),
    "mean_axis1": (lambda a: a.mean(axis=1), [rand(3, 4)]),
    "mean_axes_keepdims": (lambda a: a.mean(axis=(0, 1), keepdims=True), [rand(2, 3, 4)]),
    "exp": (lambda a: a.exp(), [rand(3, 4)]),
    "log": (lambda a: a.log(), [rand(3, 4, lo=0.2, hi=3.0)]),
    "sigmoid": (lambda a: a.sigmoid(), [rand(3, 4, lo=-4, hi=4)]),
    "sigmoid_large": (lambda a: a.sigmoid(), [np.array([[-30.0, -8.0, 8.0, 30.0]])]),
    "relu": (lambda a: a.relu(), [away_from_zero(3, 4)]),
    "tanh": (lambda a: a.tanh(), [rand(3, 4, lo=-2, hi=2)]),
    "softplus": (lambda a: a.softplus(), [rand(3, 4, lo=-5, hi=5)]),
    "clip": (lambda a: a.clip(-0.5, 0.5), [np.array([[-0.9, -0.3, 0.1, 0.45, 0.8]])]),
    "softmax": (lambda a: a.softmax(), [rand(3, 5, lo=-3, hi=3)]),
    "softmax_axis0": (lambda a: a.softmax(axis=0), [rand(3, 5, lo=-3, hi=3)]),
    "softmax_3d": (lambda a: a.softmax(axis=-1), [rand(2, 3, 4, lo=-3, hi=3)]),
    "log_softmax": (lambda a: a.log_softmax(), [rand(3, 5, lo=-3, hi=3)]),
    "reshape": (lambda a: a.reshape(4, 3) @ a, [rand(3, 4)]),
    "reshape_tuple": (lambda a: a.reshape((2, 6)), [rand(3, 4)]),
    "transpose_T": (lambda a: a.T @ a, [rand(3, 4)]),
    "transpose_axes": (lambda a: a.transpose(1, 2, 0), [rand(2, 3, 4)]),
    "reused_node": (lambda a, b: (a * b + a).exp() * a - b.sum(axis=0), [rand(3, 4), rand(3, 4)]),
}


@pytest.mark.parametrize("name", OPS)
def test_op_gradients(name):
    op, arrays = OPS[name]
    check_op(op, *arrays)


# --- 1. every loss ----------------------------------------------------------------------------

def test_mse_loss_gradient():
    pred, target = Tensor(rand(6, 3)), rand(6, 3)
    grad_check(lambda: nn.mse_loss(pred, target), [pred])


def test_binary_cross_entropy_gradient():
    prob, target = Tensor(rand(8, 1, lo=0.05, hi=0.95)), RNG.integers(0, 2, 8)  # (n,) target for (n, 1)
    grad_check(lambda: nn.binary_cross_entropy(prob, target), [prob])


def test_binary_cross_entropy_with_logits_gradient():
    logits, target = Tensor(rand(8, 2, lo=-6, hi=6)), RNG.uniform(0, 1, (8, 2))  # soft targets too
    grad_check(lambda: nn.binary_cross_entropy_with_logits(logits, target), [logits])


def test_cross_entropy_gradient():
    logits, target = Tensor(rand(7, 4, lo=-3, hi=3)), RNG.integers(0, 4, 7)
    grad_check(lambda: nn.cross_entropy(logits, target), [logits])


def test_losses_match_torch_values():
    import torch
    import torch.nn.functional as F
    z, y01, labels = rand(9, 1, lo=-5, hi=5), RNG.integers(0, 2, (9, 1)).astype(float), RNG.integers(0, 3, 9)
    z3 = rand(9, 3, lo=-5, hi=5)
    p = 1 / (1 + np.exp(-z))
    t = torch.from_numpy
    assert np.isclose(nn.mse_loss(Tensor(z), y01).item(), F.mse_loss(t(z), t(y01)).item(), rtol=1e-12)
    assert np.isclose(nn.binary_cross_entropy(Tensor(p), y01).item(), F.binary_cross_entropy(t(p), t(y01)).item(),
                      rtol=1e-12)
    assert np.isclose(nn.binary_cross_entropy_with_logits(Tensor(z), y01).item(),
                      F.binary_cross_entropy_with_logits(t(z), t(y01)).item(), rtol=1e-12)
    assert np.isclose(nn.cross_entropy(Tensor(z3), labels).item(), F.cross_entropy(t(z3), t(labels)).item(),
                      rtol=1e-12)


def test_numerical_stability_at_extreme_logits():
    big = Tensor(np.array([[1000.0, -1000.0, 0.0]]))
    s = big.softmax()
    assert np.allclose(s.data, [[1.0, 0.0, 0.0]]) and np.all(np.isfinite(s.data))
    ce = nn.cross_entropy(big, [1])
    ce.backward()
    assert np.isclose(ce.item(), 2000.0) and np.all(np.isfinite(big.grad))

    z = Tensor(np.array([[1000.0], [-1000.0], [1000.0]]))
    loss = nn.binary_cross_entropy_with_logits(z, [1, 0, 0])  # two right, one wrong by 1000
    loss.backward()
    assert np.isclose(loss.item(), 1000.0 / 3) and np.all(np.isfinite(z.grad))

    p = Tensor(np.array([[1.0], [0.0]]))  # a fully saturated sigmoid: logs are floored at -100, like torch
    loss = nn.binary_cross_entropy(p, [0, 1])
    loss.backward()
    assert np.isclose(loss.item(), 100.0) and np.all(np.isfinite(p.grad))


# --- 1. every layer ---------------------------------------------------------------------------

def test_linear_gradient():
    layer = nn.Linear(4, 3, rng=0)
    x = Tensor(rand(5, 4))
    R = RNG.normal(size=(5, 3))
    grad_check(lambda: (layer(x) * R).sum(), [x, layer.W, layer.b])


@pytest.mark.parametrize("module", [nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax])
def test_activation_module_gradient(module):
    check_op(module(), away_from_zero(4, 3))


@pytest.mark.parametrize("activation,out_activation,loss,target", [
    ("relu", None, nn.cross_entropy, RNG.integers(0, 3, 6)),
    ("tanh", "softmax", nn.mse_loss, np.eye(3)[RNG.integers(0, 3, 6)]),
    ("sigmoid", "sigmoid", nn.binary_cross_entropy, RNG.integers(0, 2, (6, 3)).astype(float)),
    ("relu", "tanh", nn.mse_loss, rand(6, 3)),
])
def test_mlp_gradient(activation, out_activation, loss, target):
    model = nn.MLP([4, 5, 4, 3], activation, out_activation, rng=1)
    x = Tensor(rand(6, 4))
    grad_check(lambda: loss(model(x), target), [x, *model.parameters()])


def test_linear_init_matches_torch_default_bounds():
    layer = nn.Linear(400, 300, rng=0)
    bound = 1 / np.sqrt(400)  # torch.nn.Linear: kaiming_uniform_(a=sqrt(5)) -> U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert layer.W.shape == (400, 300) and layer.b.shape == (300,)
    assert np.abs(layer.W.data).max() <= bound and np.abs(layer.W.data).max() > 0.99 * bound
    assert np.isclose(layer.W.data.std(), bound / np.sqrt(3), rtol=0.01)
    assert np.array_equal(nn.Linear(400, 300, rng=0).W.data, layer.W.data)  # seeded


# --- state dict -------------------------------------------------------------------------------

def test_state_dict_round_trip_and_names():
    model = nn.MLP([4, 8, 2], "tanh", rng=0)
    sd = model.state_dict()
    assert list(sd) == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    assert sd["layers.0.weight"].shape == (8, 4)  # PyTorch layout (out, in)
    other = nn.MLP([4, 8, 2], "tanh", rng=99)
    other.load_state_dict(sd)
    x = rand(3, 4)
    assert np.array_equal(model(x).data, other(x).data)
    sd["layers.0.weight"][:] = 0  # the export is a copy
    assert not np.all(model.layers[0].W.data == 0)
    with pytest.raises(BadCheckpoint):
        other.load_state_dict({k: v for k, v in sd.items() if k != "layers.2.bias"})
    with pytest.raises(BadCheckpoint):
        nn.MLP([4, 7, 2], "tanh").load_state_dict(model.state_dict())


# --- 2. parity with PyTorch, step for step ----------------------------------------------------

def torch_twin(model):
    """The same network in PyTorch float64 (a Sequential named `layers`), loaded from model.state_dict()."""
    import torch

    class TorchMLP(torch.nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.layers = torch.nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    kinds = {nn.ReLU: torch.nn.ReLU, nn.Sigmoid: torch.nn.Sigmoid, nn.Tanh: torch.nn.Tanh}
    layers = []
    for layer in model.layers:
        if isinstance(layer, nn.Linear):
            layers.append(torch.nn.Linear(*layer.W.shape, dtype=torch.float64))
        elif isinstance(layer, nn.Softmax):
            layers.append(torch.nn.Softmax(dim=-1))
        else:
            layers.append(kinds[type(layer)]())
    twin = TorchMLP(layers)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin


def breast_cancer(test_size=0.2, seed=0):
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(Xtr)
    return scaler.transform(Xtr), scaler.transform(Xte), ytr.astype(np.float64), yte.astype(np.float64)


def _torch_loss(name):
    import torch.nn.functional as F
    return {"bce_logits": lambda z, y: F.binary_cross_entropy_with_logits(z, y.reshape(z.shape)),
            "bce": lambda p, y: F.binary_cross_entropy(p, y.reshape(p.shape)),
            "ce": lambda z, y: F.cross_entropy(z, y.long()),
            "mse": lambda z, y: F.mse_loss(z, y.reshape(z.shape))}[name]


NP_LOSSES = {"bce_logits": nn.binary_cross_entropy_with_logits, "bce": nn.binary_cross_entropy,
             "ce": nn.cross_entropy, "mse": nn.mse_loss}


@pytest.mark.parametrize("opt,loss,activation,out_activation,classes", [
    ("adam", "bce_logits", "relu", None, 1),
    ("sgd", "bce_logits", "relu", None, 1),
    ("adam", "bce", "sigmoid", "sigmoid", 1),
    ("sgd", "ce", "tanh", None, 3),
    ("adam", "mse", "tanh", None, 1),
])
def test_training_matches_pytorch_step_for_step(opt, loss, activation, out_activation, classes):
    import torch
    X, _, y, _ = breast_cancer()
    if classes == 3:  # a 3-class target from the features, for cross-entropy
        y = np.digitize(X[:, 0], np.quantile(X[:, 0], [1 / 3, 2 / 3])).astype(np.float64)
    model = nn.MLP([30, 16, 8, classes], activation, out_activation, rng=0)
    twin = torch_twin(model)
    if opt == "adam":
        ours = nn.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
        theirs = torch.optim.Adam(twin.parameters(), lr=1e-2, weight_decay=1e-4)
    else:
        ours = nn.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        theirs = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    np_loss, torch_loss = NP_LOSSES[loss], _torch_loss(loss)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    ours_hist, theirs_hist = [], []
    for _ in range(20):
        ours.zero_grad()
        value = np_loss(model(X), y)
        value.backward()
        ours.step()
        ours_hist.append(value.item())

        theirs.zero_grad()
        value = torch_loss(twin(Xt), yt)
        value.backward()
        theirs.step()
        theirs_hist.append(value.item())
    ours_hist, theirs_hist = np.array(ours_hist), np.array(theirs_hist)
    assert np.all(np.abs(ours_hist - theirs_hist) / np.abs(theirs_hist) <= 1e-6), (ours_hist, theirs_hist)
    assert ours_hist[-1] < ours_hist[0]  # and it did learn something
    for k, v in twin.state_dict().items():
        assert np.allclose(model.state_dict()[k], v.numpy(), rtol=1e-6, atol=1e-9)


# --- 3. the seed's three-layer sigmoid network learns breast cancer ---------------------------

def test_seed_network_on_breast_cancer():
    Xtr, Xte, ytr, yte = breast_cancer()
    # H1 = s(X W1 + b1), H2 = s(H1 W2 + b2), Y = s(H2 W3 + b3), binary cross-entropy (seed section 4.2/4.3)
    model = nn.MLP([30, 16, 8, 1], activation="sigmoid", out_activation="sigmoid", rng=0)
    history = nn.fit(model, Xtr, ytr, nn.binary_cross_entropy, nn.Adam(model.parameters(), lr=1e-2),
                     epochs=40, batch_size=32, rng=0)
    assert history[-1] < 0.1 < history[0]
    accuracy = (nn.predict(model, Xte) == yte).mean()
    assert accuracy >= 0.95, accuracy
    again = nn.MLP([30, 16, 8, 1], activation="sigmoid", out_activation="sigmoid", rng=0)
    nn.fit(again, Xtr, ytr, nn.binary_cross_entropy, nn.Adam(again.parameters(), lr=1e-2),
           epochs=40, batch_size=32, rng=0)
    assert np.array_equal(nn.predict_proba(again, Xte), nn.predict_proba(model, Xte))  # deterministic


def test_fit_reports_progress_and_predict_proba_shapes():
    Xtr, Xte, ytr, _ = breast_cancer()
    events = []
    model = nn.MLP([30, 8, 2], rng=0)  # logits for 2 classes
    hist = nn.fit(model, Xtr, ytr, nn.cross_entropy, nn.SGD(model.parameters(), lr=0.05, momentum=0.9),
                  epochs=3, batch_size=64, rng=0, progress=events.append)
    assert len(hist) == 3 and [e.done for e in events] == [1, 2, 3] and events[-1].finished
    assert events[-1].info["loss"] == hist[-1]
    for m in (model, nn.MLP([30, 4, 1], rng=0), nn.MLP([30, 4, 1], out_activation="sigmoid", rng=0),
              nn.MLP([30, 4, 3], out_activation="softmax", rng=0)):
        p = nn.predict_proba(m, Xte)
        assert p.shape == (len(Xte), max(2, m.sizes[-1])) and np.allclose(p.sum(axis=1), 1)
    assert nn.predict(model, Tensor(Xte)).shape == (len(Xte),)


# --- the seed's backward pass (section 4.3), taken literally, is wrong -------------------------

def seed_backward_pass(X, H1, H2, output, target, model):
    """Section 4.3 of the seed essay, copied verbatim (minus the update), returning its gradients.

        doutput = output - target
        dH2 = doutput * (1 - output) * model.W3
        dH1 = dH2 * (1 - sigmoid(H2)) * model.W2
        dW3 = np.dot(H2.T, doutput);  dW2 = np.dot(H1.T, dH2);  dW1 = np.dot(X.T, dH1)

    What is wrong with it, for Y = s(H2 W3 + b3) and L = sum of binary cross-entropies:
      * `doutput = output - target` is already dL/dZ3 (sigmoid and cross-entropy cancel), so dW3 and
        db3 are right; multiplying by (1 - output) again is a second, bogus sigmoid derivative
        (and only half of one: s'(z) = s(1 - s)).
      * `* model.W3` is elementwise; the chain rule through Z3 = H2 W3 needs the matrix product
        dL/dH2 = dZ3 @ W3.T. The elementwise form only runs when the shapes happen to broadcast
        (batch size = every layer width), and then computes something else.
      * `1 - sigmoid(H2)` applies the sigmoid a second time (H2 is already s(Z2)), and again drops
        the factor H2: the right one is dZ2 = dH2 * H2 * (1 - H2).
      * dH2 (a gradient w.r.t. the activation H2) is then used as if it were dL/dZ2 in dW2 = H1.T dH2.
    The correct pass, which puhui.nn's autograd reproduces:
        dZ3 = output - target;  dW3 = H2.T @ dZ3;  db3 = dZ3.sum(0)
        dZ2 = (dZ3 @ W3.T) * H2 * (1 - H2);  dW2 = H1.T @ dZ2;  db2 = dZ2.sum(0)
        dZ1 = (dZ2 @ W2.T) * H1 * (1 - H1);  dW1 = X.T @ dZ1;  db1 = dZ1.sum(0)
    """
    def sigmoid(z):
        return 1 / (1 + np.exp(-z))
    doutput = output - target
    dH2 = doutput * (1 - output) * model.W3
    dH1 = dH2 * (1 - sigmoid(H2)) * model.W2
    dW3 = np.dot(H2.T, doutput)
    dW2 = np.dot(H1.T, dH2)
    dW1 = np.dot(X.T, dH1)
    return dW1, dW2, dW3


class SeedModel:
    def __init__(self, d, width, rng):
        self.W1, self.W2, self.W3 = rng.normal(size=(d, width)), rng.normal(size=(width, width)), rng.normal(size=(width, width))
        self.b1, self.b2, self.b3 = rng.normal(size=width), rng.normal(size=width), rng.normal(size=width)


def seed_forward(X, m):
    def sigmoid(z):
        return 1 / (1 + np.exp(-z))
    H1 = sigmoid(X @ m.W1 + m.b1)
    H2 = sigmoid(H1 @ m.W2 + m.b2)
    return H1, H2, sigmoid(H2 @ m.W3 + m.b3)


def test_seed_backward_pass_disagrees_with_finite_differences():
    rng = np.random.default_rng(0)
    width = 4  # the seed's code only runs when batch size == hidden widths == outputs
    m = SeedModel(d=5, width=width, rng=rng)
    X, target = rng.normal(size=(width, 5)), rng.integers(0, 2, (width, width)).astype(float)

    def loss():  # sum of binary cross-entropies: the loss whose output gradient is `output - target`
        _, _, Y = seed_forward(X, m)
        return -np.sum(target * np.log(Y) + (1 - target) * np.log(1 - Y))

    def numeric(W, h=1e-6):
        g = np.zeros_like(W)
        for idx in np.ndindex(W.shape):
            old = W[idx]
            W[idx] = old + h
            up = loss()
            W[idx] = old - h
            g[idx] = (up - loss()) / (2 * h)
            W[idx] = old
        return g

    def rel(a, b):
        return np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b))

    H1, H2, Y = seed_forward(X, m)
    dW1, dW2, dW3 = seed_backward_pass(X, H1, H2, Y, target, m)
    assert rel(dW3, numeric(m.W3)) < 1e-6  # the output layer is right ...
    assert rel(dW2, numeric(m.W2)) > 0.1   # ... everything below it is wrong
    assert rel(dW1, numeric(m.W1)) > 0.1

    # the same network in puhui.nn gets every gradient right
    W1, W2, W3, b1, b2, b3 = (Tensor(a) for a in (m.W1, m.W2, m.W3, m.b1, m.b2, m.b3))
    Y_t = ((((Tensor(X) @ W1 + b1).sigmoid() @ W2 + b2).sigmoid()) @ W3 + b3).sigmoid()
    (nn.binary_cross_entropy(Y_t, target) * target.size).backward()
    for ours, W in ((W1.grad, m.W1), (W2.grad, m.W2), (W3.grad, m.W3)):
        assert rel(ours, numeric(W)) < 1e-6

    # and with any other shape, the literal code does not even run
    X8 = rng.normal(size=(8, 5))
    H1, H2, Y = seed_forward(X8, m)
    with pytest.raises(ValueError):
        seed_backward_pass(X8, H1, H2, Y, np.zeros_like(Y), m)
