"""SAM 2's prompt encoder and mask decoder.

They are SAM v1's with three changes that matter for images: box corners travel as points
labelled 2 and 3 (so a box prompt also gets the padding token), the decoder adds the
encoder's stride-4 and stride-8 features while upscaling, and its IoU head ends in a
sigmoid. The two-way transformer is v1's, with its MLP under SAM 2's parameter names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sam_model.common.layers import MLP, LayerNorm2d, transposed_conv_matrix
from sam_model.sam1.mask_decoder import CPU_PROMPT_CHUNK, iou_above
from sam_model.sam1.transformer import ImageContext, TwoWayTransformer

# Tokens before the mask tokens: the object-score token (video only, but it takes part in
# attention), then the IoU token.
_IOU_TOKEN = 1
_FIRST_MASK_TOKEN = 2
# Image tokens per chunk while upscaling: keeps each chunk's intermediates in cache.
_UPSCALE_CHUNK = 1024


def two_way_transformer(dim: int = 256) -> TwoWayTransformer:
    """v1's transformer (2 blocks, 8 heads, MLP 2048) with SAM 2's `mlp.layers.N` naming."""
    transformer = TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048)
    for layer in transformer.layers:
        layer.mlp = MLP(dim, 2048, dim, 2)
    return transformer


@dataclass(frozen=True)
class DecoderContext:
    """One image's prompt-independent decoder inputs (batch 1); read-only."""

    transformer: ImageContext
    s1_rows: torch.Tensor  # (T*4, C/4) stride-8 features, rows (token, dy, dx)
    s0_rows: torch.Tensor  # (T*16, C/8) stride-4 features, rows (token, dy, dx, ey, ex)


