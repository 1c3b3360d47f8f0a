//! Generates the tonic/prost code for Weir's `.proto` files.
//!
//! Uses the `protoc` shipped by `protoc-bin-vendored`, so building needs no system `protoc`. The
//! binary is handed to prost-build through its configuration rather than the `PROTOC` environment
//! variable, which would need `unsafe { std::env::set_var(..) }` in edition 2024.

use std::error::Error;

/// Directory of the `.proto` files; also the include root, so imports read `weir/...`.
const PROTO_DIR: &str = "proto";

/// The files to compile, relative to the crate root.
const PROTOS: &[&str] = &["proto/weir/control.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    // A directory is tracked recursively, so added and removed files count as changes too.
    println!("cargo:rerun-if-changed={PROTO_DIR}");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    tonic_prost_build::configure().compile_with_config(config, PROTOS, &[PROTO_DIR])?;
    Ok(())
}
