pub mod llama_cpp;
