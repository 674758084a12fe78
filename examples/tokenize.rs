//! Print the token ids of each argument (one line each), e.g. to compare with `llama-tokenize`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = infergate::model::catalog::default_model()?.gguf_path()?;
    let tok = infergate::model::tokenizer::Tokenizer::from_gguf(
        &infergate::model::GgufFile::open(&path)?,
    )?;
    for text in std::env::args().skip(1) {
        println!("{:?}", tok.encode(&text)?);
    }
    Ok(())
}
