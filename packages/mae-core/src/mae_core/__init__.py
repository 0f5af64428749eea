"""mae-core: the shared masked-autoencoder engine, and the public Python API of every ``mae-<domain>`` package.

    import mae_core
    mae_core.list_models("point-*")                      # registered methods of every installed domain
    model = mae_core.create_model("image-mae", depth=4)  # config overrides as keywords; adapt() applied
    run = mae_core.pretrain("image-mae", epochs=1, out="runs/y")
    mae_core.probe(run, kind="linear")
    run = mae_core.load_run("runs/y")                    # model + config + dataset of a run
    model.save_pretrained("dir"); mae_core.from_pretrained("dir")

Layers (patches, position embeddings, transformer blocks), masking strategies, the generic masked autoencoder,
the training engine, evaluation protocols and checkpoints are in the sub-packages (``layers``, ``masking``,
``models``, ``train``, ``eval``, ``checkpoint``); docs/api.md lists the public names.
"""
from .api import Run, create_dataset, create_model, from_pretrained, list_datasets, list_models, load_run, \
    save_pretrained
from .contract import MAEModel, check_contract
from .errors import ConfigError, DataError, MaeError, NonFiniteLossError
from .eval.probes import ProbeConfig, register_probe
from .layers.ema import EMA
from .masking import MaskInfo
from .models import MAEDecoder, MaskedAutoencoder, ModelOutput, TransformerEncoder
from .registry import CommandSpec, DatasetSpec, MethodSpec, PresetSpec, register_command, register_dataset, \
    register_method, register_preset
from .runconfig import RunConfig
from .teacher import FrozenTeacher, TeacherOutput
from .train import EMACallback, TrainConfig, Trainer
from .workflows import FinetuneConfig, finetune, pretrain, probe, reconstruct

__version__ = "0.1.0"
__all__ = [
    # the API
    "create_model", "list_models", "create_dataset", "list_datasets", "load_run", "Run", "pretrain", "probe",
    "finetune", "reconstruct", "save_pretrained", "from_pretrained",
    # typed configs
    "RunConfig", "TrainConfig", "ProbeConfig", "FinetuneConfig",
    # the model contract and the registry
    "MAEModel", "check_contract", "MethodSpec", "DatasetSpec", "PresetSpec", "CommandSpec", "register_method",
    "register_dataset", "register_preset", "register_command", "register_probe",
    # building blocks and errors
    "MaskInfo", "MAEDecoder", "MaskedAutoencoder", "ModelOutput", "TransformerEncoder", "Trainer",
    # teachers and EMA (distillation, EMA targets)
    "FrozenTeacher", "TeacherOutput", "EMA", "EMACallback",
    "ConfigError", "DataError", "MaeError", "NonFiniteLossError", "__version__",
]
