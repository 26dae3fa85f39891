"""DeepFM (Guo et al., 2017), and its two baselines FM (Rendle, 2010) and Wide&Deep (Cheng et al., 2016).

Every model reads the same input: `tokens` [B, T], ids into one shared embedding table (0 is padding: a zero
vector), and `dense` [B, D], standardised numbers. `cfg.token_fields[t]` says which field token column t
belongs to; a field with several columns (multi-hot, e.g. a film's genres) is the mean of its non-padding
embeddings. A dense field x gets an embedding v of its own and contributes x * v. So every row is F field
embeddings e_1..e_F of size k, and

    first order   w0 + sum_i w_i x_i                     (a weight a token, one a dense field)
    FM            sum_{i<j} <e_i, e_j> = 0.5 * sum_k ((sum_i e_ik)^2 - sum_i e_ik^2)
    DNN           MLP(concat(e_1..e_F)) -> 1

    deepfm   = first order + FM + DNN    (the FM and the DNN share the embeddings)
    fm       = first order + FM
    widedeep = first order (the wide part, on the raw features) + DNN

The output is a logit; sigmoid gives the click (like) probability. `loss` adds L2 on the table rows the batch
used (embeddings and first-order weights; l2_embedding, scaled like the mean log loss) and on the DNN's weight
matrices (l2_dnn).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("deepfm", "fm", "widedeep")


@dataclass(frozen=True)
class DeepFMConfig:
    n_tokens: int                         # rows of the shared embedding table, padding (id 0) included
    token_fields: tuple[int, ...]         # the field of each token column, 0..n_token_fields-1
    n_dense: int = 0                      # dense fields, after the token fields
    embed_dim: int = 16
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.2
    l2_embedding: float = 1e-5
    l2_dnn: float = 0.0
    kind: str = "deepfm"                  # "deepfm" | "fm" | "widedeep"
    init_std: float = 0.01

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        tf = tuple(int(f) for f in self.token_fields)
        if tf and (tf[0] != 0 or any(b - a not in (0, 1) for a, b in zip(tf, tf[1:]))):
            raise ValueError("token_fields must number fields 0, 1, 2 ... in order, a field's columns adjacent")
        object.__setattr__(self, "token_fields", tf)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    @property
    def n_token_fields(self) -> int:
        return self.token_fields[-1] + 1 if self.token_fields else 0

    @property
    def n_fields(self) -> int:
        return self.n_token_fields + self.n_dense


class ByteDropout(nn.Module):
    """Dropout with masks drawn from random bytes, seven from each 64-bit draw (the top byte of torch's
    non-negative int64 draws is biased), instead of one Bernoulli draw an element: about 3x cheaper on a CPU,
    where nn.Dropout can cost more than the matmul beside it. p is rounded to a multiple of 1/256."""

    def __init__(self, p: float):
        super().__init__()
        self.drop = int(round(p * 256))            # a byte below this drops its element
        self.scale = 256.0 / (256 - self.drop) if self.drop < 256 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop == 0:
            return x
        n = x.numel()
        draws = torch.empty((n + 6) // 7, dtype=torch.int64, device=x.device).random_()
        bytes7 = draws.view(torch.uint8).view(-1, 8)[:, :7].reshape(-1)[:n].view(x.shape)
        return x * (bytes7 >= self.drop).to(x.dtype).mul_(self.scale)


class DeepFM(nn.Module):
    def __init__(self, cfg: DeepFMConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.embed_dim
        # one table, one lookup: columns 0..k-1 are an id's embedding, column k its first-order weight
        self.embed = nn.Embedding(cfg.n_tokens, k + 1, padding_idx=0)
        self.dense_embed = nn.Parameter(torch.empty(cfg.n_dense, k))
        self.dense_weight = nn.Parameter(torch.zeros(cfg.n_dense))
        self.bias = nn.Parameter(torch.zeros(()))
        for p in (self.embed.weight, self.dense_embed):
            nn.init.normal_(p, std=cfg.init_std)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.dnn = None
        if cfg.kind != "fm":
            layers: list[nn.Module] = []
            n_in = cfg.n_fields * k
            for h in cfg.hidden:
                layers += [nn.Linear(n_in, h), nn.ReLU(), ByteDropout(cfg.dropout)]
                n_in = h
            layers.append(nn.Linear(n_in, 1))
            self.dnn = nn.Sequential(*layers)
        # runs of token columns: (start, end, several columns a field?): single-column fields pass through as
        # one slice; a multi-hot field is the mean of its non-padding columns
        self.runs: list[tuple[int, int, bool]] = []
        tf = cfg.token_fields
        i = 0
        while i < len(tf):
            j = i + 1
            while j < len(tf) and tf[j] == tf[i]:
                j += 1
            if j - i > 1:
                self.runs.append((i, j, True))
            elif self.runs and not self.runs[-1][2] and self.runs[-1][1] == i:
                self.runs[-1] = (self.runs[-1][0], j, False)
            else:
                self.runs.append((i, j, False))
            i = j

    def _fields(self, tokens: torch.Tensor, dense: torch.Tensor):
        """(field embeddings [B, F, k], first-order logit [B], the table rows used [B, T, k + 1])."""
        k = self.cfg.embed_dim
        rows = self.embed(tokens)                      # [B, T, k + 1]
        if len(self.runs) == 1 and not self.runs[0][2]:
            pooled = rows
        else:
            parts = []
            for a, b, multi in self.runs:
                r = rows[:, a:b]
                if multi:
                    m = tokens[:, a:b].ne(0).to(rows.dtype)
                    w = m / m.sum(1, keepdim=True).clamp_min(1.0)
                    r = (r * w.unsqueeze(-1)).sum(1, keepdim=True)
                parts.append(r)
            pooled = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
        fields, first = pooled[..., :k], pooled[..., k].sum(1)
        if self.cfg.n_dense:
            fields = torch.cat((fields, dense.unsqueeze(-1) * self.dense_embed), 1)
            first = first + dense @ self.dense_weight
        return fields, first + self.bias, rows

    def _logit(self, fields: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        logit = first
        if self.cfg.kind != "widedeep":
            s = fields.sum(1)
            logit = logit + 0.5 * (s * s - (fields * fields).sum(1)).sum(1)
        if self.dnn is not None:
            logit = logit + self.dnn(fields.flatten(1)).squeeze(-1)
        return logit

    def forward(self, tokens: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits [B]."""
        fields, first, _ = self._fields(tokens, dense)
        return self._logit(fields, first)

    def loss(self, tokens: torch.Tensor, dense: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Mean binary log loss plus the L2 terms."""
        fields, first, rows = self._fields(tokens, dense)
        loss = F.binary_cross_entropy_with_logits(self._logit(fields, first), label)
        if self.cfg.l2_embedding:
            loss = loss + self.cfg.l2_embedding * rows.pow(2).sum() / len(label)
        if self.cfg.l2_dnn and self.dnn is not None:
            loss = loss + self.cfg.l2_dnn * sum(m.weight.pow(2).sum() for m in self.dnn if isinstance(m, nn.Linear))
        return loss

    @torch.no_grad()
    def predict(self, tokens: torch.Tensor, dense: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
        """Probabilities [B], in eval mode, in chunks."""
        was = self.training
        self.eval()
        try:
            return torch.cat([torch.sigmoid(self(tokens[i:i + batch_size], dense[i:i + batch_size]))
                              for i in range(0, len(tokens), batch_size)]) if len(tokens) else torch.zeros(0)
        finally:
            self.train(was)
