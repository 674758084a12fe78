// TEMPORARY STUB (not committed): replaced by the tokenizer branch.
use super::GgufFile;
use crate::error::ModelError;
pub struct Tokenizer;
impl Tokenizer {
    pub fn from_gguf(_g: &GgufFile) -> Result<Self, ModelError> { Err(ModelError::Tokenizer("stub".into())) }
    pub fn encode(&self, _t: &str) -> Result<Vec<u32>, ModelError> { Err(ModelError::Tokenizer("stub".into())) }
}
