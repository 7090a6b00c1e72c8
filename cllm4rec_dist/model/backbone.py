"""The pretrained causal LM as a module that takes ID embeddings in place of some tokens.

Every use of backbone weights (input embeddings, transformer, LM head) happens inside
``Backbone.forward`` through submodule calls, so DeepSpeed ZeRO-3's module hooks can gather the
partitioned parameters. The word vocabulary is never resized: ID tokens are embedded by the
injected tables and written over the word embeddings at their positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class BackboneOutput:
    hidden: Tensor  # [B, T, H] last hidden states (after the final norm), backbone dtype
    word_logits: Tensor | None  # [M, V] LM-head logits at word_logit_index, or None


class Backbone(nn.Module):
    """Wraps a HF causal LM (Llama / GPT-2 / Qwen families: anything with ``base_model`` taking
    ``inputs_embeds`` and an output-embedding LM head)."""

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.lm = lm
        # Read sizes once: under ZeRO-3 the weights are partitioned placeholders afterwards.
        self._hidden_size = int(lm.config.hidden_size)
        self._vocab_size = int(lm.get_input_embeddings().num_embeddings)

    @property
    def hidden_size(self) -> int:
        return self._hidden_size

    @property
    def vocab_size(self) -> int:
        """V: rows of the word embedding (word ids are [0, V))."""
        return self._vocab_size

    def forward(
        self,
        word_ids: Tensor,
        id_embeds: Tensor,
        id_mask: Tensor,
        attention_mask: Tensor,
        word_logit_index: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> BackboneOutput:
        """word_ids [B, T] int64 (any value < V where id_mask is set); id_embeds [N_id, H] for the
        positions of id_mask.nonzero() in row-major order; id_mask [B, T] bool; attention_mask
        [B, T] (1 = real token, right padding); word_logit_index [M] flat positions into B*T.

        position_ids [B, T], optional: rows may then hold several documents (packing), each
        restarting its positions at 0. Attention stays within runs of consecutive positions: HF
        builds that block-diagonal causal mask from position_ids when no attention_mask is passed,
        so attention_mask is not given to the transformer in this case.

        Returns hidden [B, T, H] and, when word_logit_index is given, word_logits [M, V].
        """
        batch, length = word_ids.shape
        if batch == 0 or length == 0:
            # HF attention cannot reshape an empty batch, yet an empty rank must still run every
            # module (ZeRO-3 gathers parameters collectively) and stay in the autograd graph.
            # Run one padding token and keep zero rows of the result.
            word_ids = word_ids.new_zeros(1, 1)
            id_mask = torch.zeros(1, 1, dtype=torch.bool, device=word_ids.device)
            attention_mask = torch.ones(1, 1, dtype=torch.long, device=word_ids.device)
            position_ids = None if position_ids is None else word_ids.new_zeros(1, 1)
        embed = self.lm.get_input_embeddings()
        inputs = embed(torch.where(id_mask, 0, word_ids))
        inputs = inputs.index_put((id_mask,), id_embeds.to(inputs.dtype))
        if position_ids is None:
            masking = {"attention_mask": attention_mask}
        else:
            masking = {"attention_mask": None, "position_ids": position_ids}
        out = self.lm.base_model(inputs_embeds=inputs, use_cache=False, **masking)
        hidden = out.last_hidden_state
        if batch == 0 or length == 0:
            hidden = hidden[:0, :0].reshape(batch, length, hidden.shape[-1])
        word_logits = None
        if word_logit_index is not None:
            flat = hidden.reshape(-1, hidden.shape[-1])
            word_logits = self.lm.get_output_embeddings()(flat[word_logit_index])
        return BackboneOutput(hidden=hidden, word_logits=word_logits)


__all__ = ["Backbone", "BackboneOutput"]
