"""mae-core: the shared masked-autoencoder engine.

Layers (patches, position embeddings, transformer blocks), masking strategies, the generic masked autoencoder,
the training engine, evaluation protocols, checkpoints and the CLI plumbing every ``mae-<domain>`` package uses.
"""
from .errors import ConfigError, DataError, MaeError, NonFiniteLossError
from .masking import MaskInfo
from .models import MAEDecoder, MaskedAutoencoder, ModelOutput, TransformerEncoder

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "MaeError", "NonFiniteLossError", "MaskInfo", "MAEDecoder",
           "MaskedAutoencoder", "ModelOutput", "TransformerEncoder", "__version__"]
