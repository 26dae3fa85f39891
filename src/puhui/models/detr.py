"""DETR object detector: ResNet backbone (frozen batch norm), post-norm transformer, object queries; HF loader.

Loads `DetrForObjectDetection` checkpoints whose backbone is transformers' own ResNet (`backbone_config` of
model_type resnet, e.g. facebook/detr-resnet-50 at revision "no_timm"). Pre/post-processing and the loss live
in puhui.vision.detr_processing and puhui.vision.detr_loss.

Options for training from scratch, off by default (a checkpoint's DETR is the plain one): a trainable batch norm
and stem in the backbone; the Conditional DETR decoder (Meng et al., ICCV 2021), whose cross-attention splits
each query into content and a spatial part built from a reference point, and whose boxes are offsets from that
point; and, on top of it, two-stage query selection (as Deformable DETR and RT-DETR): every encoder cell proposes
a box and a class, and the best proposals become the queries that the decoder refines.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadInput, Unsupported
from .checkpoint import build, read_config

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "swish": F.silu}
TIMM_HINT = ("DETR with a timm backbone (use_timm_backbone) is not supported: use a checkpoint with the "
             "transformers ResNet backbone, e.g. facebook/detr-resnet-50 at revision 'no_timm'")


@dataclass(frozen=True)
class DetrConfig:
    num_classes: int = 91                 # object classes; the heads add one "no object" class
    labels: tuple[str, ...] = ()          # class names by id
    num_queries: int = 100
    dim: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_heads: int = 8
    decoder_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    activation: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    # the ResNet backbone, as transformers' ResNetBackbone builds it
    num_channels: int = 3
    stem_dim: int = 64
    stage_dims: tuple[int, ...] = (256, 512, 1024, 2048)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    bottleneck: bool = True               # False: basic blocks (resnet-18/34)
    backbone_activation: str = "relu"
    downsample_in_first_stage: bool = False
    downsample_in_bottleneck: bool = False  # stride on the bottleneck's first 1x1 conv instead of its 3x3
    feature_stage: int = 4                # the stage (1-based) whose output feeds the transformer
    # the set-prediction loss (puhui.vision.detr_loss): matching costs and loss weights
    class_cost: float = 1.0
    bbox_cost: float = 5.0
    giou_cost: float = 2.0
    bbox_loss_coefficient: float = 5.0
    giou_loss_coefficient: float = 2.0
    eos_coefficient: float = 0.1          # weight of the no-object class in the cross-entropy
    # training from scratch (the defaults are DETR's, for checkpoints)
    backbone_norm: str = "frozen"         # "frozen": fixed statistics (pretrained) | "batch": trainable batch norm
    train_stem: bool = False              # train the stem and the first stage too (DETR freezes them)
    variant: str = "detr"                 # "detr" | "conditional" (Conditional DETR's decoder and box offsets)
    two_stage: bool = False               # conditional only: queries start from the encoder's best proposals

    def __post_init__(self):
        if self.backbone_norm not in ("frozen", "batch"):
            raise Unsupported(f"backbone_norm {self.backbone_norm!r}; use frozen or batch")
        if self.variant not in ("detr", "conditional"):
            raise Unsupported(f"DETR variant {self.variant!r}; use detr or conditional")
        if self.two_stage and self.variant != "conditional":
            raise Unsupported("two_stage needs the conditional variant")

    @classmethod
    def from_hf(cls, config: dict) -> "DetrConfig":
        """From a Hugging Face DETR config.json dict."""
        if config.get("model_type") != "detr":
            raise Unsupported(f"model_type {config.get('model_type')!r} is not detr")
        if config.get("position_embedding_type", "sine") != "sine":
            raise Unsupported(f"position_embedding_type {config['position_embedding_type']!r} in a DETR model")
        act = config.get("activation_function", "relu")
        if act not in ACTIVATIONS:
            raise Unsupported(f"activation_function {act!r} in a DETR model")
        bb = config.get("backbone_config")
        if bb is None:
            if config.get("use_timm_backbone", True):
                raise Unsupported(TIMM_HINT)
            bb = {"model_type": "resnet"}  # transformers' default: ResNet-50
        if bb.get("model_type") == "timm_backbone":
            raise Unsupported(TIMM_HINT)
        if bb.get("model_type") != "resnet":
            raise Unsupported(f"DETR backbone {bb.get('model_type')!r} (supported: resnet)")
        layer_type, bb_act = bb.get("layer_type", "bottleneck"), bb.get("hidden_act", "relu")
        if layer_type not in ("basic", "bottleneck") or bb_act not in ACTIVATIONS:
            raise Unsupported(f"ResNet backbone with layer_type {layer_type!r}, hidden_act {bb_act!r}")
        depths = tuple(bb.get("depths", (3, 4, 6, 3)))
        stages = ["stem"] + [f"stage{i}" for i in range(1, len(depths) + 1)]
        if bb.get("out_features"):
            feature_stage = stages.index(bb["out_features"][-1])
        else:
            feature_stage = (bb.get("out_indices") or [len(depths)])[-1] % len(stages)
        if feature_stage == 0:
            raise Unsupported("a DETR backbone whose output is the ResNet stem")
        id2label = config.get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}
        n = len(id2label)
        return cls(
            num_classes=n, labels=tuple(str(id2label.get(str(i), f"LABEL_{i}")) for i in range(n)),
            num_queries=config.get("num_queries", 100), dim=config.get("d_model", 256),
            encoder_layers=config.get("encoder_layers", 6), decoder_layers=config.get("decoder_layers", 6),
            encoder_heads=config.get("encoder_attention_heads", 8),
            decoder_heads=config.get("decoder_attention_heads", 8),
            encoder_ffn_dim=config.get("encoder_ffn_dim", 2048), decoder_ffn_dim=config.get("decoder_ffn_dim", 2048),
            activation=act, dropout=config.get("dropout", 0.1), attention_dropout=config.get("attention_dropout", 0.0),
            activation_dropout=config.get("activation_dropout", 0.0),
            num_channels=bb.get("num_channels", 3), stem_dim=bb.get("embedding_size", 64),
            stage_dims=tuple(bb.get("hidden_sizes", (256, 512, 1024, 2048))), depths=depths,
            bottleneck=layer_type == "bottleneck", backbone_activation=bb_act,
            downsample_in_first_stage=bb.get("downsample_in_first_stage", False),
            downsample_in_bottleneck=bb.get("downsample_in_bottleneck", False), feature_stage=feature_stage,
            class_cost=float(config.get("class_cost", 1)), bbox_cost=float(config.get("bbox_cost", 5)),
            giou_cost=float(config.get("giou_cost", 2)),
            bbox_loss_coefficient=float(config.get("bbox_loss_coefficient", 5)),
            giou_loss_coefficient=float(config.get("giou_loss_coefficient", 2)),
            eos_coefficient=float(config.get("eos_coefficient", 0.1)))


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (buffers, never trained), eps 1e-5."""

    def __init__(self, n: int):
        super().__init__()
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((n,), fill))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


