//! The S3 test support itself: a real moto server, driven through `object_store` as Weir's S3
//! code would be, with the storage options [`S3Server::options`] gives.

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use std::path::Path as FsPath;
use weir_tests::s3::S3Server;

const MIB: usize = 1024 * 1024;

fn store(server: &S3Server) -> AmazonS3 {
    let mut builder = AmazonS3Builder::new().with_bucket_name(server.bucket());
    for (key, value) in server.options() {
        builder = builder.with_config(key.parse::<AmazonS3ConfigKey>().expect("known option"), value);
    }
    builder.build().expect("S3 client")
}

#[test]
fn moto_server_stores_lists_and_deletes_objects() {
    let server = S3Server::start("weir-test").expect("moto S3 server");
    assert!(server.endpoint().starts_with("http://127.0.0.1:"), "{}", server.endpoint());
    assert_eq!(server.bucket(), "weir-test");
    let store = store(&server);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let small = Path::from("prefix/small.txt");
    let big = Path::from("prefix/nested/big.bin");
    let small_bytes = b"hello, weir".to_vec();
    let part1: Vec<u8> = (0..5 * MIB).map(|i| (i % 251) as u8).collect();
    let part2: Vec<u8> = (0..5 * MIB + 123).map(|i| (i % 241) as u8).collect();
    runtime.block_on(async {
        store.put(&small, PutPayload::from(small_bytes.clone())).await.expect("put");
        let mut upload = store.put_multipart(&big).await.expect("start multipart upload");
        upload.put_part(PutPayload::from(part1.clone())).await.expect("part 1");
        upload.put_part(PutPayload::from(part2.clone())).await.expect("part 2");
        upload.complete().await.expect("complete multipart upload");
    });

    let expected = vec![
        ("prefix/nested/big.bin".to_owned(), (part1.len() + part2.len()) as u64),
        ("prefix/small.txt".to_owned(), small_bytes.len() as u64),
    ];
    assert_eq!(server.list("prefix").unwrap(), expected);
    assert_eq!(server.list("").unwrap(), expected);
    assert_eq!(server.list("prefix/nested").unwrap(), expected[..1]);
    assert_eq!(server.list("other").unwrap(), []);

    runtime.block_on(async {
        let got = store.get(&small).await.expect("get").bytes().await.expect("read");
        assert_eq!(&got[..], &small_bytes[..]);
        let got = store.get(&big).await.expect("get").bytes().await.expect("read");
        assert!(got[..part1.len()] == part1[..] && got[part1.len()..] == part2[..], "multipart object differs");
        store.delete(&small).await.expect("delete");
        store.delete(&big).await.expect("delete");
    });
    assert_eq!(server.list("prefix").unwrap(), []);
}

#[test]
fn missing_moto_server_fails_with_a_setup_hint() {
    let err = S3Server::start_with(FsPath::new("/nonexistent"), "weir-test").expect_err("no moto_server there");
    let message = format!("{err:#}");
    assert!(message.contains("./scripts/setup.sh") && message.contains("/nonexistent"), "{message}");
}

#[test]
fn a_checkpoint_bucket_that_does_not_exist_is_refused_at_submission() {
    use weir_tests::cluster::Cluster;
    use weir_tests::harness::artifact;
    let server = S3Server::start("weir").expect("moto S3 server");
    let env: Vec<(String, String)> = server.options().into_iter().map(|(k, v)| (k.to_ascii_uppercase(), v)).collect();
    let mut cluster = Cluster::start_with_env(&[], &[("tm-1", 1)], &env);
    cluster.wait_for_taskmanagers(&["tm-1"]);
    let nexmark = artifact("libweir_example_nexmark.so");
    let run = |dir: &str| {
        cluster.weir(&[
            "run",
            nexmark.to_str().unwrap(),
            "--checkpoint-interval",
            "1s",
            "--checkpoint-dir",
            dir,
            "--",
            "--query",
            "wcount",
            "--events",
            "1000",
            "--sink",
            "blackhole",
        ])
    };
    let refused = run("s3://missing-bucket/checkpoints");
    assert_eq!(refused.code, Some(2), "{refused:?}");
    let stderr = refused.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("s3://missing-bucket/checkpoints is not writable"), "{stderr}");
    let jobs = cluster.weir_json(&["list", "-a"]);
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "nothing was submitted: {jobs}");

    // The bucket that exists takes the job; the write probe leaves nothing behind.
    let accepted = run("s3://weir/checkpoints");
    assert_eq!(accepted.code, Some(0), "{accepted:?}");
    let job = weir_tests::cluster::submitted_job_id(&accepted);
    let (status, config) = cluster.rest_get(&format!("/jobs/{job}/checkpoints/config"));
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["interval_ms"], 1000, "{config}");
    assert_eq!(config["timeout_ms"], 600_000, "{config}");
    assert_eq!(config["retained"], 1, "{config}");
    assert_eq!(config["state_backend"], "heap", "{config}");
    assert_eq!(config["checkpoint_storage"], format!("s3://weir/checkpoints/{job}"), "{config}");
    assert!(
        server.list("checkpoints").unwrap().iter().all(|(key, _)| !key.contains("_weir-write-probe")),
        "{:?}",
        server.list("checkpoints")
    );
}

