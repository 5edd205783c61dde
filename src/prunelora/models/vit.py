"""Vision Transformer for small images: timm's VisionTransformer with a small patch.

timm's module names (`blocks.N.attn.qkv`, `blocks.N.attn.proj`, `blocks.N.mlp.fc1`, `head`) are the
ones peft and Torch-Pruning know, and `forward_features` / `forward_head` come with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer


def vit(
    num_classes: int,
    in_chans: int = 3,
    img_size: int = 32,
    width: int = 384,
    depth: int = 12,
    heads: int = 6,
    patch_size: int = 4,
) -> VisionTransformer:
    """A ViT; the paper's model is width 384, depth 12, 6 heads, patch 4 on 32x32 images."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        mlp_ratio=4.0,
        class_token=True,
        global_pool="token",
    )
