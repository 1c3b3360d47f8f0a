//! What every exactly-once test checks at the end of a job: the committed output against the
//! reference implementation, and the checkpoint storage holding only what the retained
//! checkpoints use.

use crate::cluster::Cluster;
use crate::harness::read_lines;
use crate::reference;
use crate::s3::S3Server;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use weir_runtime::checkpoint::CheckpointMetadata;

/// Asserts that the committed output in `output` is the reference output of nexmark `query` over
/// `events` events, line for line (as multisets: nothing lost, nothing duplicated).
///
/// # Panics
/// When it is not, with a sample of missing and unexpected lines and the cluster's logs.
pub fn assert_output_is_the_reference(output: &Path, query: &str, events: u64, cluster: &Cluster) {
    assert_same_lines(query, read_lines(output), reference::nexmark(query, events), &cluster.logs());
}

/// Asserts that `actual` and `expected` hold the same lines as many times each (in any order).
///
/// # Panics
/// When they do not: how many lines are missing, unexpected or duplicated, with a few of each,
/// then `context` (logs).
pub fn assert_same_lines(what: &str, mut actual: Vec<String>, mut expected: Vec<String>, context: &str) {
    actual.sort_unstable();
    expected.sort_unstable();
    if actual == expected {
        return;
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &expected {
        *counts.entry(line).or_insert(0) += 1;
    }
    for line in &actual {
        *counts.entry(line).or_insert(0) -= 1;
    }
    let missing: Vec<&str> = counts.iter().filter(|(_, n)| **n > 0).map(|(l, _)| *l).collect();
    let extra: Vec<&str> = counts.iter().filter(|(_, n)| **n < 0).map(|(l, _)| *l).collect();
    let expected_set: BTreeSet<&String> = expected.iter().collect();
    let duplicated = actual.windows(2).filter(|w| w[0] == w[1] && expected_set.contains(&w[0])).count();
    panic!(
        "{what}: {} lines, expected {}: {} missing (e.g. {:?}), {} unexpected (e.g. {:?}), {duplicated} duplicated\n{context}",
        actual.len(),
        expected.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
    );
}

/// Asserts (waiting up to 10 s for the final sweep) that the bucket holds, under
/// `checkpoints/<job>/`, exactly the retained checkpoints' files and the shared files their
/// metadata references; `rocksdb`: they must reference some (incremental SST files).
///
/// # Panics
/// When files of other checkpoints or unreferenced shared files remain, or referenced ones are
/// missing.
pub fn assert_only_retained_checkpoint_files(cluster: &Cluster, s3: &S3Server, job: &str, rocksdb: bool) {
    let report = cluster.checkpoints(job);
    let retained: Vec<u64> = report["retained"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(!retained.is_empty(), "{report}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let objects = s3.list(&format!("checkpoints/{job}")).expect("list the bucket");
        let mut referenced = BTreeSet::new();
        for id in &retained {
            let bytes = s3.get(&format!("checkpoints/{job}/chk-{id}/_metadata")).expect("retained metadata");
            let metadata = CheckpointMetadata::decode(&bytes).expect("retained metadata decodes");
            for task in &metadata.tasks {
                for handle in task.snapshot.handles.iter().filter(|h| h.shared) {
                    referenced.insert(
                        handle.uri.strip_prefix(&format!("s3://{}/", s3.bucket())).unwrap_or(&handle.uri).to_owned(),
                    );
                }
            }
        }
        let shared: BTreeSet<String> = objects
            .iter()
            .filter(|(key, _)| key.starts_with(&format!("checkpoints/{job}/shared/")))
            .map(|(key, _)| key.clone())
            .collect();
        if rocksdb {
            assert!(
                referenced.iter().any(|u| !u.contains("/shared/final-")),
                "RocksDB checkpoints reference shared SST files"
            );
        }
        assert!(
            referenced.is_subset(&shared),
            "referenced shared files are missing: {:?}",
            referenced.difference(&shared).collect::<Vec<_>>()
        );
        let orphans: Vec<&(String, u64)> = objects
            .iter()
            .filter(|(key, _)| {
                let own = retained.iter().any(|id| key.starts_with(&format!("checkpoints/{job}/chk-{id}/")));
                !own && !key.starts_with(&format!("checkpoints/{job}/shared/"))
            })
            .collect();
        let metadata = retained
            .iter()
            .all(|id| objects.iter().any(|(k, _)| *k == format!("checkpoints/{job}/chk-{id}/_metadata")));
        let unreferenced: Vec<&String> = shared.difference(&referenced).collect();
        if orphans.is_empty() && metadata && unreferenced.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "files of checkpoints that are not retained ({retained:?}) remain: {orphans:?}, unreferenced shared files: {unreferenced:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
