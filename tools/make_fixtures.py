#!/usr/bin/env python3
"""Builds the parity fixtures in crates/popo-model/tests/fixtures/.

Tiny random Qwen2, Qwen3 and Llama-3 checkpoints are made with transformers and
saved in Hugging Face layout, together with a tiny byte-level BPE tokenizer
trained here and a chat template. For each model, expected.json records what
transformers computes: per-token log-probs and entropies at two temperatures,
final (post-norm) hidden states, greedy continuations (single prompts and a
left-padded batch), tokenizations and chat-template renderings. The Rust tests
in crates/popo-model/tests/parity.rs must reproduce them.

Run:  tools/setup-venv.sh && tools/.venv/bin/python tools/make_fixtures.py
Deterministic: every random draw is seeded; re-running rewrites the same files
(up to float rounding differences between machines).
"""

import json
import math
import shutil
from pathlib import Path

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers import Qwen3Config, Qwen3ForCausalLM

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "popo-model" / "tests" / "fixtures"

TEMPERATURES = [1.0, 0.7]
MAX_NEW_TOKENS = 10
# Greedy parity is only meaningful when the top-2 logits are not (nearly) tied:
# f32 noise between two implementations is ~1e-5.
MIN_GREEDY_MARGIN = 1e-3

# Training text for the tokenizer, written for this script.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Solve for x: 3x + 5 = 20. Subtract 5 from both sides, then divide by 3, so x = 5.",
    "What is the sum of the first ten positive integers? The answer is 55.",
    "A train travels 120 kilometres in 2 hours; its average speed is 60 km/h.",
    "Let f(x) = x^2 - 4x + 4. Then f(x) = (x - 2)^2 and the only root is x = 2.",
    "The probability of rolling two sixes with two fair dice is 1/36.",
    "Reinforcement learning updates a policy from rewards rather than labels.",
    "Positive-only policy optimization learns from the samples that were correct.",
    "The final answer is \\boxed{42}.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "If a rectangle has sides 7 and 9, its area is 63 and its perimeter is 32.",
    "Every prime greater than 3 is one more or one less than a multiple of 6.",
    "The derivative of sin(x) is cos(x), and the integral of 1/x is ln|x| + C.",
    "You are a helpful assistant. The user asks a question and you answer it.",
    "Numbers like 3.14159 and 2.71828 appear everywhere in mathematics.",
    "Tokenizers split text into pieces; models predict the next piece.",
]

# Texts whose token ids become the parity sequences (short, medium, long).
SEQ_TEXTS = [
    "Solve 2x = 8.",
    "The area of a square with side 5 is 25, and its perimeter is 20.",
    "Let f(x) = x^2 + 1. The derivative is 2x, so f is increasing for x > 0 and the sum of "
    "the first ten positive integers is 55. The final answer is \\boxed{55}.",
]
# Prompt lengths (in tokens) used for the right-padded batch rows: row i is SEQ i.
BATCH_PROMPT_LENS = [3, 6, 2]

# Extra tokenizer checks: non-ASCII, digits, whitespace runs, special tokens in text.
TOKENIZER_TEXTS = [
    "Hello world",
    "  two  spaces\nand a newline\n\n",
    "3×4 = 12 — café, naïve, 数学",
    "x^2+y^2=z^2 and 1234567",
]

