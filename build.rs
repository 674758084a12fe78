//! Compiles ONNX's own schema (`proto/onnx.proto`, copied verbatim from the PyPI `onnx==1.20.1` wheel)
//! into Rust types with prost. protox is a pure-Rust protobuf compiler, so no `protoc` is needed.
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["proto/onnx.proto"], ["proto"]).expect("proto/onnx.proto must compile");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost code generation for onnx.proto");
}
