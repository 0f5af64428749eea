from .mae import MAEDecoder, MaskedAutoencoder, ModelOutput, TransformerEncoder
from .vit_config import ViTConfig

__all__ = ["MAEDecoder", "MaskedAutoencoder", "ModelOutput", "TransformerEncoder", "ViTConfig"]
