//! llama.cpp: the engine inside Ollama. [`crate::assets::llama_cpp`] builds it from the pinned sdist;
//! the server backend drives `llama-server`, [`kld`] compares logits with `llama-perplexity`.

pub mod kld;
pub mod server;