class MaskDecoder(nn.Module):
    """Transformer over [object-score, IoU, 4 mask] tokens + prompts, then hypernetworks applied
    to the upscaled image tokens (with the high-resolution features added in)."""

    def __init__(self, dim: int = 256, stability_delta: float = 0.05, stability_thresh: float = 0.98) -> None:
        super().__init__()
        self.transformer = two_way_transformer(dim)
        self.num_mask_tokens = 4
        self.obj_score_token = nn.Embedding(1, dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, 256, self.num_mask_tokens, 3)
        # `build_sam2`'s default post-processing: a single mask falls back to the best
        # multimask candidate when its logits are unstable around 0.
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def prepare(
        self,
        image_embed: torch.Tensor,
        s1: torch.Tensor,
        s0: torch.Tensor,
        image_pe: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> DecoderContext:
        """image_embed (1, C, h, w), s1 (1, C/4, 2h, 2w), s0 (1, C/8, 4h, 4w) after conv_s1/conv_s0."""
        c1, c0 = s1.shape[1], s0.shape[1]
        h, w = image_embed.shape[-2:]
        s1_rows = s1[0].view(c1, h, 2, w, 2).permute(1, 3, 2, 4, 0).reshape(-1, c1)
        s0_rows = s0[0].view(c0, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0).reshape(-1, c0)
        context = self.transformer.prepare(image_embed + dense_prompt_embeddings, image_pe)
        return DecoderContext(context, s1_rows.contiguous(), s0_rows.contiguous())

    def forward(
        self, context: DecoderContext, sparse_prompt_embeddings: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, 4h, 4w) logits and (B, K) IoU: K = 3 candidates, or 1 (dynamic single mask)."""
        hs, keys = self.transformer.forward_prepared(context.transformer, self._tokens(sparse_prompt_embeddings))
        iou = self.iou_prediction_head(hs[:, _IOU_TOKEN]).sigmoid()
        logits = self._mask_logits(hs, keys, context)
        if multimask_output:
            return logits[:, 1:], iou[:, 1:]
        return self._dynamic_single(logits, iou)

    def forward_above(
        self, context: DecoderContext, sparse_prompt_embeddings: torch.Tensor, min_iou: float | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Multimask `forward` for AMG that upscales only the candidates whose predicted IoU is
        above `min_iou` (the IoU head needs the transformer alone; AMG drops the rest unseen).

        On CPU it runs a few prompts at a time, as v1's decoder does: each prompt carries its
        own 4 MiB of image tokens, and a handful stay in cache.

        Returns (iou (B, 3), kept (B, 3) bool, logits (kept.sum(), 4h, 4w) in row-major order).
        """
        n = sparse_prompt_embeddings.shape[0]
        chunk = CPU_PROMPT_CHUNK if context.transformer.keys.device.type == "cpu" else max(n, 1)
        parts = [
            self._above(context, sparse_prompt_embeddings[start : start + chunk], min_iou)
            for start in range(0, max(n, 1), chunk)
        ]
        ious, kept, logits = zip(*parts, strict=True)
        return torch.cat(ious), torch.cat(kept), torch.cat(logits)

    def _above(
        self, context: DecoderContext, sparse_prompt_embeddings: torch.Tensor, min_iou: float | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward_above` of one chunk of prompts."""
        hs, keys = self.transformer.forward_prepared(context.transformer, self._tokens(sparse_prompt_embeddings))
        iou = self.iou_prediction_head(hs[:, _IOU_TOKEN]).sigmoid()[:, 1:]
        kept = iou_above(iou, min_iou)
        rows = kept.any(dim=1)
        if bool(rows.all()):
            logits = self._mask_logits(hs, keys, context)[:, 1:][kept]
        elif bool(rows.any()):
            logits = self._mask_logits(hs[rows], keys[rows], context)[:, 1:][kept[rows]]
        else:
            side = 4 * round(keys.shape[1] ** 0.5)
            logits = keys.new_zeros(0, side, side)
        return iou, kept, logits

    def _tokens(self, sparse_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        n = sparse_prompt_embeddings.shape[0]
        output = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        return torch.cat([output.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings], dim=1)

    def _dynamic_single(self, logits: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token 0's mask if its stability (area above +delta / area above -delta) reaches the
        threshold, else the multimask candidate with the highest predicted IoU."""
        single = logits[:, 0].flatten(1)
        inner = (single > self.stability_delta).sum(-1).float()
        outer = (single > -self.stability_delta).sum(-1).float()
        stable = torch.where(outer > 0, inner / outer, 1.0) >= self.stability_thresh
        pick = torch.where(stable, 0, torch.argmax(iou[:, 1:], dim=-1) + 1)
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, pick].unsqueeze(1), iou[rows, pick].unsqueeze(1)

    def _mask_logits(self, hs: torch.Tensor, keys: torch.Tensor, context: DecoderContext) -> torch.Tensor:
        """All four mask tokens' logits (B, 4, 4h, 4w).

        Both transposed convs (kernel 2, stride 2) are per-pixel matmuls, so the upscaling
        runs channels-last a chunk of image tokens at a time, each token's 2x2 and then 4x4
        pixel block in (dy, dx, ey, ex) order, with the matching high-res rows added in.
        """
        b, t, c = keys.shape
        side = round(t**0.5)
        tokens = hs[:, _FIRST_MASK_TOKEN : _FIRST_MASK_TOKEN + self.num_mask_tokens]
        hyper = torch.stack([mlp(tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=2)
        conv1, norm, _, conv2, _ = self.output_upscaling
        w1, b1 = transposed_conv_matrix(conv1)
        w2, b2 = transposed_conv_matrix(conv2)
        c1, c2 = conv1.weight.shape[1], conv2.weight.shape[1]
        parts = []
        for start in range(0, t, _UPSCALE_CHUNK):
            n = min(_UPSCALE_CHUNK, t - start)
            x = torch.addmm(b1, keys[:, start : start + n].reshape(-1, c), w1).view(b, n * 4, c1)
            x = x + context.s1_rows[start * 4 : (start + n) * 4]
            x = F.gelu(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
            x = torch.addmm(b2, x.reshape(-1, c1), w2).view(b, n * 16, c2)
            x = F.gelu(x + context.s0_rows[start * 16 : (start + n) * 16])
            parts.append(x @ hyper)
        logits = torch.cat(parts, dim=1)  # (B, 16*T, 4)
        masks = logits.view(b, side, side, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, -1, 4 * side, 4 * side)
