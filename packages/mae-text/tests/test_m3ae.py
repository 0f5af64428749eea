"""M3AE: whole-word 15 % MLM, 75 % patch removal, half of the ITM pairs mismatched (with other content), MIM read
from the configured fusion layer, each loss term recomputed by hand, the image-report data and the picture."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import mae_core
from mae_core.data.utils import collate_dicts
from mae_core.errors import DataError
from mae_core.layers import patchify
from mae_core.losses import masked_mse
from mae_core.testing import single_thread
from mae_text.image_reports import (ANSWERS, ImageReportConfig, ImageReports, closed_questions, content_key,
                                    write_report)
from mae_text.m3ae_viz import visualize_m3ae
from mae_text.masking import corrupt, whole_word_mask
from mae_text.methods.m3ae import M3AE
from mae_text.tokenizer import SPECIALS

TINY = {"embed_dim": 32, "vision_depth": 1, "text_depth": 1, "fusion_depth": 2, "num_heads": 2, "decoder_embed_dim": 16,
        "decoder_num_heads": 2, "vocab_size": 300}


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def built():
    ds = mae_core.create_dataset("image-reports", "train", domain="text", num_train=8, num_test=8, image_size=16)
    torch.manual_seed(0)
    model = mae_core.create_model("m3ae", domain="text", dataset=ds, **TINY)
    return model, ds, collate_dicts([ds[i] for i in range(8)])


def _variant(model, **kw):
    other = M3AE(dataclasses.replace(model.config, **kw))
    other.load_state_dict(model.state_dict())
    return other


def test_mlm_masks_whole_words_at_15_percent(built):
    model, _, batch = built
    out = model(batch, generator=torch.Generator().manual_seed(3))
    enc = model.text.tokenize_text(batch)
    mask = out.extra["mlm_mask"]
    g = torch.Generator().manual_seed(3)  # the MLM mask is the first draw of the generator
    ref = whole_word_mask(enc.word_ids, enc.attention_mask, 0.15, g)
    assert torch.equal(mask, ref)
    assert torch.equal(out.extra["mlm_input"], corrupt(enc.input_ids, ref, model.text.mask_id,
                                                       model.config.vocab_size, len(SPECIALS), g))
    for r in range(len(batch["text"])):
        n = int(enc.attention_mask[r].sum())
        budget = max(1, round(0.15 * n))  # [CLS] and [SEP] count, as the reference collator
        words = enc.word_ids[r]
        longest = int(torch.bincount(words[words >= 0]).max())
        assert budget - longest < int(mask[r].sum()) <= budget
        assert not mask[r][enc.special[r]].any()
        for w in words[mask[r]].unique():  # whole words only
            assert mask[r][words == w].all()


def test_mim_removes_75_percent_of_the_patches(built):
    model, _, batch = built
    out = model(batch, generator=torch.Generator().manual_seed(0))
    num_patches = (16 // 4) ** 2
    assert out.mask.shape == (8, num_patches)
    assert out.mask.sum(1).tolist() == [num_patches - int(num_patches * 0.25)] * 8  # 12 of 16
    assert out.extra["mim_features"].shape[1] == 1 + 4  # cls + the 4 kept patches enter the fusion


def test_itm_half_mismatched_with_other_content(built):
    model, _, _ = built
    for seed in range(5):
        keys = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
        labels, idx = model.itm_pairs({"key": keys}, 8, torch.Generator().manual_seed(seed))
        assert int(labels.sum()) == 4
        pos = labels.bool()
        assert torch.equal(idx[pos], torch.arange(8)[pos])
        assert (keys[idx[~pos]] != keys[~pos]).all()
    labels, idx = model.itm_pairs({"key": torch.zeros(7)}, 7, torch.Generator().manual_seed(0))
    assert int(labels.sum()) == 3  # B // 2 matched
    assert (idx[~labels.bool()] != torch.arange(7)[~labels.bool()]).all()  # all keys equal: any other image
    out = model(dict(built[2]), generator=torch.Generator().manual_seed(1))
    assert int(out.extra["itm_labels"].sum()) == 4


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_mim_reads_the_configured_fusion_layer(built, layer):
    model, _, batch = built
    m = _variant(model, mim_layer=layer, mlm_weight=0.0, itm_weight=0.0)  # the MIM pass alone
    seen = {}
    hooks = [blk.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, (args[1], out[1])))
             for i, blk in enumerate(m.fusion.layers)]
    out = m(batch, generator=torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    want = seen[m.config.fusion_depth - 1][1] if layer == -1 else seen[layer][0]
    assert torch.equal(out.extra["mim_features"], want)
    out.loss.backward()
    reached = [any(p.grad is not None and p.grad.abs().sum() > 0 for p in blk.block_b.parameters())
               for blk in m.fusion.layers]
    depth = m.config.fusion_depth if layer == -1 else layer
    assert reached == [i < depth for i in range(m.config.fusion_depth)]  # layers after the tap get no MIM gradient


def test_each_loss_term_by_hand(built):
    model, _, batch = built
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    out = model(batch, generator=g())
    mt = out.metrics
    assert float(out.loss.detach()) == pytest.approx(mt["mlm"] + mt["mim"] + mt["itm"], rel=1e-5)
    # MLM: cross-entropy of the fused text tokens at the masked positions
    enc = model.text.tokenize_text(batch)
    logits = model.text.mlm_logits(out.extra["mlm_text"])
    m = out.extra["mlm_mask"]
    assert mt["mlm"] == pytest.approx(float(F.cross_entropy(logits[m], enc.input_ids[m]).detach()), rel=1e-5)
    # MIM: MSE on removed patches against the per-patch normalised pixels (unbiased variance, eps 1e-6)
    p = patchify(batch["image"], 4)
    t = (p - p.mean(-1, keepdim=True)) / torch.sqrt(p.var(-1, keepdim=True) + 1e-6)
    assert torch.allclose(out.target, t, atol=1e-5)
    per = ((out.pred - t) ** 2).mean(-1)
    assert mt["mim"] == pytest.approx(float(((per * out.mask).sum() / out.mask.sum()).detach()), rel=1e-5)
    # ITM: cross-entropy of the head on the pooled fused pair (text, chosen image)
    labels, idx = out.extra["itm_labels"], out.extra["itm_images"]
    with torch.no_grad():
        tt, vv = model.fused(dict(batch, image=batch["image"][idx]))
        ce = F.cross_entropy(model.itm_head(model.pooled(tt, vv)), labels)
    assert mt["itm"] == pytest.approx(float(ce), rel=1e-4)
    # weights
    w = _variant(model, mlm_weight=2.0, mim_weight=0.0, itm_weight=0.0)
    o2 = w(batch, generator=g())
    assert set(o2.metrics) == {"mlm"} and float(o2.loss.detach()) == pytest.approx(2 * mt["mlm"], rel=1e-5)
    assert float(masked_mse(out.pred, out.target, out.mask).detach()) == pytest.approx(mt["mim"], rel=1e-5)


def test_reports_follow_the_generator_parameters():
    assert write_report(2, 1, 1, 3, 0) == "there are three large cysts in the left lung ."
    assert write_report(3, 0, 0, 2, 1) == "right lung : two small masses . the other lung is clear ."
    assert write_report(1, 0, 0, 1, 2) == "axial slice shows one small nodule in the right lung ."
    keys = {content_key(f, s, d, c) for f in range(1, 4) for s in range(2) for d in range(2) for c in range(1, 4)}
    assert keys == set(range(1, 37)) and content_key(0, 1, 1, 2) == 0
    qa = dict(closed_questions(2, 1, 0, 3, torch.Generator().manual_seed(0)))
    assert qa["is this slice normal ?"] == "no" and qa["which lung has the lesion ?"] == "right"
    assert qa["how many lesions are there ?"] == "three" and qa["is the lesion large ?"] == "yes"
    assert set(qa.values()) <= set(ANSWERS)
    assert len(closed_questions(0, 0, 0, 1, torch.Generator().manual_seed(0))) == 2  # a normal slice: 2 questions
    ds = ImageReports(ImageReportConfig(num_train=16, image_size=16))
    assert ds[0]["image"].shape == (1, 16, 16) and -1 <= float(ds[0]["image"].min()) <= float(ds[0]["image"].max()) <= 1


def test_csv_pairs_and_one_line_errors(tmp_path):
    from PIL import Image
    for i in range(4):
        Image.new("L", (20, 24), color=40 * i).save(tmp_path / f"im{i}.png")
    (tmp_path / "pairs.csv").write_text("image,text\n" + "".join(f"im{i}.png,report number {i}\n" for i in range(4)))
    ds = ImageReports(ImageReportConfig(path=str(tmp_path), image_size=16, test_fraction=0.0))
    assert len(ds) == 4 and ds[1]["image"].shape == (1, 16, 16) and ds[2]["text"] == "report number 2"
    assert float(ds[0]["image"].max()) == pytest.approx(-1.0)
    bad = {"no_col.csv": "path,report\na.png,x\n", "missing.csv": "image,text\nnope.png,some text\n",
           "empty.csv": "image,text\nim0.png,\n"}
    want = {"no_col.csv": "columns image and text", "missing.csv": ":2: image file nope.png not found",
            "empty.csv": ":2: empty text"}
    for name, body in bad.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(DataError, match=want[name]) as e:
            ImageReports(ImageReportConfig(path=str(tmp_path / name)))
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="expected one .csv"):
        ImageReports(ImageReportConfig(path=str(tmp_path)))  # now four CSVs in the folder


def test_picture(built, tmp_path):
    model, ds, _ = built
    path = visualize_m3ae(model, ds, tmp_path / "m3ae.png", num=3)
    assert path.exists() and path.stat().st_size > 5000
    assert math.isfinite(float(model.itm_scores(collate_dicts([ds[0]]))[0].detach()))
