"""HQ-SAM's mask decoder: SAM's decoder plus an HQ output token whose mask reads fused features.

The HQ token rides through SAM's two-way transformer beside SAM's tokens. Its mask is its
hypernetwork vector applied to "HQ features": the image embedding and the encoder's early
features, each upscaled to 256x256 (prompt-independent, so computed once per image here;
the reference recomputes them on every click), plus a small conv net over SAM's own
upscaled mask features. The result is the selected SAM mask plus the HQ mask (or the HQ
mask alone with `hq_token_only`), one mask per prompt either way.

Everything after the transformer runs channels-last, and the last conv of the feature net
(64 -> 32 channels, 3x3) is folded into the HQ token's vector: a 64 -> 1 conv, 32x fewer
operations for the same logits up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sam_model.common.layers import MLP, LayerNorm2d, transposed_conv_matrix
from sam_model.sam1.mask_decoder import MaskDecoder, iou_above
from sam_model.sam1.transformer import ImageContext


@dataclass(frozen=True)
class HqContext:
    """One image's prompt-independent decoder work (batch 1); read-only."""

    image: ImageContext  # the transformer's first-block work, for the "no mask" dense prompt
    hq_features: torch.Tensor  # (1, 4h, 4w, C/8) channels-last: upscaled embedding + early features


