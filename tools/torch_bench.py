"""The PyTorch side of `popo bench`: the same shapes through transformers, for side-by-side ratios.

    tools/.venv/bin/python tools/torch_bench.py MODEL_DIR --batch 1,32 --prompt-len 128 \
        --new-tokens 64 --train-batch 8 --train-len 256 --micro-batch 8 --json

Decode: HF `generate` on random prompts, sampled at T = 1 (top-k and top-p off) with every row
forced to the full length (min_new_tokens = max_new_tokens), timed over the whole call as popo
times its own; ms/step subtracts a one-token call. With --group-size G a batch of B rows is B / G
prompts each repeated G times, which is how TRL's GRPO trainer hands a step's rollouts to
`generate` (it prefills every copy; popo prefills each prompt once). Train: forward, token-mean NLL plus a 0.01
entropy term over every completion token (what POPO's loss asks of the logits), backward,
gradient clip and AdamW over `train-batch` sequences of `train-len` tokens in micro-batches,
the model in eager mode. Medians of `repeats` after a warm-up, as popo bench does.
With --lora-r R the update trains PEFT LoRA adapters of rank R on every projection (alpha 32),
the base frozen, as `popo bench --lora-r R` does (decoding stays on the base).
"""

import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", default="1,64,256")
    ap.add_argument("--group-size", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--train-len", type=int, default=512)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--lora-r", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    dev = torch.device(a.device)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype).to(dev)
    vocab = model.config.vocab_size
    eos = model.generation_config.eos_token_id
    g = torch.Generator().manual_seed(0)

    def ids(b, n):
        x = torch.randint(0, vocab, (b, n), generator=g)
        if eos is not None:
            for e in [eos] if isinstance(eos, int) else eos:
                x[x == e] = (e + 1) % vocab
        return x.to(dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    report = {"model": a.model, "device": a.device, "dtype": a.dtype,
              "group_size": a.group_size, "decode_tokens_per_s": {}, "decode_ms_per_step": {}}
    model.eval()
    for b in [int(x) for x in a.batch.split(",")]:
        n = min(a.group_size, b)
        assert b % n == 0, f"decode batch {b} is not a whole number of groups of {n}"
        prompts = ids(b // n, a.prompt_len).repeat_interleave(n, dim=0)
        mask = torch.ones_like(prompts)

        def gen(n):
            sync()
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(prompts, attention_mask=mask, do_sample=True,
                                     temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
                                     min_new_tokens=n, pad_token_id=0)
            sync()
            assert out.shape[1] == a.prompt_len + n
            return time.perf_counter() - t

        gen(2)
        full = statistics.median(gen(a.new_tokens) for _ in range(a.repeats))
        one = statistics.median(gen(1) for _ in range(a.repeats))
        report["decode_tokens_per_s"][b] = b * a.new_tokens / full
        report["decode_ms_per_step"][b] = 1e3 * max(full - one, 0) / (a.new_tokens - 1)

    if a.train_batch > 0:
        if a.lora_r > 0:
            from peft import LoraConfig, get_peft_model

            targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            model = get_peft_model(model, LoraConfig(r=a.lora_r, lora_alpha=32,
                                                     target_modules=targets, lora_dropout=0.0))
            report["lora_r"] = a.lora_r
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-6, weight_decay=0.01)
        seqs = ids(a.train_batch, a.train_len)
        prompt = max(a.train_len // 4, 1)

        def update():
            sync()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            n_tok = a.train_batch * (a.train_len - prompt)
            for s in range(0, a.train_batch, a.micro_batch):
                x = seqs[s:s + a.micro_batch]
                logits = model(x).logits[:, prompt - 1:-1].float()
                logp = torch.log_softmax(logits, -1)
                nll = -logp.gather(-1, x[:, prompt:, None]).sum()
                ent = -(logp.exp() * logp).sum()
                ((nll - 0.01 * ent) / n_tok).backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sync()
            return time.perf_counter() - t

        update()
        t = statistics.median(update() for _ in range(a.repeats))
        report["train_tokens_per_s"] = a.train_batch * a.train_len / t
    report["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        report["peak_gpu_mem_mb"] = torch.cuda.max_memory_reserved() / 2**20
    report["torch"] = torch.__version__
    report["threads"] = torch.get_num_threads()
    if a.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(k, v)


if __name__ == "__main__":
    main()
