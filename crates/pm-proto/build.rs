//! Compiles `proto/pm/v1/*.proto` with `protox` (pure Rust), so no system `protoc` is needed,
//! into prost types and their proto3 JSON mapping (pbjson).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("pm/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    println!("cargo:rerun-if-changed={}", root.join("pm/v1").display());

    let descriptors = protox::compile(&files, [&root])?;
    let encoded = prost::Message::encode_to_vec(&descriptors);
    prost_build::Config::new()
        // An error carries a whole entity only for CONFLICT: keep `Error` small on the stack.
        .boxed(".pm.v1.Error.current")
        .compile_fds(descriptors)?;
    // The proto3 JSON mapping (camelCase fields, enum names, 64-bit integers as strings) for
    // tools that speak JSON, such as `pm-server client`.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .build(&[".pm.v1"])?;
    Ok(())
}
