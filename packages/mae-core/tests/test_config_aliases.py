"""Renamed config fields: the old names (``__aliases__``) still work in from_dict, in every layer of a run config, as
Python keywords and as hidden CLI flags, each with one deprecation note per process; old + new together is an error.

The cross-package checks (a domain CLI run with an old flag, saved runs with old names, every method's defaults)
are in the workspace's tests/test_config_aliases.py."""
from dataclasses import asdict, dataclass
from typing import ClassVar

import pytest

from mae_core import config as config_mod
from mae_core.cli.flags import Parser, add_common_flags, add_run_config_flags, explicit_sections
from mae_core.config import aliases, field, from_dict
from mae_core.errors import ConfigError
from mae_core.models import ViTConfig
from mae_core.models.image_mae import ImageMAEConfig
from mae_core.registry import DatasetSpec, MethodSpec
from mae_core.runconfig import Chosen, Selection, alias_option_names, resolve, route

NOTE = "note: {} is deprecated, use {} (the old name will be removed in the next release)"


@dataclass
class OldNamesConfig(ViTConfig):
    __aliases__: ClassVar[dict] = {"decoder_dim": "decoder_embed_dim", "mask_mode": "mask_strategy"}
    mask_strategy: str = field("random", "random or block", choices=["random", "block"])


@dataclass
class MoreOldNamesConfig(OldNamesConfig):
    __aliases__: ClassVar[dict] = {"decoder_heads": "decoder_num_heads"}


@dataclass
class DataConfig:
    size: int = field(4, "samples")


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    monkeypatch.setattr(config_mod, "_NOTED", set())


def notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]


def specs(cls=OldNamesConfig):
    return (MethodSpec(name="old-names", domain="test", config_cls=cls, model_cls=object),
            DatasetSpec(name="data", domain="test", config_cls=DataConfig, build=lambda c, s: []))


def test_from_dict_reads_the_old_name_and_notes_it_once(capsys):
    c = from_dict(OldNamesConfig, {"decoder_dim": 48, "mask_mode": "block"}, "cfg.yaml: model")
    assert c.decoder_embed_dim == 48 and c.mask_strategy == "block"
    assert from_dict(OldNamesConfig, {"decoder_dim": 24}, "again").decoder_embed_dim == 24
    assert notes(capsys) == [NOTE.format("cfg.yaml: model.decoder_dim", "decoder_embed_dim"),
                             NOTE.format("cfg.yaml: model.mask_mode", "mask_strategy")]
    # the choices of the new field apply to a value given under the old name
    with pytest.raises(ConfigError, match=r"model.mask_strategy: 'diagonal' is not one of"):
        from_dict(OldNamesConfig, {"mask_mode": "diagonal"}, "model")


def test_old_and_new_name_together_is_a_one_line_error(capsys):
    with pytest.raises(ConfigError) as e:
        from_dict(OldNamesConfig, {"decoder_dim": 48, "decoder_embed_dim": 64}, "run/config.yaml: model")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("run/config.yaml: model: both 'decoder_dim' and 'decoder_embed_dim'")
    assert notes(capsys) == []


def test_aliases_are_collected_over_the_mro_and_notes_are_per_class(capsys):
    assert aliases(MoreOldNamesConfig) == {"decoder_dim": "decoder_embed_dim", "mask_mode": "mask_strategy",
                                           "decoder_heads": "decoder_num_heads"}
    assert aliases(ImageMAEConfig) == {} and aliases(ViTConfig) == {}
    c = from_dict(MoreOldNamesConfig, {"decoder_heads": 2, "decoder_dim": 8}, "m")
    assert (c.decoder_num_heads, c.decoder_embed_dim) == (2, 8)
    from_dict(OldNamesConfig, {"decoder_dim": 8}, "m")  # another class: its own note
    assert len(notes(capsys)) == 3
    assert "__aliases__" not in asdict(c)  # a ClassVar, not a field


def test_keyword_options_accept_the_old_names(capsys):
    mspec, dspec = specs()
    ch = Chosen("test", mspec, dspec, None, {}, {}, "flags")
    assert alias_option_names(mspec, dspec) == {"decoder_dim": ("model", "decoder_embed_dim", "decoder_dim"),
                                                "mask_mode": ("model", "mask_strategy", "mask_mode")}
    assert route(ch, {"decoder_dim": 40, "size": 3}) == {"train": {}, "model": {"decoder_embed_dim": 40},
                                                         "data": {"size": 3}}
    assert notes(capsys) == [NOTE.format("option decoder_dim", "decoder_embed_dim")]
    with pytest.raises(ConfigError, match="options 'decoder_dim' and 'decoder_embed_dim' both given"):
        route(ch, {"decoder_dim": 40, "decoder_embed_dim": 41})


def test_every_layer_is_renamed_before_the_layers_merge(capsys):
    """A saved / file config with an old name under explicit options with the new name: the later layer wins."""
    mspec, dspec = specs()
    ch = Chosen("test", mspec, dspec, None, {"model": {"decoder_dim": 40, "mask_mode": "block"}}, {}, "old.yaml")
    cfg = resolve(ch, Selection(), {"model": {"decoder_embed_dim": 64}})
    assert cfg.model.decoder_embed_dim == 64 and cfg.model.mask_strategy == "block"
    assert cfg.model_explicit == {"decoder_embed_dim": 64, "mask_strategy": "block"}
    assert "decoder_dim" not in cfg.to_dict()["model"]
    assert notes(capsys) == [NOTE.format("old.yaml: model.decoder_dim", "decoder_embed_dim"),
                             NOTE.format("old.yaml: model.mask_mode", "mask_strategy")]


def parser_for(cls=OldNamesConfig):
    mspec, dspec = specs(cls)
    p = Parser(prog="mae-test pretrain")
    add_common_flags(p, "test")
    return p, add_run_config_flags(p, mspec, dspec)


def test_old_flags_are_hidden_and_set_the_new_field(capsys):
    p, mapping = parser_for(MoreOldNamesConfig)
    assert "--decoder-dim" not in p.format_help() and "--decoder-embed-dim" in p.format_help()
    args = p.parse_args(["--decoder-dim", "32", "--decoder-heads", "2", "--mask-mode", "block", "--depth", "3"])
    assert explicit_sections(args, mapping)["model"] == {"decoder_embed_dim": "32", "decoder_num_heads": "2",
                                                         "mask_strategy": "block", "depth": "3"}
    assert notes(capsys) == [NOTE.format("--decoder-dim", "--decoder-embed-dim"),
                             NOTE.format("--decoder-heads", "--decoder-num-heads"),
                             NOTE.format("--mask-mode", "--mask-strategy")]
    with pytest.raises(ConfigError, match="invalid choice"):
        p.parse_args(["--mask-mode", "diagonal"])


def test_old_and_new_flag_together_is_a_one_line_error():
    p, mapping = parser_for()
    for argv in (["--decoder-dim", "32", "--decoder-embed-dim", "16"], ["--decoder-embed-dim", "16", "--decoder-dim",
                                                                        "32"]):
        with pytest.raises(ConfigError) as e:
            explicit_sections(p.parse_args(argv), mapping)
        assert str(e.value) == ("--decoder-dim and --decoder-embed-dim both given (--decoder-dim is the deprecated "
                                "name of --decoder-embed-dim); give only --decoder-embed-dim")
