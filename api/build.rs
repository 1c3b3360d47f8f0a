//! Fingerprints this copy of `weir-api`, so that a job plugin and the runtime that loads it can
//! check, before any Rust type crosses between them, that both were compiled from the same
//! sources by the same compiler for the same target.
//!
//! Sets, for `src/plugin.rs`:
//! - `WEIR_API_SRC`: 16 hex digits of the xxh3-64 of `Cargo.toml`, `build.rs` and every file under
//!   `src/` except hidden ones, in the byte order of their `/`-separated relative paths, each as
//!   `u64` little-endian path length, path, `u64` little-endian content length, contents. Paths are
//!   relative, so the hash does not depend on where the sources are; any change of a byte does.
//! - `WEIR_API_CFG`: 16 hex digits of the xxh3-64 of what else decides the layout of the types
//!   that cross: the target's `cfg`s, `weir-api`'s enabled features and rustc flags that change
//!   layout (`-Zrandomize-layout`, `-Zlayout-seed`).
//! - `WEIR_RUSTC_VERSION`: `rustc --version`; the build fails when it cannot be read.
//! - `WEIR_TARGET`: the target triple.
//!
//! The panic strategy is read by `cfg!(panic)` in the crate itself. Debug assertions and overflow
//! checks are left out, so that a release runtime loads a debug plugin: no type of this crate
//! changes with them (keep it so).
use std::path::Path;
use std::process::Command;
use xxhash_rust::xxh3::Xxh3;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");

    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let source_hash = source_hash(Path::new(&manifest_dir)).unwrap_or_else(|e| {
        panic!("weir-api's build script cannot read its sources in {manifest_dir} to fingerprint them: {e}")
    });
    println!("cargo:rustc-env=WEIR_API_SRC={source_hash:016x}");
    println!("cargo:rustc-env=WEIR_API_CFG={:016x}", layout_cfg_hash());

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = match Command::new(&rustc).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "weir-api's build script cannot read the compiler version: `{rustc} --version` failed with {}: {}; \
             the plugin fingerprint needs it (set RUSTC to a working rustc)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "weir-api's build script cannot run `{rustc} --version`: {e}; the plugin fingerprint needs the \
             compiler version (set RUSTC to a working rustc)"
        ),
    };
    if version.is_empty() || version.contains(';') {
        panic!("weir-api's build script got an unusable compiler version from `{rustc} --version`: {version:?}");
    }
    println!("cargo:rustc-env=WEIR_RUSTC_VERSION={version}");
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    println!("cargo:rustc-env=WEIR_TARGET={target}");
}

/// The hash of `weir-api`'s sources (see the module documentation).
fn source_hash(root: &Path) -> std::io::Result<u64> {
    let mut files = vec!["Cargo.toml".to_owned(), "build.rs".to_owned()];
    collect_files(root, "src", &mut files)?;
    files.sort();
    let mut hasher = Xxh3::new();
    for relative in &files {
        let contents = std::fs::read(root.join(relative))?;
        hasher.update(&(relative.len() as u64).to_le_bytes());
        hasher.update(relative.as_bytes());
        hasher.update(&(contents.len() as u64).to_le_bytes());
        hasher.update(&contents);
    }
    Ok(hasher.digest())
}

/// Appends the `/`-separated paths (relative to `root`) of the files under `root/dir`, skipping
/// hidden files and directories (editor swap files, `.DS_Store`).
fn collect_files(root: &Path, dir: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(dir))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(std::io::Error::other(format!("{dir}/{} is not valid UTF-8", name.to_string_lossy())));
        };
        if name.starts_with('.') {
            continue;
        }
        let relative = format!("{dir}/{name}");
        if std::fs::metadata(entry.path())?.is_dir() {
            collect_files(root, &relative, out)?;
        } else {
            out.push(relative);
        }
    }
    Ok(())
}

/// The hash of the target `cfg`s, enabled features and layout flags (see the module documentation).
fn layout_cfg_hash() -> u64 {
    let mut inputs: Vec<String> = std::env::vars()
        .filter(|(name, _)| name.starts_with("CARGO_CFG_TARGET_") || name.starts_with("CARGO_FEATURE_"))
        // Target features (SIMD extensions) change code generation, not the layout of the types
        // that cross; a runtime built for a newer CPU may load a plugin built for the baseline.
        .filter(|(name, _)| name != "CARGO_CFG_TARGET_FEATURE")
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    let rustflags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    inputs.extend(rustflags.split('\x1f').filter(|flag| flag.contains("layout")).map(|flag| format!("flag={flag}")));
    inputs.sort();
    let mut hasher = Xxh3::new();
    for input in &inputs {
        hasher.update(input.as_bytes());
        hasher.update(b"\n");
    }
    hasher.digest()
}
