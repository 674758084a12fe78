//! SmolLM2's tokenizer, built from the GGUF's own metadata with the `tokenizers` crate: byte-level BPE
//! over `tokenizer.ggml.tokens` + `tokenizer.ggml.merges`, with llama.cpp's `smollm` pre-tokenizer
//! (every digit alone, then the GPT-2 split) and control tokens (`token_type` 3) as special tokens.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::AddedToken;

use super::gguf::{GgufFile, MetaValue};
use crate::error::ModelError;

/// llama.cpp's token type for control tokens (`LLAMA_TOKEN_TYPE_CONTROL`).
const TOKEN_TYPE_CONTROL: i64 = 3;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
}

fn strings(gguf: &GgufFile, key: &str) -> Result<Vec<String>, ModelError> {
    let arr = gguf.meta(key).and_then(MetaValue::as_array).ok_or_else(|| ModelError::MissingMetadata { key: key.into() })?;
    arr.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| ModelError::MissingMetadata { key: key.into() })).collect()
}

impl Tokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, ModelError> {
        let model = gguf.meta("tokenizer.ggml.model").and_then(MetaValue::as_str).unwrap_or("");
        let pre = gguf.meta("tokenizer.ggml.pre").and_then(MetaValue::as_str).unwrap_or("");
        if model != "gpt2" || pre != "smollm" {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer `{model}` with pre-tokenizer `{pre}` is not implemented (this builds gpt2/smollm)"
            )));
        }
        let tokens = strings(gguf, "tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings(gguf, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| ModelError::Tokenizer(format!("malformed merge `{m}`"))))
            .collect::<Result<_, _>>()?;
        let types: Vec<i64> = gguf
            .meta("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array)
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect())
            .unwrap_or_default();
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let pre_tokenizer = Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(specials).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let id = |key: &str| gguf.meta(key).and_then(MetaValue::as_u64).map(|v| v as u32);
        Ok(Tokenizer { inner, vocab_size: tokens.len(), bos: id("tokenizer.ggml.bos_token_id"), eos: id("tokenizer.ggml.eos_token_id") })
    }

    /// Token ids of `text`; no BOS is added (the GGUF says `add_bos_token = false`); special-token
    /// strings in the text become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.inner.encode_fast(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(ModelError::Tokenizer(format!("token id {bad} is outside the vocabulary ({})", self.vocab_size)));
        }
        self.inner.decode(ids, false).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos
    }
}
