//! llama.cpp: the engine inside Ollama. `setup` builds it; the server backend drives `llama-server`.

pub mod kld;
pub mod server;
pub mod setup;
