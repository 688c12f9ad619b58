// The ONNX schema comes from the `onnx` wheel on PyPI (scripts/setup.sh extracts it to
// .venv/onnx/onnx.proto); it is not committed. protox compiles it without protoc.
use std::path::PathBuf;

fn main() {
    let proto = std::env::var_os("TOOLKIT_ONNX_PROTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/onnx/onnx.proto"));
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=TOOLKIT_ONNX_PROTO");
    if !proto.exists() {
        panic!(
            "ONNX schema not found at {}: run scripts/setup.sh (it extracts onnx.proto from the PyPI onnx wheel), or set TOOLKIT_ONNX_PROTO",
            proto.display()
        );
    }
    let include = proto.parent().expect("proto path has a parent");
    let descriptors = protox::compile([&proto], [include]).expect("compile onnx.proto");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("generate ONNX messages");
}