# The Qwen2.5 chat template (ChatML with a default system prompt and tool sections).
QWEN25_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# The Llama-3 (8B-Instruct style) chat template: BOS from the tokenizer config, trimmed contents.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Conversations rendered with each template: (name, messages, add_generation_prompt).
CHATS = [
    (
        "system_user_gen",
        [
            {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
            {"role": "user", "content": "What is 7 * 8?"},
        ],
        True,
    ),
    ("user_only_gen", [{"role": "user", "content": "Solve for x: 3x + 5 = 20."}], True),
    ("user_only_no_gen", [{"role": "user", "content": "  Hello, café 数学!  \n"}], False),
    (
        "multi_turn_gen",
        [
            {"role": "system", "content": "You are a careful math tutor."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "2 + 2 = 4.\n\nThe answer is \\boxed{4}."},
            {"role": "user", "content": "And 3 + 3?\nShow your work."},
        ],
        True,
    ),
    (
        "multi_turn_no_gen",
        [
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "7"},
        ],
        False,
    ),
    (
        "tool_responses",
        [
            {"role": "user", "content": "What is the weather in Paris and in Rome?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "tool", "content": "{\"city\": \"Paris\", \"temp\": 18}"},
            {"role": "tool", "content": "{\"city\": \"Rome\", \"temp\": 24}"},
            {"role": "assistant", "content": "Paris is 18 degrees and Rome is 24 degrees."},
        ],
        True,
    ),
]

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]
# The GPT-2/Qwen-style pre-tokenization split (needs look-ahead: exercises fancy-regex on the Rust side).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_tokenizer(specials, bos=None):
    """A byte-level BPE trained on CORPUS, special tokens appended after the merges (as in Qwen/Llama)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens(specials)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def save_tokenizer(tok, out_dir, chat_template, bos, eos, pad):
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def randomize_(model, seed):
    """HF init zeroes biases and sets norm weights to 1, which would hide bugs in either; draw them all.

    The scale (std 0.2) gives logits with a spread of a few units, so greedy decoding has clear winners.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def rnd(x, nd):
    if isinstance(x, list):
        return [rnd(v, nd) for v in x]
    v = round(float(x), nd)
    return 0.0 if v == 0 else v


def token_stats(logits, ids, mask, temperature):
    """Contract alignment: logprob[t] = log p(ids[t] | ids[<t]) at temperature, entropy of that distribution;
    0 at t = 0 and where mask is 0. logits: [B, T, V] f32; computed in f64 from the f32 logits."""
    lp = torch.log_softmax(logits.double() / temperature, dim=-1)  # [B, T, V]
    b, t, _ = logits.shape
    logprobs = torch.zeros(b, t, dtype=torch.float64)
    entropy = torch.zeros(b, t, dtype=torch.float64)
    pred = lp[:, :-1, :]  # [B, T-1, V] predicts positions 1..T-1
    logprobs[:, 1:] = pred.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    entropy[:, 1:] = -(pred.exp() * pred).sum(-1)
    keep = mask.double()
    keep[:, 0] = 0.0
    return logprobs * keep, entropy * keep


@torch.no_grad()
def forward_record(model, ids, mask):
    """Forward over a right-padded batch; returns logits [B, T, V] and post-norm hidden [B, T, D]."""
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    base = model.model(input_ids=ids, attention_mask=mask)
    last = out.hidden_states[-1]
    # hidden_states[-1] is the final-norm output for these architectures; check rather than assume.
    assert torch.allclose(last, base.last_hidden_state, atol=1e-6), "hidden_states[-1] is not post-norm"
    norm_in = out.hidden_states[-2]
    assert not torch.allclose(last, norm_in, atol=1e-3)
    return out.logits.float(), last.float()


