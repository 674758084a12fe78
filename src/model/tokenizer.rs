//! The model's tokenizer, built from the GGUF's own metadata (`tokenizer.ggml.*`) with the `tokenizers`
//! crate: byte-level BPE from the vocabulary and merges, llama.cpp's pre-tokenizer for the file's
//! `tokenizer.ggml.pre`, and control tokens registered as special tokens so `<|im_start|>` and friends in
//! the text encode to their ids (as `llama-tokenize` does by default).
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` with pre-types whose llama.cpp regexes are "\p{N}" followed
//! by the GPT-2 regex (`smollm`, among others; llama.cpp `src/llama-vocab.cpp`), which is HF's
//! `Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=false, use_regex=true)]`.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, TokenizerImpl};

use crate::error::ModelError;
use crate::model::gguf::{GgufFile, MetaValue};

/// Pre-tokenizer types (`tokenizer.ggml.pre`) that llama.cpp splits with "\p{N}" then the GPT-2 regex.
pub const SUPPORTED_PRE_TYPES: [&str; 5] =
    ["smollm", "codeshell", "exaone", "minerva-7b", "mellum2"];

/// llama.cpp's `llama_token_type` values in `tokenizer.ggml.token_type`.
const TOKEN_TYPE_UNKNOWN: i64 = 2;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

type HfTokenizer = TokenizerImpl<
    BPE,
    tokenizers::NormalizerWrapper,
    PreTokenizerWrapper,
    tokenizers::PostProcessorWrapper,
    tokenizers::DecoderWrapper,
>;

/// A byte-level BPE tokenizer equivalent to llama.cpp's for the same GGUF.
pub struct Tokenizer {
    inner: HfTokenizer,
    vocab_size: usize,
    bos: Option<u32>,
    eos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

fn err(detail: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(detail.to_string())
}

fn missing(key: &str) -> ModelError {
    ModelError::MissingMetadata { key: key.into() }
}

fn meta_str<'a>(gguf: &'a GgufFile, key: &str) -> Result<&'a str, ModelError> {
    gguf.meta(key)
        .and_then(MetaValue::as_str)
        .ok_or_else(|| missing(key))
}

fn meta_array<'a>(gguf: &'a GgufFile, key: &str) -> Result<&'a [MetaValue], ModelError> {
    gguf.meta(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| missing(key))
}

fn meta_id(gguf: &GgufFile, key: &str) -> Option<u32> {
    gguf.meta(key)
        .and_then(MetaValue::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

/// A token type as a signed integer (GGUF stores them as i32).
fn token_type(v: &MetaValue) -> Option<i64> {
    match *v {
        MetaValue::I32(t) => Some(t.into()),
        _ => v.as_u64().and_then(|t| i64::try_from(t).ok()),
    }
}

impl Tokenizer {
    /// Build the tokenizer from `tokenizer.ggml.{model,pre,tokens,token_type,merges}` and the special ids.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, ModelError> {
        let model = meta_str(gguf, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer.ggml.model is `{model}`; only byte-level BPE (`gpt2`) is supported"
            )));
        }
        let pre = meta_str(gguf, "tokenizer.ggml.pre")?;
        if !SUPPORTED_PRE_TYPES.contains(&pre) {
            return Err(err(format!(
                "tokenizer.ggml.pre is `{pre}`; supported pre-tokenizers: {}",
                SUPPORTED_PRE_TYPES.join(", ")
            )));
        }

        let tokens: Vec<&str> = meta_array(gguf, "tokenizer.ggml.tokens")?
            .iter()
            .map(|t| t.as_str().ok_or_else(|| missing("tokenizer.ggml.tokens")))
            .collect::<Result<_, _>>()?;
        let types: Vec<i64> = meta_array(gguf, "tokenizer.ggml.token_type")?
            .iter()
            .map(|t| token_type(t).ok_or_else(|| missing("tokenizer.ggml.token_type")))
            .collect::<Result<_, _>>()?;
        if types.len() != tokens.len() {
            return Err(err(format!(
                "{} tokens but {} token types",
                tokens.len(),
                types.len()
            )));
        }
        let merges = meta_array(gguf, "tokenizer.ggml.merges")?
            .iter()
            .map(|m| {
                let m = m.as_str().ok_or_else(|| missing("tokenizer.ggml.merges"))?;
                split_merge(m).ok_or_else(|| {
                    err(format!(
                        "merge `{m}` is not two tokens separated by a space"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let vocab_size = tokens.len();
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| err("vocabulary larger than u32"))?;
            if vocab.insert(token.to_string(), id).is_some() {
                return Err(err(format!(
                    "token `{token}` appears twice in the vocabulary"
                )));
            }
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(err)?;

        let mut inner: HfTokenizer = TokenizerImpl::new(bpe);
        let digits = Digits::new(true);
        let byte_level = ByteLevel::new(false, true, true);
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            digits.into(),
            byte_level.into(),
        ]))));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // llama.cpp splits the text on control, user-defined and unknown tokens before BPE; control and
        // unknown ones only when parsing special tokens (which `encode` does), user-defined ones always.
        let of_type = |wanted: &[i64], special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(_, ty)| wanted.contains(ty))
                .map(|(text, _)| AddedToken::from(*text, special).normalized(false))
                .collect()
        };
        inner
            .add_special_tokens(of_type(&[TOKEN_TYPE_CONTROL, TOKEN_TYPE_UNKNOWN], true))
            .map_err(err)?;
        inner
            .add_tokens(of_type(&[TOKEN_TYPE_USER_DEFINED], false))
            .map_err(err)?;
        if inner.get_vocab_size(true) != vocab_size {
            return Err(err(
                "a special token is not in the vocabulary (it would get a new id)",
            ));
        }

        Ok(Tokenizer {
            inner,
            vocab_size,
            bos: meta_id(gguf, "tokenizer.ggml.bos_token_id"),
            eos: meta_id(gguf, "tokenizer.ggml.eos_token_id"),
        })
    }

    /// Token ids of `text`, without BOS. Special-token strings in the text (e.g. `<|im_start|>`)
    /// become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self.inner.encode_fast(text, false).map_err(err)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included. Byte sequences that are not valid UTF-8 (a token
    /// sequence cut inside a character) come out as U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(err(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.vocab_size
            )));
        }
        self.inner.decode(ids, false).map_err(err)
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

    /// The token string for `id` (byte-level form, e.g. `Ġthe`).
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// `"a b"` → `("a", "b")`, splitting at the first space after the first character, as llama.cpp does.
fn split_merge(merge: &str) -> Option<(String, String)> {
    let first_len = merge.chars().next()?.len_utf8();
    let space = merge[first_len..].find(' ')? + first_len;
    let (a, b) = (&merge[..space], &merge[space + 1..]);
    (!b.is_empty()).then(|| (a.to_string(), b.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_split_at_the_first_inner_space() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ".into(), "t".into())));
        assert_eq!(split_merge("in g"), Some(("in".into(), "g".into())));
        assert_eq!(split_merge("nospace"), None);
        assert_eq!(split_merge("a "), None);
        assert_eq!(split_merge(""), None);
    }
}
