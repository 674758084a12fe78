//! The model: GGUF file, LLaMA config, tokenizer, fp32 weights, ONNX export and a reference forward.

pub mod config;
pub mod gguf;
pub mod tokenizer;
pub mod weights;

pub use config::LlamaConfig;
pub use gguf::GgufFile;
pub use tokenizer::Tokenizer;
pub use weights::LlamaWeights;
pub mod catalog;
pub mod onnx_export;
pub mod onnx_quant;
pub mod reference;