def _upscale(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a stack of kernel-2 stride-2 transposed convs, LayerNorm2d and GELU on channels-last
    (B, h, w, C) -> (B, 2^k h, 2^k w, C') for k transposed convs.

    Each transposed conv is one matmul per pixel; rows stay in block order (pixel, dy, dx, ...)
    until a single rearrangement at the end.
    """
    b, h, w, _ = x.shape
    rows = x.reshape(-1, x.shape[-1])
    doublings = 0
    for layer in seq:
        if isinstance(layer, nn.ConvTranspose2d):
            weight, bias = transposed_conv_matrix(layer)
            rows = torch.addmm(bias, rows, weight).view(-1, layer.out_channels)
            doublings += 1
        elif isinstance(layer, LayerNorm2d):
            rows = F.layer_norm(rows, (rows.shape[-1],), layer.weight, layer.bias, layer.eps)
        elif isinstance(layer, nn.GELU):
            rows = F.gelu(rows)
        else:
            raise TypeError(f"cannot run {type(layer).__name__} channels-last")
    c = rows.shape[-1]
    # Row (i, j, dy1, dx1, dy2, dx2, ...) is pixel (2^k i + ... + dy_k, 2^k j + ... + dx_k).
    blocks = rows.view(b, h, w, *([2, 2] * doublings), c)
    dys = [3 + 2 * k for k in range(doublings)]
    order = [0, 1, *dys, 2, *(d + 1 for d in dys), blocks.dim() - 1]
    scale = 2**doublings
    return blocks.permute(order).reshape(b, h * scale, w * scale, c)


def _conv3x3_to_one(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) channels-last through a per-prompt 3x3 conv to one channel, padding 1:
    weight (B, C, 3, 3) -> (B, H, W). One matmul gives the nine taps of every pixel; the
    shifted taps are then summed."""
    b, h, w, c = x.shape
    taps = torch.bmm(x.reshape(b, h * w, c), weight.reshape(b, c, 9)).view(b, h, w, 9)
    taps = F.pad(taps.permute(0, 3, 1, 2), (1, 1, 1, 1))  # (B, 9, H + 2, W + 2)
    out = taps[:, 0, :h, :w].clone()
    for k in range(1, 9):
        dy, dx = divmod(k, 3)
        out += taps[:, k, dy : dy + h, dx : dx + w]
    return out


class MaskDecoderHQ(MaskDecoder):
    """`MaskDecoder` with HQ-SAM's parameters under their official names (`hf_token`, `hf_mlp`,
    `compress_vit_feat`, `embedding_encoder`, `embedding_maskfeature`).

    HQ decoding is `prepare` + `forward_prepared` (or `forward_prepared_above`), or `forward`
    with the per-image HQ features; `predict_masks`, inherited from `MaskDecoder`, carries the
    HQ token through the transformer but returns SAM's masks alone.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        vit_dim: int,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        d = transformer_dim
        self.hf_token = nn.Embedding(1, d)
        self.hf_mlp = MLP(d, d, d // 8, 3)
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, d, kernel_size=2, stride=2),
            LayerNorm2d(d),
            nn.GELU(),
            nn.ConvTranspose2d(d, d // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(d // 8, d // 4, 3, 1, 1),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.Conv2d(d // 4, d // 8, 3, 1, 1),
        )

    def _tokens(self, sparse_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        """IoU token, SAM's mask tokens, the HQ token, then the prompt tokens."""
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        return torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings], dim=1)

    def hq_features(self, image_embeddings: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """Embedding (1, 256, h, w) and early features (1, C, h, w) -> (1, 4h, 4w, 32) channels-last."""
        embedding = _upscale(self.embedding_encoder, image_embeddings.permute(0, 2, 3, 1))
        return embedding + _upscale(self.compress_vit_feat, early.permute(0, 2, 3, 1))

    def prepare(
        self,
        image_embeddings: torch.Tensor,
        early: torch.Tensor,
        image_pe: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> HqContext:
        """Work shared by every prompt on one image (batch 1) with one dense prompt embedding."""
        return HqContext(
            self.transformer.prepare(image_embeddings + dense_prompt_embeddings, image_pe),
            self.hq_features(image_embeddings, early),
        )

    def forward_prepared(
        self,
        context: HqContext,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        hq_token_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 4h, 4w) logits and (B, 1) IoU on the image `context` was prepared from."""
        parts = [
            self._hq_heads(hs, keys, context.hq_features, multimask_output, hq_token_only)
            for hs, keys in self._prepared_chunks(context.image, sparse_prompt_embeddings)
        ]
        return torch.cat([m for m, _ in parts]), torch.cat([i for _, i in parts])

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        hq_token_only: bool,
        hq_features: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like the reference's forward with `hq_features` precomputed: (B, 1, 4h, 4w) logits, (B, 1) IoU.

        `multimask_output` picks SAM's best of its three candidates (by predicted IoU), else
        its single-mask token; the HQ mask is added to it unless `hq_token_only`.
        """
        tokens = self._tokens(sparse_prompt_embeddings)
        hs, keys = self.transformer(image_embeddings + dense_prompt_embeddings, image_pe, tokens)
        return self._hq_heads(hs, keys, hq_features, multimask_output, hq_token_only)

    def forward_prepared_above(
        self,
        context: HqContext,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        min_iou: float | None,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward_prepared` that computes only the logits of masks whose predicted IoU is above
        `min_iou` (automatic mask generation discards the rest unseen): the IoU needs the
        transformer alone, the logits the per-prompt upscaling and feature convs (most of the work).

        Returns (iou (B, 1), kept (B, 1) bool, logits (kept.sum(), 4h, 4w)).
        """
        ious, kept, logits = [], [], []
        for hs, keys in self._prepared_chunks(context.image, sparse_prompt_embeddings):
            score, index = self._select(hs, multimask_output)
            keep = iou_above(score, min_iou)
            if bool(keep.any()):
                logits.append(self._hq_logits(hs[keep], keys[keep], index[keep], context.hq_features, hq_token_only))
            ious.append(score[:, None])
            kept.append(keep[:, None])
        if not logits:
            logits.append(context.hq_features.new_zeros(0, *context.hq_features.shape[1:3]))
        return torch.cat(ious), torch.cat(kept), torch.cat(logits)

    def _hq_heads(
        self,
        hs: torch.Tensor,
        keys: torch.Tensor,
        hq_features: torch.Tensor,
        multimask_output: bool,
        hq_token_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs -> one mask's logits (B, 1, 4h, 4w) and its IoU (B, 1)."""
        score, index = self._select(hs, multimask_output)
        return self._hq_logits(hs, keys, index, hq_features, hq_token_only)[:, None], score[:, None]

    def _select(self, hs: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The SAM mask token each prompt's HQ mask refines, and its predicted IoU: (B,), (B,).

        With `multimask_output` the best of the three candidates (first on ties, as torch.max),
        else the single-mask token 0.
        """
        iou = self.iou_prediction_head(hs[:, 0])
        if multimask_output:
            score, index = torch.max(iou[:, 1 : self.num_mask_tokens], dim=1)
            return score, index + 1
        return iou[:, 0], torch.zeros(hs.shape[0], dtype=torch.long, device=hs.device)

    def _hq_logits(
        self,
        hs: torch.Tensor,
        keys: torch.Tensor,
        index: torch.Tensor,
        hq_features: torch.Tensor,
        hq_token_only: bool,
    ) -> torch.Tensor:
        """(B, 4h, 4w) logits: the HQ mask, plus SAM's mask of token `index` unless `hq_token_only`."""
        b, t = hs.shape[0], keys.shape[1]
        side = int(round(t**0.5))
        hf = self.hf_mlp(hs[:, 1 + self.num_mask_tokens])  # (B, C/8)
        upscaled = _upscale(self.output_upscaling, keys.reshape(b, side, side, -1))  # (B, 4h, 4w, C/8)
        conv1, norm, _, conv2 = self.embedding_maskfeature
        hidden = F.conv2d(upscaled.permute(0, 3, 1, 2), conv1.weight, conv1.bias, padding=1)
        hidden = F.gelu(F.layer_norm(hidden.permute(0, 2, 3, 1), (hidden.shape[1],), norm.weight, norm.bias, norm.eps))
        # hf . (conv2(hidden) + hq_features): conv2 folded into hf as a 3x3 conv to one channel.
        folded = torch.einsum("bo,ocyx->bcyx", hf, conv2.weight)
        logits = _conv3x3_to_one(hidden, folded) + (hf @ conv2.bias)[:, None, None]
        c = hf.shape[1]
        # One image's features against every prompt's vector: one GEMM, no per-prompt copy.
        logits += (hq_features.reshape(-1, c) @ hf.T).T.view_as(logits)
        if not hq_token_only:
            hyper = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
            chosen = hyper[torch.arange(b, device=hyper.device), index]  # (B, C/8)
            logits += torch.bmm(upscaled.reshape(b, -1, c), chosen[:, :, None]).view_as(logits)
        return logits
