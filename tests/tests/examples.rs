//! The example jobs end to end: the real `weir` binary runs the compiled plugins on the local
//! mini-cluster; outputs are compared with the independent reference implementation.

use std::path::Path;
use std::time::Duration;
use weir_tests::harness::{artifact, read_lines, run_weir, tricky_text};
use weir_tests::reference;

#[test]
fn wordcount_counts_exactly_at_every_parallelism() {
    let input = tempfile::tempdir().unwrap();
    let texts: Vec<Vec<u8>> = (0..5).map(|i| tricky_text(i + 1, 2000 + 300 * i as usize)).collect();
    for (i, text) in texts.iter().enumerate() {
        std::fs::write(input.path().join(format!("file-{i}.txt")), text).unwrap();
    }
    let expected = reference::wordcount(&texts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert!(expected.len() > 10);
    let plugin = artifact("libweir_example_wordcount.so");
    for p in ["1", "2", "4"] {
        let output = tempfile::tempdir().unwrap();
        let out = output.path().join("counts");
        let result = run_weir(
            &[
                "local",
                "run",
                plugin.to_str().unwrap(),
                "-p",
                p,
                "--",
                "--input",
                input.path().to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
            Duration::from_secs(120),
        );
        assert_eq!(result.code, Some(0), "p={p}: {result:?}");
        assert!(result.stdout.contains("FINISHED"), "{}", result.stdout);
        assert!(result.stdout.contains(out.to_str().unwrap()), "the summary names the output: {}", result.stdout);
        assert_eq!(read_lines(&out), expected, "p={p}");
    }
    // A single file works as well as a directory.
    let output = tempfile::tempdir().unwrap();
    let single = input.path().join("file-0.txt");
    let result = run_weir(
        &[
            "local",
            "run",
            plugin.to_str().unwrap(),
            "-p",
            "2",
            "--",
            "--input",
            single.to_str().unwrap(),
            "--output",
            output.path().to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_eq!(read_lines(output.path()), reference::wordcount(&[&texts[0]]));
}

fn nexmark(query: &str, events: u64, p: &str, out: &Path) {
    nexmark_with(&[], query, events, p, out);
}

/// Runs Nexmark `query` in local mode with the run flags `flags`.
fn nexmark_with(flags: &[&str], query: &str, events: u64, p: &str, out: &Path) {
    let plugin = artifact("libweir_example_nexmark.so");
    let events = events.to_string();
    let mut args = vec!["local", "run", plugin.to_str().unwrap(), "-p", p];
    args.extend_from_slice(flags);
    let result = run_weir(
        &[&args[..], &["--", "--query", query, "--events", &events, "--output", out.to_str().unwrap()]].concat(),
        Duration::from_secs(300),
    );
    assert_eq!(result.code, Some(0), "{query} p={p}: {result:?}");
    assert!(result.stdout.contains(&format!("{events} records from sources")), "{}", result.stdout);
}

#[test]
fn nexmark_windows_keep_their_state_in_rocksdb_without_checkpoints() {
    // The state backend is chosen independently of checkpointing; with RocksDB the windows run
    // in the state-backend window operator through the backend's write-back cache.
    const EVENTS: u64 = 100_000;
    for query in ["wcount", "q5"] {
        let expected = reference::nexmark(query, EVENTS);
        assert!(!expected.is_empty());
        let dir = tempfile::tempdir().unwrap();
        nexmark_with(&["--state-backend", "rocksdb"], query, EVENTS, "2", dir.path());
        let lines = read_lines(dir.path());
        assert_eq!(lines.len(), expected.len(), "{query}");
        assert!(lines == expected, "{query}: output on RocksDB differs from the reference");
    }
}

#[test]
fn nexmark_queries_match_the_reference_at_every_parallelism() {
    const EVENTS: u64 = 1_000_000;
    for query in ["q0", "q1", "q2", "wcount", "q5", "q7"] {
        let expected = reference::nexmark(query, EVENTS);
        assert!(!expected.is_empty());
        for p in ["1", "2", "4"] {
            let dir = tempfile::tempdir().unwrap();
            nexmark(query, EVENTS, p, dir.path());
            let lines = read_lines(dir.path());
            assert_eq!(lines.len(), expected.len(), "{query} p={p}");
            assert!(lines == expected, "{query} p={p}: output differs from the reference");
        }
    }
}

#[test]
fn a_library_that_is_not_a_weir_job_is_refused_with_one_line() {
    let candidates =
        ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libc.so.6"];
    let library = candidates.iter().find(|p| Path::new(p).exists()).expect("libz or libc on this machine");
    let result = run_weir(&["local", "run", library, "--", "--input", "x"], Duration::from_secs(30));
    assert_eq!(result.code, Some(2), "{result:?}");
    assert!(result.stdout.is_empty());
    let stderr = result.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("is not a Weir job plugin"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_plugins_and_bad_arguments_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("job.so");
    std::fs::write(&text, "not a library").unwrap();
    let wordcount = artifact("libweir_example_wordcount.so");
    let nexmark = artifact("libweir_example_nexmark.so");
    // Below a regular file: no directory can be created there.
    let unwritable = format!("file://{}/checkpoints", text.display());
    let nexmark_with_checkpoints = |flags: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = ["local", "run", nexmark.to_str().unwrap()].map(String::from).to_vec();
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        args.extend(["--", "--query", "wcount", "--events", "10", "--sink", "blackhole"].map(String::from));
        args
    };
    let unwritable_run = {
        let mut args = nexmark_with_checkpoints(&["--checkpoint-interval", "1s"]);
        args.splice(3..3, ["--checkpoint-dir".to_owned(), unwritable.clone()]);
        args
    };
    let state_backend_typo = nexmark_with_checkpoints(&["--state-backend", "rockdb"]);
    let orphan_option = nexmark_with_checkpoints(&["--checkpoints-retained", "3"]);
    let owned_cases: Vec<(&Vec<String>, &str)> = vec![
        (&unwritable_run, "Not a directory"),
        (&state_backend_typo, "unknown state backend 'rockdb'"),
        (&orphan_option, "need a checkpoint interval"),
    ];
    for (args, needle) in owned_cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = run_weir(&args, Duration::from_secs(60));
        assert_eq!(result.code, Some(2), "{args:?}: {result:?}");
        let stderr = result.stderr.trim_end();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["local", "run", "/nonexistent/libjob.so"], "cannot load job plugin"),
        (vec!["local", "run", text.to_str().unwrap()], "cannot load job plugin"),
        (vec!["local", "run", wordcount.to_str().unwrap(), "--", "--output", "/tmp/x"], "--input is required"),
        (
            vec![
                "local",
                "run",
                nexmark.to_str().unwrap(),
                "--",
                "--query",
                "q9",
                "--events",
                "10",
                "--sink",
                "blackhole",
            ],
            "q9",
        ),
    ];
    for (args, needle) in cases {
        let result = run_weir(&args, Duration::from_secs(30));
        assert_eq!(result.code, Some(2), "{args:?}: {result:?}");
        let stderr = result.stderr.trim_end();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // -p 0 is refused by the argument parser (weir's options come before the plugin).
    let result = run_weir(&["local", "run", "-p", "0", wordcount.to_str().unwrap()], Duration::from_secs(30));
    assert_ne!(result.code, Some(0));
    assert!(result.stderr.contains("-p") || result.stderr.contains("parallelism"), "{result:?}");
}

#[test]
fn a_missing_input_fails_the_job_with_the_path_in_the_message() {
    let out = tempfile::tempdir().unwrap();
    let wordcount = artifact("libweir_example_wordcount.so");
    let result = run_weir(
        &[
            "local",
            "run",
            wordcount.to_str().unwrap(),
            "--",
            "--input",
            "/nonexistent/input.txt",
            "--output",
            out.path().to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(result.code, Some(1), "{result:?}");
    assert!(result.stderr.contains("FAILED") && result.stderr.contains("/nonexistent/input.txt"), "{}", result.stderr);
}

/// The pairs of the nexmark example's join queries over bids `1..=events`, from their
/// definitions: bid `seq` has event time `seq` ms and bidder `(seq * 104729) % 100000`; the even
/// bids join the odd bids of the same bidder group, `wjoin` in the same 10 s tumbling window
/// (group `(bidder / 7) % 1000`), `ijoin` within ±500 ms (group `(bidder / 7) % 100`). Lines
/// `left_seq,right_seq`, sorted.
fn join_reference(query: &str, events: u64) -> Vec<String> {
    let group = |seq: u64, modulus: u64| ((seq * 104_729) % 100_000 / 7) % modulus;
    let mut lines = Vec::new();
    for left in (2..=events).step_by(2) {
        for right in (1..=events).step_by(2) {
            let joined = match query {
                "wjoin" => left / 10_000 == right / 10_000 && group(left, 1000) == group(right, 1000),
                _ => left.abs_diff(right) <= 500 && group(left, 100) == group(right, 100),
            };
            if joined {
                lines.push(format!("{left},{right}"));
            }
        }
    }
    lines.sort();
    lines
}

#[test]
fn the_nexmark_join_queries_give_every_pair_once() {
    const EVENTS: u64 = 6_000;
    let plugin = artifact("libweir_example_nexmark.so");
    for query in ["wjoin", "ijoin"] {
        let expected = join_reference(query, EVENTS);
        assert!(expected.len() > 1000, "{query}: the data joins");
        // The heap backend has operators of its own for windows and interval joins; RocksDB
        // runs the generic ones.
        for (p, backend) in [("1", "heap"), ("3", "heap"), ("3", "rocksdb")] {
            let output = tempfile::tempdir().unwrap();
            let out = output.path().join(query);
            let events = EVENTS.to_string();
            let args = ["--query", query, "--events", events.as_str(), "--output", out.to_str().unwrap()];
            let mut all = vec!["local", "run", plugin.to_str().unwrap(), "-p", p, "--state-backend", backend, "--"];
            all.extend_from_slice(&args);
            let result = run_weir(&all, Duration::from_secs(120));
            assert_eq!(result.code, Some(0), "{query} p={p} {backend}: {result:?}");
            assert!(read_lines(&out) == expected, "{query} p={p} {backend}: the pairs differ from the reference");
        }
    }
}
