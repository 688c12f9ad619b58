"""Reference side of scripts/bench/bench-mlm.sh: MAD-X language-adapter training steps (masked
language modelling) with PyTorch + transformers + the `adapters` library, the stack
`toolkit train-lang` is measured against.

  text  the benchmark's text, shared by both sides: the paragraphs (contexts) of an XQuAD file,
        one per line.
  run   training steps in this process (one fresh process, so that its peak RSS is this run's)
        and their timing as JSON.

A training step is what `toolkit train-lang` does on a model without a pretrained MLM head
(multilingual-e5-small): a new seq_bn_inv language adapter (reduction factor 2, with the
invertible adapter) and the library's masked-LM head (`*AdapterModel.add_masked_lm_head`, which
runs the invertible adapter backwards before the decoder; the decoder is tied to the frozen word
embeddings; the transform trains, the decoder bias is frozen by `train_adapter`, while the
toolkit trains it: 250k more parameters, a negligible cost), the base model frozen, train mode
(dropout on); the lines tokenised and grouped into blocks of --max-length tokens as run_mlm.py
does; each step masks its batch (15% of the tokens, special tokens never; 80% [MASK], 10%
random, 10% kept), MLM loss, backward, gradient clipping to norm 1, AdamW.
"""
import argparse
import json
import os
import sys
import time


def text(args):
    with open(args.out, "w") as f:
        for article in json.load(open(args.xquad))["data"]:
            for paragraph in article["paragraphs"]:
                f.write(" ".join(paragraph["context"].split()) + "\n")


def blocks(args, torch):
    """The text's lines tokenised (with special tokens), concatenated and cut into blocks."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    lines = [line.strip() for line in open(args.text) if line.strip()]
    ids = [i for e in tok.encode_batch(lines) for i in e.ids]
    n = len(ids) // args.max_length
    if n < args.batch_size:
        sys.exit(f"run: {len(ids)} tokens make {n} blocks of {args.max_length}, fewer than one batch")
    data = torch.tensor(ids[: n * args.max_length], dtype=torch.long).reshape(n, args.max_length)
    # The tokenizer's special tokens (never chosen) and its mask token.
    added = json.load(open(os.path.join(args.model, "tokenizer.json")))["added_tokens"]
    special = torch.tensor([t["id"] for t in added if t["special"]])
    masks = [t["id"] for t in added if t["special"] and "mask" in t["content"].lower()]
    if len(masks) != 1:
        sys.exit(f"run: {args.model}/tokenizer.json has no single mask token ({masks})")
    return data, special, masks[0]


def run(args):
    import torch
    from adapters import AutoAdapterModel, SeqBnInvConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data, special, mask_id = blocks(args, torch)

    model = AutoAdapterModel.from_pretrained(args.model)
    model.add_adapter("lang", config=SeqBnInvConfig(reduction_factor=2))
    model.add_masked_lm_head("lang")
    model.train_adapter("lang")
    model.active_head = "lang"
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0)
    config = model.config

    def mask(block):
        """The data collator's masking: (input ids, labels)."""
        labels = block.clone()
        chosen = torch.bernoulli(torch.full(block.shape, 0.15)).bool() & ~torch.isin(block, special)
        labels[~chosen] = -100
        inputs = block.clone()
        masked = torch.bernoulli(torch.full(block.shape, 0.8)).bool() & chosen
        inputs[masked] = mask_id
        random = torch.bernoulli(torch.full(block.shape, 0.5)).bool() & chosen & ~masked
        inputs[random] = torch.randint(config.vocab_size, block.shape)[random]
        return inputs, labels

    batches = data.shape[0] // args.batch_size

    def train_step(i):
        b = i % batches
        inputs, labels = mask(data[b * args.batch_size:(b + 1) * args.batch_size])
        out = model(input_ids=inputs, attention_mask=torch.ones_like(inputs), labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        return out.loss.item()

    result = {
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "blocks": data.shape[0],
        "threads": torch.get_num_threads(),
        "attn_implementation": config._attn_implementation,
        "trainable_params": sum(p.numel() for p in trainable),
    }
    train_step(0)  # warm-up: first-touch allocations, optimizer state
    start = time.perf_counter()
    losses = [train_step(i) for i in range(1, args.steps + 1)]
    elapsed = time.perf_counter() - start
    result.update(steps=args.steps, seconds_per_step=elapsed / args.steps, last_loss=losses[-1])
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("text")
    t.add_argument("--xquad", required=True)
    t.add_argument("--out", required=True)
    t.set_defaults(func=text)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--text", required=True)
    r.add_argument("--steps", type=int, default=10)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--max-length", type=int, default=128)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--json", required=True)
    r.set_defaults(func=run)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