/// Jobmanager leader election on S3 (moto): conditional creates let exactly one of several
/// concurrent claimants get an epoch, a standby waits while the leader renews and takes over
/// once the leader falls silent, and the silent leader then learns it was deposed.
#[test]
fn leader_election_works_on_s3_conditional_writes() {
    use std::time::Duration;
    use weir_jobmanager::ha::{LeaderElection, LeaderInfo, LeadershipLost, LeaseTiming};
    use weir_runtime::storage::{Storage, StorageConfig};
    let server = S3Server::start("weir").expect("moto S3 server");
    let config = StorageConfig { url: "s3://weir/cluster".into(), options: server.options().into_iter().collect() };
    let storage = Storage::open(&config).expect("S3 storage");
    let timing = LeaseTiming {
        // A deadline that a loaded machine does not stall a write to moto past.
        lease: Duration::from_millis(2000),
        renew_interval: Duration::from_millis(100),
        renew_deadline: Duration::from_millis(1500),
    };
    let candidate = |id: &str| {
        let info = LeaderInfo { id: id.into(), rest_url: format!("http://{id}"), rpc_url: format!("http://{id}") };
        LeaderElection::new(storage.clone(), info, timing)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let claims: Vec<_> = (0..6)
            .map(|i| {
                let storage = storage.clone();
                tokio::spawn(async move {
                    storage.put_if_absent(&storage.url_of("claims/one"), format!("{i}").into()).await.unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for claim in claims {
            won += usize::from(claim.await.unwrap());
        }
        assert_eq!(won, 1, "exactly one conditional create wins on S3");

        let a = candidate("a").acquire().await;
        assert_eq!(a.epoch(), 1);
        let holding = tokio::spawn({
            let a = a.clone();
            async move { a.hold().await }
        });
        let b = candidate("b");
        assert!(tokio::time::timeout(Duration::from_secs(3), b.acquire()).await.is_err(), "a live leader was replaced");
        holding.abort();
        let b = b.acquire().await;
        assert_eq!(b.epoch(), 2);
        assert_eq!(a.hold().await, LeadershipLost::Deposed { epoch: 2 });
        assert_eq!(candidate("c").current().await.unwrap().map(|(e, l)| (e, l.id)), Some((2, "b".into())));
    });
}

/// A jobmanager's storage on S3 keeps the uploaded plugins too, so that a standby that takes over
/// (another machine, another pod) has them.
#[test]
fn uploaded_plugins_are_kept_in_s3() {
    use bytes::Bytes;
    use weir_jobmanager::artifacts::{PluginStore, sha256_hex};
    use weir_runtime::JobArtifact;
    use weir_runtime::storage::StorageConfig;
    let server = S3Server::start("weir").expect("moto S3 server");
    let config = StorageConfig { url: "s3://weir/cluster".into(), options: server.options().into_iter().collect() };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sha256 = runtime.block_on(async {
        let leader_cache = tempfile::tempdir().unwrap();
        let plugins = PluginStore::new(&config, leader_cache.path().to_owned()).expect("a plugin store on S3");
        let bytes = Bytes::from_static(b"the plugin's bytes");
        let (_, newly_stored) = plugins.put(bytes.clone()).await.unwrap();
        assert!(newly_stored);
        assert!(!plugins.put(bytes.clone()).await.unwrap().1, "stored once");
        sha256_hex(&bytes)
    });
    let key = format!("cluster/plugins/{sha256}.so");
    assert_eq!(server.get(&key).unwrap(), b"the plugin's bytes".to_vec(), "in the bucket");
    runtime.block_on(async {
        // Another jobmanager (empty cache) materializes it from the bucket.
        let bytes = Bytes::from_static(b"the plugin's bytes");
        let standby_cache = tempfile::tempdir().unwrap();
        let standby = PluginStore::new(&config, standby_cache.path().to_owned()).unwrap();
        let JobArtifact::Stored { path, .. } = standby.artifact(&sha256).await.unwrap() else {
            panic!("a stored artifact")
        };
        assert_eq!(std::fs::read(path).unwrap(), bytes.to_vec());
        standby.delete(&sha256).await.unwrap();
    });
    assert!(server.get(&key).is_err(), "deleted from the bucket");
}
