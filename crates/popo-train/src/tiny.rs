//! The built-in model behind `popo train` with no arguments: a character-level tokenizer and a
//! small Qwen2, both real (a `tokenizers` tokenizer.json and an HF checkpoint), so the default run
//! exercises the same loading, saving and chat-template code as a downloaded model.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
pub const EOS_TOKEN: &str = "<|endoftext|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// ChatML, as a Jinja chat template (used by `--template chat` / `qwen_math` on the tiny model).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Printable ASCII and newline: enough for the task, the prompt templates and most math text.
pub fn alphabet() -> String {
    let mut s: String = (' '..='~').collect();
    s.push('\n');
    s
}

/// The built-in character-level tokenizer: one token per ASCII character, `<unk>`, then
/// `<|endoftext|>` (EOS and pad), `<|im_start|>` and `<|im_end|>` as single special tokens.
/// It is a real `tokenizers` tokenizer, saved as tokenizer.json with checkpoints.
pub fn tokenizer() -> Result<popo_model::Tokenizer> {
    popo_model::Tokenizer::char_level(
        &alphabet(),
        &[EOS_TOKEN, IM_START, IM_END],
        Some(CHATML_TEMPLATE.to_string()),
    )
}

/// The built-in model's shape (a small Qwen2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyModel {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
}

impl Default for TinyModel {
    fn default() -> Self {
        TinyModel {
            hidden_size: 128,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            intermediate_size: 512,
        }
    }
}

impl TinyModel {
    pub fn config(&self, tokenizer: &popo_model::Tokenizer) -> Result<popo_model::ModelConfig> {
        let divides = |a: usize, b: usize| b != 0 && a / b * b == a;
        if !divides(self.hidden_size, self.num_heads)
            || !divides(self.num_heads, self.num_kv_heads)
            || !divides(self.hidden_size / self.num_heads.max(1), 2)
        {
            bail!(
                "tiny model: hidden_size must split into num_heads even-sized heads, \
                 and num_heads must be a multiple of num_kv_heads ({self:?})"
            );
        }
        let mut cfg = popo_model::ModelConfig::qwen2_tiny(
            tokenizer.vocab_size(),
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.num_kv_heads,
            self.intermediate_size,
        );
        cfg.eos_token_id = tokenizer.eos_token_id().into_iter().collect();
        cfg.max_position_embeddings = 1024;
        Ok(cfg)
    }

    /// The smallest useful shape (hidden 32, one layer): smoke runs and tests in seconds.
    pub fn micro() -> Self {
        TinyModel {
            hidden_size: 32,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            intermediate_size: 64,
        }
    }

    /// Writes a randomly initialised model of this shape, with the built-in tokenizer, as an HF
    /// checkpoint (config.json, model.safetensors, tokenizer.json) that `--model` accepts.
    /// `init_std` is the weights' standard deviation.
    pub fn save_random(&self, dir: &std::path::Path, seed: u64, init_std: f64) -> Result<()> {
        let tok = tokenizer()?;
        let cfg = self.config(&tok)?;
        let policy = crate::lm::LmPolicy::seeded(
            &cfg,
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
            seed,
            init_std,
        )?;
        policy.save_initial(dir, &tok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_is_char_level_with_single_special_tokens_and_saves() {
        let tok = tokenizer().unwrap();
        let text = "Compute 37+48*2. 48*2=96, 37+96=133. \\boxed{133}";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(ids.len(), text.chars().count());
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        for special in [EOS_TOKEN, IM_START, IM_END] {
            let id = tok.token_to_id(special).unwrap();
            assert_eq!(tok.encode(special, false).unwrap(), vec![id]);
        }
        assert_eq!(tok.eos_token_id(), tok.token_to_id(EOS_TOKEN));
        assert_eq!(tok.vocab_size(), 96 + 1 + 3);
        let chat = tok
            .apply_chat_template(&[popo_model::ChatMessage::new("user", "1+1?")], true)
            .unwrap();
        assert_eq!(
            chat,
            "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
        );
        let chat_ids = tok.encode(&chat, false).unwrap();
        assert_eq!(chat_ids[0], tok.token_to_id(IM_START).unwrap());

        let dir = tempfile::tempdir().unwrap();
        tok.save(dir.path()).unwrap();
        assert!(dir.path().join("tokenizer.json").exists());
        let back = popo_model::Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(back.encode(&chat, false).unwrap(), chat_ids);
        assert_eq!(back.eos_token_id(), tok.eos_token_id());
        assert_eq!(back.chat_template(), Some(CHATML_TEMPLATE));
    }

    #[test]
    fn tiny_model_is_small_and_consistent_with_the_tokenizer() {
        let tok = tokenizer().unwrap();
        let cfg = TinyModel::default().config(&tok).unwrap();
        assert_eq!(cfg.vocab_size, tok.vocab_size());
        assert_eq!(cfg.eos_token_id, vec![tok.eos_token_id().unwrap()]);
        let n = cfg.num_parameters();
        assert!((500_000..3_000_000).contains(&n), "{n} parameters");
        let bad = TinyModel {
            num_heads: 3,
            ..Default::default()
        };
        assert!(bad.config(&tok).is_err());
    }
}
