"""The model contract (:mod:`mae_core.contract`) on every registered method of every installed domain.

Each method is built the way a user builds it: its default dataset with the method's ``MethodSpec.tiny["data"]``
settings, then ``create_model`` with ``tiny["model"]`` and that dataset (so the method's ``adapt`` makes the model
follow the data). On a batch of its own samples it must pass :func:`mae_core.check_contract` (finite loss, same
loss for the same masking generator, ``encode`` of width ``feature_dim()``, save / load round trip) and one
optimizer step over the trainer's parameter groups must move the weights and the features. The cases come from the
registry at collection time, so a method registered later is tested without editing this file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from mae_core.testing import single_thread
import torch

import mae_core
from mae_core import registry
from mae_core.config import field, to_dict
from mae_core.contract import PretrainedMixin
from mae_core.data.utils import collate_dicts
from mae_core.errors import MaeError
from mae_core.train import build_optimizer, param_groups

# The tiny settings keep each case near a second; a larger model means a tiny setting is missing.
MAX_TINY_PARAMS = 200_000
BATCH = 4  # samples per contract batch (fewer when the tiny dataset has fewer, e.g. one graph)

# Methods that break the contract today, with the failing check. Each case is xfail(strict=True): it must fail with
# MaeError, and the day it passes the test reports it, so the entry is removed with the fix.
KNOWN_FAILURES: dict[str, str] = {}


def _cases():
    mae_core.list_models()  # imports every installed domain (entry points)
    specs = sorted(registry.methods(), key=lambda s: (s.name, s.domain))
    names = [s.name for s in specs]
    for s in specs:
        marks = ([pytest.mark.xfail(strict=True, raises=MaeError, reason=KNOWN_FAILURES[s.name])]
                 if s.name in KNOWN_FAILURES else [])
        yield pytest.param(s.domain, s.name, marks=marks,
                           id=s.name if names.count(s.name) == 1 else f"{s.domain}:{s.name}")


CASES = list(_cases())


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread (mae_core.testing.single_thread)."""
    with single_thread():
        yield


def tiny_settings(spec: registry.MethodSpec) -> dict:
    """``spec.tiny`` as ``{"model": {...}, "data": {...}}`` (copies); a method without it fails, named."""
    t = spec.tiny or {}
    if not isinstance(t, dict) or not t.get("model") or set(t) - {"model", "data"}:
        raise AssertionError(
            f"method {spec.name!r} (domain {spec.domain!r}) has no usable MethodSpec.tiny: give "
            '{"model": {...config overrides...}, "data": {...overrides of its default dataset...}} that make the '
            f"model and its embedded dataset tiny (see tests/test_contract.py); got {t!r}")
    return {"model": dict(t["model"]), "data": dict(t.get("data") or {})}


def build_tiny(spec: registry.MethodSpec):
    """(model, batch): the tiny model made for the tiny default dataset, and a collated batch of its samples."""
    tiny = tiny_settings(spec)
    ds = mae_core.create_dataset(spec.default_dataset, "train", domain=spec.domain, **tiny["data"])
    torch.manual_seed(0)
    model = mae_core.create_model(spec.name, domain=spec.domain, dataset=ds, data_config=tiny["data"],
                                  **tiny["model"])
    collate = getattr(ds, "collate_fn", None) or collate_dicts
    batch = collate([ds[i] for i in range(min(BATCH, len(ds)))])
    return model, batch


def test_every_method_has_tiny_settings():
    mae_core.list_models()
    bad = []
    for spec in registry.methods():
        try:
            tiny_settings(spec)
        except AssertionError as e:
            bad.append(str(e))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("domain,name", CASES)
def test_method_meets_the_contract(domain, name, tmp_path):
    spec = registry.get_method(name, domain)
    model, batch = build_tiny(spec)
    assert isinstance(model, mae_core.MAEModel), f"method {name!r}: not an MAEModel (mae_core.contract)"
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params <= MAX_TINY_PARAMS, (f"method {name!r}: its tiny model has {n_params} parameters (more than "
                                         f"{MAX_TINY_PARAMS}): make MethodSpec.tiny smaller")
    mae_core.check_contract(model, batch, name, tmp_path)

    # one optimizer step, as the trainer takes it (AdamW over the default parameter groups), moves the weights
    optimizer = build_optimizer(param_groups(model, 0.05), lr=1e-3)
    model.train()
    optimizer.zero_grad()
    model(batch, generator=torch.Generator().manual_seed(1)).loss.backward()
    params = dict(model.named_parameters())
    with_grad = [k for k, p in params.items() if p.grad is not None and bool(p.grad.ne(0).any())]
    assert with_grad, f"method {name!r}: the loss gives no parameter a gradient"
    before = {k: params[k].detach().clone() for k in with_grad}
    model.eval()  # features before / after the step, both with the running statistics of the forward above
    with torch.no_grad():
        feats = model.encode(batch)
    optimizer.step()
    unchanged = [k for k in with_grad if torch.equal(before[k], params[k])]
    assert not unchanged, f"method {name!r}: one optimizer step left parameters with a gradient unchanged: " \
                          f"{unchanged[:5]}"
    with torch.no_grad():
        moved = (model.encode(batch) - feats).abs().max()
    assert moved > 0, f"method {name!r}: encode gives the same features after an optimizer step (the " \
                      "pretraining loss does not reach the encoder)"


