from .mae import MAEDecoder, MaskedAutoencoder, ModelOutput, TransformerEncoder

__all__ = ["MAEDecoder", "MaskedAutoencoder", "ModelOutput", "TransformerEncoder"]
