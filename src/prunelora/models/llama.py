"""A small Llama (Hugging Face `transformers`' LlamaForCausalLM) for the text modality.

The module names are transformers' own (`model.layers.N.self_attn.{q,k,v,o}_proj`, `model.layers.N.mlp.
{gate,up,down}_proj`, `lm_head`), the ones peft and Torch-Pruning know. The output embedding is tied to the input
embedding (as in small Llamas): 0.6M parameters at the `llama-tiny` sizes, of which the 2,048 x 128 embedding is 0.26M.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def llama(vocab_size: int, max_positions: int, width: int = 128, depth: int = 2, heads: int = 4, kv_heads: int = 2,
          mlp: int = 344) -> nn.Module:
    """A LlamaForCausalLM of `depth` decoder layers of `width`, `heads` query heads sharing `kv_heads` key/value heads
    (grouped-query attention), a SwiGLU MLP of `mlp` inner rows, RMSNorm, rotary positions up to `max_positions`
    tokens, and tied input/output embeddings over `vocab_size` tokens. PyTorch's scaled-dot-product attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=mlp, num_hidden_layers=depth,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)
