"""SAM's mask decoder: image + prompt embeddings -> low-res mask logits and IoU estimates."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sam_model.common.layers import MLP, LayerNorm2d, transposed_conv_matrix
from sam_model.sam1.transformer import ImageContext

# Prompts per transformer call on CPU (see MaskDecoder._prepared_chunks).
CPU_PROMPT_CHUNK = 4


def iou_above(iou: torch.Tensor, min_iou: float | None) -> torch.Tensor:
    """Which predicted IoUs pass an AMG-style filter: all when `min_iou` is None (NaN included)."""
    return torch.ones_like(iou, dtype=torch.bool) if min_iou is None else iou > min_iou


class MaskDecoder(nn.Module):
    """Output tokens (IoU + one per mask) run through the two-way transformer with the prompts;
    each mask token's hypernetwork MLP gives weights applied to the upscaled image features."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def _outputs(self, multimask_output: bool) -> slice:
        # Token 0 is the single-mask output; tokens 1.. are the ambiguity-aware candidates.
        return slice(1, self.num_mask_tokens) if multimask_output else slice(0, 1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (B, K, 256, 256) logits and (B, K) IoU; K = 3 (multimask) or 1 (single mask)."""
        return self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            self._outputs(multimask_output),
        )

    def prepare(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> ImageContext:
        """Work shared by every prompt on one image (batch 1) with one dense prompt embedding."""
        return self.transformer.prepare(image_embeddings + dense_prompt_embeddings, image_pe)

    def forward_prepared(
        self, context: ImageContext, sparse_prompt_embeddings: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` on the image (and dense prompt) that `context` was prepared from."""
        outputs = self._outputs(multimask_output)
        parts = [
            self._heads(hs, keys, outputs) for hs, keys in self._prepared_chunks(context, sparse_prompt_embeddings)
        ]
        return torch.cat([m for m, _ in parts]), torch.cat([i for _, i in parts])

    def forward_prepared_above(
        self,
        context: ImageContext,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        min_iou: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward_prepared` that computes only the logits of masks whose predicted IoU is
        above `min_iou` (AMG discards the rest unseen): the IoU head needs the transformer
        alone, while the logits need the upscaling network per prompt (~40% of the work).

        Returns (iou (B, K), kept (B, K) bool, logits (kept.sum(), 256, 256) in row-major order).
        """
        outputs = self._outputs(multimask_output)
        ious, kept, logits = [], [], []
        for hs, keys in self._prepared_chunks(context, sparse_prompt_embeddings):
            iou = self._iou(hs, outputs)
            keep = iou_above(iou, min_iou)
            rows = keep.any(dim=1)
            if bool(rows.all()):
                logits.append(self._mask_logits(hs, keys, outputs)[keep])
            elif bool(rows.any()):
                logits.append(self._mask_logits(hs[rows], keys[rows], outputs)[keep[rows]])
            ious.append(iou)
            kept.append(keep)
        if not logits:
            side = 4 * round(context.keys.shape[1] ** 0.5)
            logits.append(context.keys.new_zeros(0, side, side))
        return torch.cat(ious), torch.cat(kept), torch.cat(logits)

    def _prepared_chunks(
        self, context: ImageContext, sparse_prompt_embeddings: torch.Tensor
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Transformer outputs (tokens, image tokens) for a few prompts at a time.

        Every prompt carries its own copy of the image tokens (4 MiB each); on CPU a handful
        at a time stays in cache and below the allocator's mmap threshold, which made a
        64-prompt AMG batch ~2x faster than one big call. Accelerators take the whole batch.
        """
        n = sparse_prompt_embeddings.shape[0]
        chunk = CPU_PROMPT_CHUNK if context.keys.device.type == "cpu" else max(n, 1)
        for start in range(0, n, chunk):
            yield self.transformer.forward_prepared(
                context, self._tokens(sparse_prompt_embeddings[start : start + chunk])
            )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        outputs: slice = slice(None),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits and IoU predictions of the mask tokens in `outputs` (default: all)."""
        tokens = self._tokens(sparse_prompt_embeddings)
        if image_embeddings.shape[0] == 1 and dense_prompt_embeddings.stride(0) == 0:
            # One image and one dense prompt (broadcast, e.g. "no mask"): the image tokens
            # stay a single copy shared by every prompt set.
            src = image_embeddings + dense_prompt_embeddings[:1]
        else:
            src = image_embeddings + dense_prompt_embeddings
        hs, keys = self.transformer(src, image_pe, tokens)
        return self._heads(hs, keys, outputs)

    def _tokens(self, sparse_prompt_embeddings: torch.Tensor) -> torch.Tensor:
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        return torch.cat([output_tokens.unsqueeze(0).expand(n, -1, -1), sparse_prompt_embeddings], dim=1)

    def _heads(self, hs: torch.Tensor, keys: torch.Tensor, outputs: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs -> logits of the mask tokens in `outputs` and their IoU."""
        return self._mask_logits(hs, keys, outputs), self._iou(hs, outputs)

    def _iou(self, hs: torch.Tensor, outputs: slice) -> torch.Tensor:
        return self.iou_prediction_head(hs[:, 0])[:, outputs]

    def _mask_logits(self, hs: torch.Tensor, keys: torch.Tensor, outputs: slice) -> torch.Tensor:
        """(B, K, 4h, 4w) logits of the mask tokens in `outputs`."""
        b, t = hs.shape[0], keys.shape[1]
        h = w = int(round(t**0.5))
        mask_tokens = hs[:, 1 : 1 + self.num_mask_tokens]
        hyper = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens[:, i]) for i in range(self.num_mask_tokens)[outputs]],
            dim=2,
        )  # (B, C/8, K)
        k = hyper.shape[2]
        logits = self._upscaled_logits(keys.expand(b, -1, -1), hyper)
        # Pixel (4i + 2dy + ey, 4j + 2dx + ex) sits at row (i, j, dy, dx, ey, ex) of `logits`.
        masks = logits.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, k, 4 * h, 4 * w)

    def _upscaled_logits(self, keys: torch.Tensor, hyper: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """`output_upscaling` of image tokens (B, T, C), then the hypernetwork weights (B, C/8, K):
        (B, 16*T, K) logits, each token's 4x4 pixel block in (dy, dx, ey, ex) order.

        Both transposed convs (kernel 2, stride 2) are per-pixel matmuls, so the work runs
        channels-last, `chunk` tokens at a time: each chunk's intermediates (1-2 MiB) stay in
        cache instead of passing 4 and 8 MiB frames through memory several times.
        """
        conv1, norm, _, conv2, _ = self.output_upscaling
        w1, b1 = transposed_conv_matrix(conv1)
        w2, b2 = transposed_conv_matrix(conv2)
        c1, c2 = conv1.weight.shape[1], conv2.weight.shape[1]
        b, t, c = keys.shape
        parts = []
        for start in range(0, t, chunk):
            x = torch.addmm(b1, keys[:, start : start + chunk].reshape(-1, c), w1).view(-1, c1)
            x = F.gelu(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
            x = F.gelu(torch.addmm(b2, x, w2))
            parts.append(x.view(b, -1, c2) @ hyper)
        return torch.cat(parts, dim=1)
