//! The plugin boundary with a real plugin: compiled by cargo in a temporary workspace against a
//! copy of `weir-api`, then opened by the runtime's loader.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use weir_api::graph::ChainSpec;
use weir_api::plugin::{fingerprint, fingerprint_differences};
use weir_api::runtime::TaskInfo;
use weir_runtime::{Error, JobArtifact, LoadedJob};
use xxhash_rust::xxh3::Xxh3;

/// The workspace root (this crate's parent directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("runtime/ has a parent").to_owned()
}

/// The value of field `name` of a fingerprint.
fn field<'a>(fingerprint: &'a str, name: &str) -> &'a str {
    fingerprint
        .split(';')
        .find_map(|f| f.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no field {name} in {fingerprint}"))
}

/// The hash of the `weir-api` sources in `api`, computed here as `api/build.rs` documents it
/// (xxh3-64 over `Cargo.toml`, `build.rs` and the non-hidden files under `src/`, in the order of
/// their relative paths, each as length-prefixed path and contents).
fn source_hash(api: &Path) -> String {
    fn walk(root: &Path, dir: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name.starts_with('.') {
                continue;
            }
            let relative = format!("{dir}/{name}");
            if entry.path().is_dir() { walk(root, &relative, out) } else { out.push(relative) }
        }
    }
    let mut files = vec!["Cargo.toml".to_owned(), "build.rs".to_owned()];
    walk(api, "src", &mut files);
    files.sort();
    let mut hasher = Xxh3::new();
    for relative in files {
        let contents = std::fs::read(api.join(&relative)).unwrap();
        hasher.update(&(relative.len() as u64).to_le_bytes());
        hasher.update(relative.as_bytes());
        hasher.update(&(contents.len() as u64).to_le_bytes());
        hasher.update(&contents);
    }
    format!("{:016x}", hasher.digest())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The test job: its map function holds a value whose drop writes the file `--marker` names,
/// then panics.
const JOB: &str = r#"use weir_api::prelude::*;

struct PanicsOnDrop(String);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"dropped");
        panic!("the test job's value panics when dropped");
    }
}

fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> weir_api::Result<()> {
    let held = PanicsOnDrop(args.get("marker").unwrap_or_default().to_owned());
    env.from_collection(vec![1_i64])
        .uid("numbers")
        .map(move |x: i64| {
            std::hint::black_box(&held);
            x
        })
        .sink_to_blackhole();
    Ok(())
}

weir_api::export_job!(build);
"#;

/// Writes a workspace at `dir` with a copy of `weir-api` (which `edit` may change) and the test
/// job as plugin `name`, with this workspace's package settings, dependency versions
/// (`Cargo.lock`), lints and profiles, so that only what `edit` changes differs.
fn write_workspace(dir: &Path, name: &str, edit: impl FnOnce(&Path)) {
    let root = workspace_root();
    let api = dir.join("weir-api");
    std::fs::create_dir_all(&api).unwrap();
    for file in ["Cargo.toml", "build.rs"] {
        std::fs::copy(root.join("api").join(file), api.join(file)).unwrap();
    }
    copy_dir(&root.join("api/src"), &api.join("src"));
    edit(&api);

    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml")).unwrap().parse().unwrap();
    let workspace = manifest["workspace"].as_table().unwrap();
    let mut dependencies = workspace["dependencies"].as_table().unwrap().clone();
    // The other crates of this workspace are not copied; weir-api is, next to the plugin.
    dependencies.retain(|_, spec| spec.get("path").is_none());
    let mut weir_api = workspace["dependencies"]["weir-api"].as_table().unwrap().clone();
    weir_api.insert("path".into(), "weir-api".into());
    dependencies.insert("weir-api".into(), weir_api.into());
    let mut copy = toml::Table::new();
    copy.insert("resolver".into(), workspace["resolver"].clone());
    copy.insert("members".into(), toml::Value::Array(vec!["weir-api".into(), "plugin".into()]));
    for table in ["package", "lints"] {
        copy.insert(table.into(), workspace[table].clone());
    }
    copy.insert("dependencies".into(), dependencies.into());
    let mut manifest_copy = toml::Table::new();
    manifest_copy.insert("workspace".into(), copy.into());
    manifest_copy.insert("profile".into(), manifest["profile"].clone());
    std::fs::write(dir.join("Cargo.toml"), toml::to_string(&manifest_copy).unwrap()).unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let plugin = dir.join("plugin");
    std::fs::create_dir_all(plugin.join("src")).unwrap();
    std::fs::write(
        plugin.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition.workspace = true\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nweir-api.workspace = true\n"
        ),
    )
    .unwrap();
    std::fs::write(plugin.join("src/lib.rs"), JOB).unwrap();
}

