//! Records the compiler and target this copy of `weir-api` is built with, so that a job plugin and
//! the runtime that loads it can compare fingerprints before any Rust type crosses between them.
use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=WEIR_RUSTC_VERSION={version}");
    println!("cargo:rustc-env=WEIR_TARGET={target}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