# ---- a method that breaks the contract is named ----------------------------------------------------------------------
@dataclass
class _ThrowawayConfig:
    width: int = field(8, "hidden width")


class _NoEncode(PretrainedMixin, torch.nn.Module):
    """A model with every contract method but ``encode``."""

    def __init__(self, config: _ThrowawayConfig):
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(3, config.width)

    def forward(self, batch, generator=None):
        x = batch["image"].mean((2, 3))
        noise = torch.randn(x.shape, generator=generator)
        return mae_core.ModelOutput(loss=(self.proj(x + noise) ** 2).mean())

    def feature_dim(self, pool=None):
        return self.config.width

    def num_layers(self):
        return 1

    def layer_id(self, name):
        return 0


@pytest.fixture
def throwaway_method():
    key = ("core", "contract-throwaway")
    spec = mae_core.register_method(mae_core.MethodSpec(
        name=key[1], domain=key[0], config_cls=_ThrowawayConfig, model_cls=_NoEncode, default_dataset="shapes"))
    try:
        yield spec
    finally:
        registry.METHODS.pop(key, None)


def test_a_method_without_encode_fails_the_contract_by_name(throwaway_method, tmp_path):
    with pytest.raises(AssertionError, match="method 'contract-throwaway' .*no usable MethodSpec.tiny"):
        tiny_settings(throwaway_method)
    model = mae_core.create_model("contract-throwaway")
    ds = mae_core.create_dataset("shapes", "train", image_size=16, num_train=4, num_test=2)
    batch = collate_dicts([ds[i] for i in range(2)])
    assert float(model(batch, generator=torch.Generator().manual_seed(0)).loss.detach()) > 0  # it trains, it only lacks encode
    with pytest.raises(MaeError, match="method 'contract-throwaway' breaks the model contract: no encode$"):
        mae_core.check_contract(model, batch, tmpdir=tmp_path)
    assert mae_core.list_models("contract-*") == ["contract-throwaway"]  # registered only inside this test


# ---- the Python API builds what the CLI builds -----------------------------------------------------------------------
def _flags(opts: dict) -> list[str]:
    out = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        out += ([flag] if v is True else [f"--no-{k.replace('_', '-')}"] if v is False
                else [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)])
    return out


def test_create_model_config_equals_the_cli_run_config(tmp_path):
    from mae_core.cli import main

    tiny = tiny_settings(registry.get_method("image-mae", "core"))
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--max-steps", "1", "--epochs", "1", "--batch-size", "4",
                 "--no-progress", *_flags({**tiny["model"], **tiny["data"]})]) == 0
    saved = json.loads((out / "config.json").read_text())
    model = mae_core.create_model("image-mae", data_config=tiny["data"], **tiny["model"])
    assert saved["method"] == model.method_name == "image-mae"
    assert saved["config"] == json.loads(json.dumps(to_dict(model.config)))
    assert saved["config"]["img_size"] == tiny["data"]["image_size"]  # adapt applied on both paths


# ---- --mask-schedule reaches every method that accepts it --------------------------------------------------------------
# The trainer's mask-ratio schedule (TrainConfig.mask_schedule, mae_core.masking.MaskRatioSchedule) sets a model's
# ``set_mask_ratio(r)`` or ``mask_ratio`` attribute, and refuses a model with neither or one that masks by another rule
# (``mask_schedule_refused``: bm-mae, maskalign, r-mae and the text methods), so a schedule is never accepted and ignored.
REFUSE_SCHEDULE = {"bm-mae", "dupmae", "maskalign", "mlm", "r-mae", "retromae", "starbucks"}


def _schedule_cases():
    for p in CASES:
        domain, name = p.values
        yield pytest.param(domain, name, id=p.id)


@pytest.mark.parametrize("domain,name", list(_schedule_cases()))
def test_a_scheduled_mask_ratio_reaches_the_mask_or_is_refused(domain, name):
    from mae_core.masking import MaskRatioSchedule

    model, batch = build_tiny(registry.get_method(name, domain))
    try:
        schedule = MaskRatioSchedule(model, "linear", start=0.2, end=0.6, fraction=1.0)
    except MaeError as e:
        assert "has no mask ratio to schedule" in str(e)
        return
    assert name not in REFUSE_SCHEDULE, f"{name} masks by its own rule: the schedule must be refused"
    fractions = []
    for p in (0.0, 1.0):
        schedule.set_progress(p)
        out = model(batch, generator=torch.Generator().manual_seed(0))
        fractions.append(float(out.mask.float().mean()))
    assert fractions[0] < fractions[1], f"method {name!r}: masked fraction {fractions} at ratios 0.2 and 0.6"