@torch.no_grad()
def greedy(model, prompts, pad_id, eos_ids):
    """Left-padded greedy generation; returns per-prompt new tokens (cut after the first EOS), the
    log-prob of each chosen token (raw logits, T = 1), and the smallest top-1/top-2 logit margin."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
        return_dict_in_generate=True,
        output_logits=True,
    )
    new = out.sequences[:, width:]
    logits = torch.stack(out.logits, dim=1).float()  # [B, N, V]
    lps = torch.log_softmax(logits.double(), dim=-1)
    top2 = logits.topk(2, dim=-1).values
    results = []
    for b in range(len(prompts)):
        toks, lp, margin = [], [], math.inf
        for i in range(new.shape[1]):
            tok = int(new[b, i])
            toks.append(tok)
            lp.append(float(lps[b, i, tok]))
            margin = min(margin, float(top2[b, i, 0] - top2[b, i, 1]))
            if tok in eos_ids:
                break
        results.append({"tokens": toks, "logprobs": rnd(lp, 6), "min_top2_margin": rnd(margin, 5)})
        assert margin > MIN_GREEDY_MARGIN, f"near-tie in greedy decoding (margin {margin})"
    return ids, mask, results


def record(model, tok, pad_id, eos_ids):
    seqs = [tok.encode(t, add_special_tokens=False).ids for t in SEQ_TEXTS]
    assert len(set(len(s) for s in seqs)) == 3 and max(len(s) for s in seqs) < 100, [len(s) for s in seqs]
    exp = {"singles": []}

    for s in seqs:
        ids = torch.tensor([s])
        mask = torch.ones_like(ids)
        logits, hidden = forward_record(model, ids, mask)
        entry = {"input_ids": s, "by_temperature": []}
        for temp in TEMPERATURES:
            lp, ent = token_stats(logits, ids, mask, temp)
            entry["by_temperature"].append(
                {"temperature": temp, "logprobs": rnd(lp[0].tolist(), 7), "entropy": rnd(ent[0].tolist(), 7)}
            )
        entry["hidden"] = rnd(hidden[0].tolist(), 6)
        exp["singles"].append(entry)

    # One right-padded mixed-length batch, as TokenBatch lays it out (prompt ++ completion, then pad).
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    logits, hidden = forward_record(model, ids, mask)
    batch = {
        "prompt_lens": BATCH_PROMPT_LENS,
        "pad_id": pad_id,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "by_temperature": [],
    }
    for temp in TEMPERATURES:
        lp, ent = token_stats(logits, ids, mask, temp)
        batch["by_temperature"].append({"temperature": temp, "logprobs": rnd(lp.tolist(), 7), "entropy": rnd(ent.tolist(), 7)})
    # Real positions only: what HF leaves at padded positions is not part of the contract.
    batch["hidden"] = [rnd(hidden[b, : len(s)].tolist(), 6) for b, s in enumerate(seqs)]
    exp["right_padded_batch"] = batch

    # Greedy continuations: prompts are prefixes of the sequences, one by one and as a left-padded batch.
    prompts = [s[:n] for s, n in zip(seqs, [5, 12, 3])]
    singles = []
    for p in prompts:
        _, _, res = greedy(model, [p], pad_id, eos_ids)
        singles.append({"prompt": p, **res[0]})
    ids, mask, res = greedy(model, prompts, pad_id, eos_ids)
    for a, b in zip(singles, res):
        assert a["tokens"] == b["tokens"], "HF batched greedy differs from single greedy"
    exp["generation"] = {
        "max_new_tokens": MAX_NEW_TOKENS,
        "eos_token_ids": eos_ids,
        "pad_id": pad_id,
        "singles": singles,
        "left_padded_batch": {
            "prompts": prompts,
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "results": res,
        },
    }
    return exp


def record_tokenizer(model_dir):
    hf = AutoTokenizer.from_pretrained(str(model_dir))
    toks = [
        {"text": t, "add_special_tokens": add, "ids": hf.encode(t, add_special_tokens=add)}
        for t in TOKENIZER_TEXTS
        for add in (False, True)
    ]
    for t in toks:
        assert hf.decode(t["ids"], skip_special_tokens=True) == t["text"], t
    chats = []
    for name, messages, add_gen in CHATS:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_gen)
        ids = hf.encode(text, add_special_tokens=False)
        chats.append(
            {"name": name, "messages": messages, "add_generation_prompt": add_gen, "text": text, "ids": ids}
        )
    return toks, chats


def make_model(name, cls, cfg, tok, tok_kwargs, eos_ids, pad_id, seed, shard=False):
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    randomize_(model, seed)
    model.generation_config.eos_token_id = eos_ids
    model.generation_config.pad_token_id = pad_id
    out_dir = OUT / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    save_tokenizer(tok, out_dir, **tok_kwargs)
    if shard:
        sdir = OUT / f"{name}-sharded"
        if sdir.exists():
            shutil.rmtree(sdir)
        model.save_pretrained(str(sdir), safe_serialization=True, max_shard_size="150KB")
        save_tokenizer(tok, sdir, **tok_kwargs)
        assert (sdir / "model.safetensors.index.json").exists()

    # Reload from disk so the recorded values come from exactly the saved checkpoint.
    model = cls.from_pretrained(str(out_dir), dtype=torch.float32, attn_implementation="eager").eval()
    exp = {
        "model": name,
        "generator": {"torch": torch.__version__, "transformers": transformers.__version__},
        "config": {
            "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "tie_word_embeddings": cfg.tie_word_embeddings,
        },
        "tolerance_note": "logprobs/entropy rounded to 1e-7, hidden to 1e-6; f32 reference",
    }
    exp.update(record(model, tok, pad_id, eos_ids))
    toks, chats = record_tokenizer(out_dir)
    exp["tokenizer"] = toks
    exp["chat"] = chats
    (out_dir / "expected.json").write_text(json.dumps(exp, ensure_ascii=False, separators=(",", ":")) + "\n")
    return out_dir


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)

    qtok = build_tokenizer(QWEN_SPECIALS)
    ltok = build_tokenizer(LLAMA_SPECIALS, bos="<|begin_of_text|>")
    qn = qtok.get_vocab_size()
    ln = ltok.get_vocab_size()
    q_eos, q_pad = qtok.token_to_id("<|im_end|>"), qtok.token_to_id("<|endoftext|>")
    qkw = dict(chat_template=QWEN25_CHAT_TEMPLATE, bos=None, eos="<|im_end|>", pad="<|endoftext|>")

    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)

    # Qwen2: q/k/v bias, untied lm_head, embedding padded past the tokenizer (as Qwen does).
    qwen2_cfg = Qwen2Config(
        vocab_size=(qn + 63) // 64 * 64,
        intermediate_size=160,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=q_pad,
        eos_token_id=q_eos,
        **common,
    )
    make_model("qwen2", Qwen2ForCausalLM, qwen2_cfg, qtok, qkw, [q_eos], q_pad, seed=1, shard=True)

    # Qwen3: q_norm/k_norm, head_dim 32 != 64 / 4, tied embeddings.
    qwen3_cfg = Qwen3Config(
        vocab_size=qn,
        intermediate_size=128,
        head_dim=32,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        bos_token_id=q_pad,
        eos_token_id=q_eos,
        **common,
    )
    make_model("qwen3", Qwen3ForCausalLM, qwen3_cfg, qtok, qkw, [q_eos], q_pad, seed=2)

    # Llama 3: llama3 rope scaling (original context 64 so all three frequency bands occur at head_dim 16),
    # GQA, untied, a list of EOS ids as in Llama 3.1 instruct.
    l_bos, l_eot, l_end = (ltok.token_to_id(t) for t in ("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"))
    l_pad = ltok.token_to_id("<|finetune_right_pad_id|>")
    llama_cfg = LlamaConfig(
        vocab_size=ln,
        intermediate_size=192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        bos_token_id=l_bos,
        eos_token_id=[l_end, l_eot],
        **common,
    )
    lkw = dict(chat_template=LLAMA3_CHAT_TEMPLATE, bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>")
    make_model("llama3", LlamaForCausalLM, llama_cfg, ltok, lkw, [l_end, l_eot], l_pad, seed=3)

    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    for d in sorted(OUT.iterdir()):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        print(f"{d.name:16s} {size / 1024:8.1f} KiB")
    print(f"{'total':16s} {total / 1024:8.1f} KiB")
    assert total < 5 * 1024 * 1024, "fixtures exceed 5 MB"


if __name__ == "__main__":
    main()
