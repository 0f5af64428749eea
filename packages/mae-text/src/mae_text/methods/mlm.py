"""Plain masked language modelling (BERT, Devlin et al., 2019) of RetroMAE's encoder: the baseline of RetroMAE's
central ablation. Same encoder, tokenizer, whole-word masking at ``mask_ratio`` (0.3, RetroMAE's encoder ratio, so
the decoder is the only difference), 80 / 10 / 10 corruption and tied MLM head; no decoder, so nothing trains the
[CLS] embedding for the text as a whole. Fine-tuning, encoding and scoring are RetroMAE's (the [CLS] output).
"""
from __future__ import annotations

from dataclasses import dataclass

from mae_core.models.mae import ModelOutput

from .retromae import RetroMAE, RetroMAEConfig


@dataclass
class MLMConfig(RetroMAEConfig):
    pass


class MLM(RetroMAE):
    method_name = "mlm"
    has_decoder = False

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        enc = self.tokenize_text(batch)
        masks = self.draw_masks(enc, generator)
        h = self.run_encoder(masks["enc_in"], enc.attention_mask)
        loss = self.mlm_loss(h, enc.input_ids, masks["enc_mask"])
        return ModelOutput(loss=loss, mask=masks["enc_mask"].float(), metrics={"mlm": float(loss.detach())})
