"""What a text run's MLM fills in: top-1 / top-5 accuracy on the encoder's masked tokens of the first 256 test texts
(two mask draws), split into the 55 most frequent tokens of the training texts (every fourth text counted) and the
rest; and per masked whole word (every piece right), over all words and over words of four or more letters (comparable
across vocabulary sizes, which split words into different numbers of pieces). Used for the text rows of docs/benchmarks.md, "What the no-argument runs show":

    uv run python benchmarks/text_mlm_fill.py RUN [CHECKPOINT/model.safetensors]

A checkpoint's weights (same architecture and tokenizer as RUN) replace the run's final ones."""
import collections
import sys

import torch

from mae_core import load_run
torch.set_num_threads(1)
run = load_run(sys.argv[1]); m = run.model.eval()
if len(sys.argv) > 2:
    from safetensors.torch import load_file
    print("checkpoint", sys.argv[2], m.load_state_dict(load_file(sys.argv[2])))
ds = run.dataset("test")
texts = [ds[i]["text"] for i in range(min(256, len(ds)))]
tr = run.dataset("train")
counted = m.tokenize_text({"text": [tr[i]["text"] for i in range(0, len(tr), 4)]})
cnt = collections.Counter(counted.input_ids[counted.attention_mask.bool()].tolist())  # real tokens, no padding
top = torch.tensor([t for t, _ in cnt.most_common(55)])
res = collections.defaultdict(list)
with torch.no_grad():
    for s in range(2):
        enc = m.tokenize_text({"text": texts})
        masks = m.draw_masks(enc, torch.Generator().manual_seed(s))
        h = m.run_encoder(masks["enc_in"], enc.attention_mask)
        lg = m.mlm_logits(h)
        w = masks["enc_mask"]
        tgt = enc.input_ids[w]; top5 = lg[w].topk(5, -1).indices
        freq = torch.isin(tgt, top)
        res["top1"].append((top5[:, 0] == tgt).float()); res["top5"].append((top5 == tgt[:, None]).any(1).float())
        res["freq"].append(freq.float())
        right = lg.argmax(-1) == enc.input_ids
        for b in range(len(texts)):
            words = {}
            for t in masks["enc_mask"][b].nonzero().flatten().tolist():
                w = words.setdefault(int(enc.word_ids[b, t]), [[], True])
                w[0].append(int(enc.input_ids[b, t])); w[1] &= bool(right[b, t])
            for ids, ok in words.values():
                word = m.tokenizer.decode(ids).replace(" ##", "")
                res["word"].append(float(ok))
                if len(word) >= 4 and word.isalpha():
                    res["long word"].append(float(ok))
top1 = torch.cat(res["top1"]); top5 = torch.cat(res["top5"]); freq = torch.cat(res["freq"]).bool()
print(f"masked tokens {len(top1)}; frequent share {freq.float().mean():.2f}")
print(f"top1 all {top1.mean():.3f} frequent {top1[freq].mean():.3f} rare {top1[~freq].mean():.3f}")
print(f"top5 all {top5.mean():.3f} frequent {top5[freq].mean():.3f} rare {top5[~freq].mean():.3f}")
print(f"whole words right: all {sum(res['word']) / len(res['word']):.3f} ({len(res['word'])} words), "
      f"words of 4+ letters {sum(res['long word']) / len(res['long word']):.3f} ({len(res['long word'])} words)")
