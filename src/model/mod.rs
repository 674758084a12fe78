//! The model: declared models, GGUF file, LLaMA-family config, tokenizer, weights (streamed or in
//! memory), ONNX export and a reference forward.

pub mod config;
pub mod ggml;
pub mod gguf;
pub mod tokenizer;
pub mod weights;

pub use config::LlamaConfig;
pub use gguf::GgufFile;
pub use tokenizer::Tokenizer;
pub use weights::LlamaWeights;
pub mod catalog;
pub mod declared;
pub mod gguf_writer;
pub mod onnx_export;
pub mod onnx_external;
pub mod onnx_graph;
pub mod onnx_quant;
pub mod provision;
pub mod reference;
pub mod tensors;