/// Builds plugin `name` of the workspace at `dir` (offline: every dependency is this
/// workspace's, already downloaded) into `target`, and returns the library's path.
///
/// `target` is the test's own (deleted with it): this workspace's shared one would keep the
/// artifacts of every run's copy of weir-api, and make the test wait for any build holding it.
fn build_plugin(dir: &Path, name: &str, target: &Path) -> PathBuf {
    let started = Instant::now();
    let out = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet", "-p", name])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build of the test plugin {name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("built the test plugin {name} in {:.1?}", started.elapsed());
    let file = format!("{}{}{}", std::env::consts::DLL_PREFIX, name.replace('-', "_"), std::env::consts::DLL_SUFFIX);
    target.join("debug").join(file)
}

/// One plugin is built against a copy of `weir-api` with a comment added, the other against an
/// unchanged copy; both in one target directory, so that the dependencies are compiled once.
#[test]
fn a_plugin_built_against_other_weir_api_sources_of_the_same_version_is_refused_naming_both_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let other = dir.path().join("other");
    write_workspace(&other, "weir-test-job-other-api", |api| {
        // A harmless change: the same version, the same types, other sources.
        let lib = api.join("src/lib.rs");
        let mut source = std::fs::read_to_string(&lib).unwrap();
        source.push_str("\n// Another commit of weir-api, with the same version number.\n");
        std::fs::write(&lib, source).unwrap();
    });
    let refused = build_plugin(&other, "weir-test-job-other-api", &target);
    let same = dir.path().join("same");
    write_workspace(&same, "weir-test-job-same-api", |_| {});
    let loaded = build_plugin(&same, "weir-test-job-same-api", &target);

    let err = LoadedJob::load(&JobArtifact::Plugin(refused.clone())).unwrap_err();
    let message = err.to_string();
    let Error::FingerprintMismatch { expected, found, differing, .. } = &err else {
        panic!("expected a fingerprint mismatch, got: {message}");
    };
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.contains(refused.to_str().unwrap()), "{message}");
    assert!(message.contains(found.as_str()) && message.contains(expected.as_str()), "{message}");
    assert!(message.contains("their fingerprints differ in api-src:"), "{message}");
    assert!(err.is_user_error());
    assert_eq!(expected, fingerprint());
    // Same ABI, version, compiler, target, cfgs and panic strategy: only the sources differ.
    assert_eq!(fingerprint_differences(found, expected), ["api-src"], "{message}");
    assert_eq!(differing, "api-src");
    assert_eq!(field(found, "weir-api"), env!("CARGO_PKG_VERSION"));
    // Each side's hash is the hash of its sources' contents, wherever they are.
    assert_eq!(field(expected, "api-src"), source_hash(&workspace_root().join("api")), "{message}");
    assert_eq!(field(found, "api-src"), source_hash(&other.join("weir-api")), "{message}");

    // The same sources elsewhere: loaded.
    let job = LoadedJob::load(&JobArtifact::Plugin(loaded)).unwrap();
    user_drops_that_panic_stay_in_the_plugin(&job, dir.path());
}

/// The graph and a chain of the test job share its map function, whose held value panics when
/// dropped: whichever the runtime drops last runs that drop. Unguarded, the plugin's panic would
/// unwind into this process's frames, whose `std` cannot catch it, and abort the test.
fn user_drops_that_panic_stay_in_the_plugin(job: &LoadedJob, dir: &Path) {
    let spec = ChainSpec { head: 0, nodes: vec![0, 1, 2], chained_edges: vec![0, 1], outputs: Vec::new() };
    let info = TaskInfo {
        job_id: "job".into(),
        job_name: "job".into(),
        task_name: "task".into(),
        subtask: 0,
        parallelism: 1,
        max_parallelism: 128,
        attempt: 0,
        heap_state: true,
    };
    for graph_last in [true, false] {
        let marker = dir.join(format!("dropped-graph-last-{graph_last}"));
        let graph = job.build(&["--marker".to_owned(), marker.to_str().unwrap().to_owned()]).unwrap();
        let chain = job.instantiate(&graph, &spec, &info).unwrap();
        if graph_last {
            drop(chain);
            assert!(!marker.exists());
            drop(graph);
        } else {
            drop(graph);
            assert!(!marker.exists());
            drop(chain);
        }
        assert!(marker.exists(), "the held value was dropped (graph last: {graph_last})");
    }
}