class ConvNorm(nn.Module):
    """k x k convolution (no bias, padding k // 2) then batch norm, frozen unless norm="batch"."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, norm: str = "frozen"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.norm = nn.BatchNorm2d(cout) if norm == "batch" else FrozenBatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))

    @torch.no_grad()
    def fold(self) -> None:
        """Inference: the batch norm (frozen, or trained and in eval mode) folded into the convolution's weight
        and a bias; the norm becomes the identity. The outputs stay the same up to rounding."""
        n = self.norm
        if isinstance(n, nn.Identity):
            return
        if n.training:
            raise Unsupported("fold a batch norm in eval mode only: a training one normalises by the batch")
        eps = n.eps if isinstance(n, nn.BatchNorm2d) else 1e-5
        scale = n.weight * (n.running_var + eps).rsqrt()
        old = self.conv
        conv = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=True,
                         device=old.weight.device, dtype=old.weight.dtype)
        conv.weight.copy_(old.weight * scale[:, None, None, None])
        conv.bias.copy_(n.bias - n.running_mean * scale)
        conv.weight.requires_grad_(old.weight.requires_grad)
        conv.bias.requires_grad_(old.weight.requires_grad)
        self.conv, self.norm = conv, nn.Identity()


class ResidualBlock(nn.Module):
    """Basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 at a quarter width) block; a projected shortcut when the
    shape changes. Inner activations are ReLU, the block's output activation the backbone's (as transformers)."""

    def __init__(self, cin: int, cout: int, stride: int, c: DetrConfig):
        super().__init__()
        n = c.backbone_norm
        if c.bottleneck:
            mid = cout // 4
            s1, s2 = (stride, 1) if c.downsample_in_bottleneck else (1, stride)
            self.convs = nn.ModuleList([ConvNorm(cin, mid, 1, s1, n), ConvNorm(mid, mid, 3, s2, n),
                                        ConvNorm(mid, cout, 1, norm=n)])
        else:
            self.convs = nn.ModuleList([ConvNorm(cin, cout, 3, stride, n), ConvNorm(cout, cout, 3, norm=n)])
        self.shortcut = ConvNorm(cin, cout, 1, stride, n) if cin != cout or stride != 1 else None
        self.act = ACTIVATIONS[c.backbone_activation]

    def forward(self, x: Tensor) -> Tensor:
        h = x
        inplace = not torch.is_grad_enabled()      # inference: no copies of these large maps
        for conv in self.convs[:-1]:
            h = F.relu(conv(h), inplace=inplace)
        h = self.convs[-1](h)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        if inplace and self.act is F.relu:
            return F.relu_(h.add_(shortcut))
        return self.act(h + shortcut)


class ResNet(nn.Module):
    """7x7 stem, max-pool, stages of residual blocks; returns the feature map of stage `feature_stage`."""

    def __init__(self, c: DetrConfig):
        super().__init__()
        self.stem = ConvNorm(c.num_channels, c.stem_dim, 7, 2, c.backbone_norm)
        dims = (c.stem_dim, *c.stage_dims)
        self.stages = nn.ModuleList()
        for i, depth in enumerate(c.depths):
            stride = 2 if i > 0 or c.downsample_in_first_stage else 1
            blocks = [ResidualBlock(dims[i], dims[i + 1], stride, c)]
            blocks += [ResidualBlock(dims[i + 1], dims[i + 1], 1, c) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))
        if not c.train_stem:
            for p in [*self.stem.parameters(), *self.stages[0].parameters()]:  # DETR trains stages 2.. only
                p.requires_grad_(False)
        self.act, self.feature_stage = ACTIVATIONS[c.backbone_activation], c.feature_stage
        self.channels_last = False

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(self.act(self.stem(x)), 3, 2, 1)
        for stage in self.stages[:self.feature_stage]:
            x = stage(x)
        return x


def sine_position_embedding(mask: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """DETR's normalised 2-D sine embedding [B, 2n, h, w] of a feature mask [B, h, w] (True on the image)."""
    m = mask.to(dtype)
    y, x = m.cumsum(1), m.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * (2 * math.pi)
    x = x / (x[:, :, -1:] + 1e-6) * (2 * math.pi)
    dim_t = torch.arange(n, device=mask.device).to(dtype)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / n)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def point_sine_embedding(points: Tensor, n: int) -> Tensor:
    """Conditional DETR's sine embedding [..., 2n] of points [..., 2] (x, y in 0..1): y's n channels, then x's."""
    dim_t = torch.arange(n, device=points.device).to(points.dtype)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / n)
    out = []
    for coord in (points[..., 1], points[..., 0]):
        p = coord[..., None] * (2 * math.pi) / dim_t
        out.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(out, dim=-1)


def mlp(*dims: int) -> nn.Sequential:
    """Linear layers with ReLU between them."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1])] + ([nn.ReLU()] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers)


def heads(x: Tensor, n_heads: int) -> Tensor:
    """[B, T, D] -> [B, n_heads, T, D / n_heads]."""
    return x.view(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention; the caller adds positions to queries and keys, never to values."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        B, T, D = q.shape
        q = self.q_proj(q).view(B, T, self.n_heads, -1).transpose(1, 2)
        k = self.k_proj(k).view(B, k.shape[1], self.n_heads, -1).transpose(1, 2)
        v = self.v_proj(v).view(B, v.shape[1], self.n_heads, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class EncoderLayer(nn.Module):
    """Post-norm: x = LN(x + SelfAttn(x + pos, x + pos, x)); x = LN(x + FFN(x))."""

    def __init__(self, c: DetrConfig, n_heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = Attention(c.dim, n_heads, c.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(c.dim)
        self.fc1, self.fc2 = nn.Linear(c.dim, ffn_dim), nn.Linear(ffn_dim, c.dim)
        self.final_layer_norm = nn.LayerNorm(c.dim)
        self.act, self.p, self.p_act = ACTIVATIONS[c.activation], c.dropout, c.activation_dropout

    def drop(self, x: Tensor, p: float | None = None) -> Tensor:
        return F.dropout(x, self.p if p is None else p, self.training)

    def ffn(self, x: Tensor) -> Tensor:
        return self.final_layer_norm(x + self.drop(self.fc2(self.drop(self.act(self.fc1(x)), self.p_act))))

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        qk = x + pos
        return self.ffn(self.self_attn_layer_norm(x + self.drop(self.self_attn(qk, qk, x, mask))))


class DecoderLayer(EncoderLayer):
    """Self-attention among the queries, cross-attention to the encoder memory, FFN; each post-norm."""

    def __init__(self, c: DetrConfig):
        super().__init__(c, c.decoder_heads, c.decoder_ffn_dim)
        self.encoder_attn = Attention(c.dim, c.decoder_heads, c.attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(c.dim)

    def forward(self, h: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        q = h + query_pos
        h = self.self_attn_layer_norm(h + self.drop(self.self_attn(q, q, h)))
        h = self.encoder_attn_layer_norm(h + self.drop(self.encoder_attn(h + query_pos, memory + pos, memory, mask)))
        return self.ffn(h)


class ConditionalDecoderLayer(EncoderLayer):
    """Conditional DETR's decoder layer (post-norm). Self-attention projects content and query positions apart and
    adds them. Cross-attention concatenates, per head, a content part and a spatial part: the query's spatial part
    is the sine embedding of its reference point (scaled by the caller), the key's the encoder position; the first
    layer also adds the positions to the content parts, as DETR does."""

    def __init__(self, c: DetrConfig, first: bool):
        super().__init__(c, c.decoder_heads, c.decoder_ffn_dim)
        d = c.dim
        self.sa_qpos, self.sa_kpos = nn.Linear(d, d), nn.Linear(d, d)
        self.ca_q, self.ca_k, self.ca_v, self.ca_kpos, self.ca_qsine, self.ca_out = (nn.Linear(d, d) for _ in range(6))
        self.ca_qpos = nn.Linear(d, d) if first else None
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.n_heads = c.decoder_heads

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        p = self.self_attn.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return y.transpose(1, 2).flatten(2)

    def forward(self, h: Tensor, query_pos: Tensor, query_sine: Tensor, memory: Tensor, pos: Tensor,
                mask: Tensor) -> Tensor:
        sa, H = self.self_attn, self.n_heads
        q, k = sa.q_proj(h) + self.sa_qpos(query_pos), sa.k_proj(h) + self.sa_kpos(query_pos)
        h = self.self_attn_layer_norm(h + self.drop(sa.out_proj(self.attend(heads(q, H), heads(k, H),
                                                                            heads(sa.v_proj(h), H)))))
        q, k, k_pos = self.ca_q(h), self.ca_k(memory), self.ca_kpos(pos)
        if self.ca_qpos is not None:
            q, k = q + self.ca_qpos(query_pos), k + k_pos
        q = torch.cat((heads(q, H), heads(self.ca_qsine(query_sine), H)), dim=-1)
        k = torch.cat((heads(k, H), heads(k_pos, H)), dim=-1)
        y = self.ca_out(self.attend(q, k, heads(self.ca_v(memory), H), mask))
        return self.ffn(self.encoder_attn_layer_norm(h + self.drop(y)))


class Detr(nn.Module):
    def __init__(self, config: DetrConfig):
        super().__init__()
        c = self.config = config
        self.backbone = ResNet(c)
        self.input_proj = nn.Conv2d(c.stage_dims[c.feature_stage - 1], c.dim, 1)
        if not c.two_stage:
            self.query_pos = nn.Embedding(c.num_queries, c.dim)
        self.encoder = nn.ModuleList(EncoderLayer(c, c.encoder_heads, c.encoder_ffn_dim)
                                     for _ in range(c.encoder_layers))
        if c.variant == "conditional":
            self.decoder = nn.ModuleList(ConditionalDecoderLayer(c, i == 0) for i in range(c.decoder_layers))
            self.query_scale = mlp(c.dim, c.dim, c.dim)  # content -> scale of the spatial query, layers 2..
            if c.two_stage:   # proposals from the encoder cells; their sine embedding -> query position
                self.enc_output, self.enc_output_norm = nn.Linear(c.dim, c.dim), nn.LayerNorm(c.dim)
                self.enc_class_head = nn.Linear(c.dim, c.num_classes + 1)
                self.enc_box_head = mlp(c.dim, c.dim, c.dim, 4)
                self.query_pos_head = mlp(c.dim, c.dim, c.dim)
            else:
                self.ref_point_head = mlp(c.dim, c.dim, 2)   # query position -> reference point (x, y)
        else:
            self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_layers))
        self.decoder_norm = nn.LayerNorm(c.dim)
        self.class_head = nn.Linear(c.dim, c.num_classes + 1)
        self.box_head = nn.ModuleList(nn.Linear(c.dim, n) for n in (c.dim, c.dim, 4))

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None, aux: bool = False,
                dense: bool = False):
        """Class logits [B, Q, C+1] (the last is "no object") and boxes [B, Q, 4] (cx, cy, w, h, in 0..1 of the
        unpadded image) for pixel_values [B, 3, H, W]; pixel_mask [B, H, W] is 1 on the image, 0 on padding.
        aux=True: one per decoder layer, stacked [L, B, Q, ...], the last being the final output (for the loss);
        with two_stage the selected encoder proposals come first, [L + 1, B, Q, ...].
        dense=True (two_stage): a third item, every encoder cell's proposal {"logits" [B, HW, C+1], "boxes"
        [B, HW, 4], "centres" [HW, 2] (x, y of the cell's centre), "mask" [B, HW] (True on the image)}."""
        if dense and not self.config.two_stage:
            raise Unsupported("dense proposals need a two-stage model")
        B, _, H, W = pixel_values.shape
        if pixel_mask is None:
            pixel_mask = torch.ones(B, H, W, device=pixel_values.device)
        features = self.backbone(pixel_values)
        mask = F.interpolate(pixel_mask[:, None].float(), size=features.shape[-2:])[:, 0].bool()
        pos = sine_position_embedding(mask, self.config.dim // 2, pixel_values.dtype).flatten(2).transpose(1, 2)
        keys = mask.flatten(1)[:, None, None, :]  # [B, 1, 1, hw]: attend to image cells, never to padding
        x = F.dropout(self.input_proj(features).flatten(2).transpose(1, 2), self.config.dropout, self.training)
        for layer in self.encoder:
            x = layer(x, pos, keys)
        if self.config.variant == "detr":
            return self._detr_decode(x, pos, keys, aux)
        return self._conditional_decode(x, pos, keys, mask, aux, dense)

    def _heads(self, states: Tensor) -> tuple[Tensor, Tensor]:
        out = self.decoder_norm(states)
        box = out
        for i, linear in enumerate(self.box_head):
            box = linear(box) if i == len(self.box_head) - 1 else F.relu(linear(box))
        return self.class_head(out), box

    def _detr_decode(self, x: Tensor, pos: Tensor, keys: Tensor, aux: bool) -> tuple[Tensor, Tensor]:
        query_pos = self.query_pos.weight.expand(x.shape[0], -1, -1)
        h, states = torch.zeros_like(query_pos), []
        for layer in self.decoder:
            h = layer(h, query_pos, x, pos, keys)
            if aux:
                states.append(h)
        logits, box = self._heads(torch.stack(states) if aux else h)
        return logits, box.sigmoid()

    def _proposals(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Two-stage: every encoder cell proposes a class and a box, an offset from a 2 x 2-cell anchor at the
        cell: {"logits", "box_logits", "memory" (the cells' features), "centres", "mask"}."""
        h, w = mask.shape[-2:]
        memory = self.enc_output_norm(self.enc_output(x))
        ys, xs = torch.meshgrid((torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) / h,
                                (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) / w, indexing="ij")
        anchors = torch.stack((xs, ys, torch.full_like(xs, 2 / w), torch.full_like(ys, 2 / h)), -1).view(1, -1, 4)
        return {"logits": self.enc_class_head(memory), "memory": memory, "centres": anchors[0, :, :2],
                "box_logits": self.enc_box_head(memory) + torch.logit(anchors, eps=1e-5), "mask": mask.flatten(1)}

    def _select(self, p: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The num_queries proposals whose best real class scores highest: (logits, box logits, features)."""
        n, q = p["mask"].shape[1], self.config.num_queries
        if n < q:
            raise BadInput(f"the image gives {n} feature cells, fewer than the model's {q} queries")
        score = p["logits"][..., :-1].max(-1).values.masked_fill(~p["mask"], float("-inf"))
        top = score.topk(q, dim=1).indices[..., None]
        return tuple(p[k].gather(1, top.expand(-1, -1, p[k].shape[-1])) for k in ("logits", "box_logits", "memory"))

    def _conditional_decode(self, x: Tensor, pos: Tensor, keys: Tensor, mask: Tensor, aux: bool, dense: bool):
        B, d = x.shape[0], self.config.dim
        if self.config.two_stage:
            proposals = self._proposals(x, mask)
            enc_logits, enc_box, content = self._select(proposals)
            ref = enc_box.detach()                              # box logits; the decoder refines all four
            sine = point_sine_embedding(ref[..., :2].sigmoid(), d // 2)
            query_pos, h = self.query_pos_head(sine), content.detach()
        else:
            query_pos = self.query_pos.weight.expand(B, -1, -1)
            ref = torch.logit(self.ref_point_head(query_pos).sigmoid(), eps=1e-5)   # centre only
            sine = point_sine_embedding(ref.sigmoid(), d // 2)
            h = torch.zeros_like(query_pos)
        states = []
        for i, layer in enumerate(self.decoder):
            h = layer(h, query_pos, sine if i == 0 else sine * self.query_scale(h), x, pos, keys)
            if aux:
                states.append(h)
        logits, box = self._heads(torch.stack(states) if aux else h)
        box = torch.cat((box[..., :ref.shape[-1]] + ref, box[..., ref.shape[-1]:]), dim=-1).sigmoid()
        if aux and self.config.two_stage:
            logits, box = torch.cat((enc_logits[None], logits)), torch.cat((enc_box.sigmoid()[None], box))
        if dense:
            return logits, box, {"logits": proposals["logits"], "boxes": proposals["box_logits"].sigmoid(),
                                 "centres": proposals["centres"], "mask": proposals["mask"]}
        return logits, box


_BACKBONE = r"^model\.backbone\.(?:conv_encoder\.)?model\."
_HF_RENAMES = [(re.compile(p), r) for p, r in [
    (_BACKBONE + r"embedder\.embedder\.", "backbone.stem."),
    (_BACKBONE + r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.", r"backbone.stages.\1.\2.convs.\3."),
    (_BACKBONE + r"encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.", r"backbone.stages.\1.\2.shortcut."),
    (r"^(backbone\..+)\.convolution\.weight$", r"\1.conv.weight"),
    (r"^(backbone\..+)\.normalization\.", r"\1.norm."),
    (r"^model\.(encoder|decoder)\.layers\.", r"\1."),
    (r"\.o_proj\.", ".out_proj."),   # transformers 5's in-memory names, should a checkpoint carry them
    (r"\.mlp\.(fc[12])\.", r".\1."),
    (r"^model\.decoder\.layernorm\.", "decoder_norm."),
    (r"^model\.input_projection\.", "input_proj."),
    (r"^model\.query_position_embeddings\.", "query_pos."),
    (r"^class_labels_classifier\.", "class_head."),
    (r"^bbox_predictor\.layers\.", "box_head."),
]]


def prepare_for_inference(model: Detr) -> Detr:
    """The model, in place, made faster for inference on a CPU: eval mode, every batch norm folded into its
    convolution (ConvNorm.fold), and the backbone in channels-last layout (oneDNN's fast convolutions: no
    reordering of each feature map). Outputs equal the unprepared model's up to float rounding. Do not train it
    afterwards: the folded statistics would train as weights."""
    model.eval()
    for m in model.backbone.modules():
        if isinstance(m, ConvNorm):
            m.fold()
    model.backbone.to(memory_format=torch.channels_last)
    model.backbone.channels_last = True
    return model


def from_hf_state_dict(state_dict: dict) -> dict:
    """Rename a Hugging Face DetrForObjectDetection state dict to ours (batch-norm step counters dropped)."""
    out = {}
    for name, t in state_dict.items():
        if name.endswith(".num_batches_tracked"):
            continue
        for pattern, repl in _HF_RENAMES:
            name = pattern.sub(repl, name)
        out[name] = t
    return out


def load_detr(path: str | Path, dtype: torch.dtype | None = None,
              device: torch.device | str = "cpu") -> tuple[Detr, DetrConfig]:
    """A DETR detector from a Hugging Face folder (config.json + safetensors)."""
    from ..formats.safetensors import load_state_dict

    config = DetrConfig.from_hf(read_config(path))
    return build(Detr, config, from_hf_state_dict(load_state_dict(path)), dtype, device, where=str(path)), config
