//! The helm chart, run: `deploy/helm/weir` rendered by Helm's engine with HA values (2
//! jobmanagers, 2 taskmanagers, checkpoints and the leader lease in S3), each pod started as a
//! local process exactly as its rendered spec says (see `weir_tests::kube`), a job submitted
//! through the REST Service from outside, the leader SIGKILLed twice mid-run and a third leader
//! paused until it is deposed and then resumed. The job's output in Kafka is exactly the
//! reference, and the deposed leader changed nothing in storage.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weir_jobmanager::jobstore::JobRecord;
use weir_runtime::checkpoint::CheckpointMetadata;
use weir_tests::harness::{artifact, run_weir};
use weir_tests::kafka::{self, Isolation, shared_bootstrap};
use weir_tests::kube::{Manifests, Node, repo_root};
use weir_tests::reference;
use weir_tests::s3::S3Server;
use weir_tests::verify::assert_same_lines;

const NAMESPACE: &str = "weir-test";
const EVENTS: u64 = 240_000;
const RATE: u64 = 6_000;

/// `GET url`: the status and JSON body (status 0 when unreachable).
fn get(url: &str) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        match client.get(url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    })
}

/// Polls `check` every 200 ms until it gives a value, at most `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, node: &Node, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}\n{}", node.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The jobmanager pod that leads (its `/readyz` says `ok`; a standby's says `standby`), if
/// exactly one does.
fn leader(node: &Node) -> Option<String> {
    let leading: Vec<String> = node
        .pods(&[("app.kubernetes.io/component", "jobmanager")])
        .into_iter()
        .filter(|p| {
            let (status, body) = get(&format!("{}/readyz", node.pod_url(p, "rest")));
            status == 200 && body["status"] == "ok"
        })
        .collect();
    match leading.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The newest completed checkpoint of `job` as the REST Service answers (0: none, or no leader).
fn latest_checkpoint(rest: &str, job: &str) -> u64 {
    get(&format!("{rest}/jobs/{job}/checkpoints")).1["latest"]["completed"]["id"].as_u64().unwrap_or(0)
}

/// Kills the leader and waits for the job to complete a checkpoint under the next one; the time
/// from the kill to that checkpoint.
fn kill_leader(node: &Node, rest: &str, job: &str) -> Duration {
    let killed = wait_for("a leader", Duration::from_secs(30), node, || leader(node));
    let before = latest_checkpoint(rest, job);
    assert!(before > 0, "the job checkpoints before the kill\n{}", node.logs());
    node.signal(&killed, "KILL");
    let at = Instant::now();
    wait_for("another leader", Duration::from_secs(30), node, || leader(node).filter(|l| *l != killed));
    wait_for("a checkpoint under the new leader", Duration::from_secs(60), node, || {
        (latest_checkpoint(rest, job) > before).then_some(())
    });
    let took = at.elapsed();
    eprintln!("{killed} SIGKILLed: the job checkpoints again after {took:?}");
    took
}

/// Job records and checkpoint metadata in the bucket: key → (bytes, leader epoch).
fn leader_writes(s3: &S3Server) -> BTreeMap<String, (Vec<u8>, u64)> {
    let mut writes = BTreeMap::new();
    for (key, _) in s3.list("cluster/").expect("list the bucket") {
        let Ok(bytes) = s3.get(&key) else { continue };
        let epoch = if key.starts_with("cluster/jobs/") && key.ends_with(".json") {
            JobRecord::decode(&bytes).expect("a job record").leader_epoch
        } else if key.ends_with("/_metadata") {
            CheckpointMetadata::decode(&bytes).expect("checkpoint metadata").leader_epoch
        } else {
            continue;
        };
        writes.insert(key, (bytes, epoch));
    }
    writes
}

/// The highest claimed leader epoch (`ha/epoch-<n>` objects).
fn highest_epoch(s3: &S3Server) -> u64 {
    s3.list("cluster/ha/")
        .expect("list the lease")
        .iter()
        .filter_map(|(key, _)| key.rsplit('/').next()?.strip_prefix("epoch-")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn the_chart_runs_an_exactly_once_job_through_two_leader_kills_and_a_deposed_leader() {
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    kafka::create_topic(shared_bootstrap(), "chart-counts", 3).unwrap();
    let values = json!({
        "storage": {
            "url": "s3://weir/cluster",
            "endpoint": s3.endpoint(),
            "region": "us-east-1",
            "allowHttp": true,
            "existingSecret": "weir-s3",
        },
        "highAvailability": { "enabled": true },
        "jobmanager": { "replicas": 2 },
        "taskmanager": { "replicas": 2, "slots": 2 },
    });
    let manifests = Manifests::render(&repo_root().join("deploy/helm/weir"), &values, "weir", NAMESPACE)
        .expect("render the chart (run ./scripts/setup.sh)");
    let credentials: BTreeMap<String, String> =
        [("AWS_ACCESS_KEY_ID", "weir-test"), ("AWS_SECRET_ACCESS_KEY", "weir-test")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let secrets = BTreeMap::from([("weir-s3".to_owned(), credentials)]);
    let node = Node::start(&manifests, NAMESPACE, &secrets).expect("start the chart's pods");
    let rest = node.service_url("weir-rest", 8081);

    wait_for("a leader and two registered taskmanagers", Duration::from_secs(60), &node, || {
        let (status, body) = get(&format!("{rest}/taskmanagers"));
        (status == 200 && body["taskmanagers"].as_array().is_some_and(|t| t.len() == 2)).then_some(())
    });

    // Submitted from outside through the REST Service, as `weir run --jobmanager URL` does.
    let plugin = artifact("libweir_example_nexmark.so");
    let (events, rate) = (EVENTS.to_string(), RATE.to_string());
    let out = run_weir(
        &[
            "--jobmanager",
            &rest,
            "run",
            plugin.to_str().expect("UTF-8 path"),
            "-p",
            "2",
            "--detached",
            "--checkpoint-interval",
            "500ms",
            "--",
            "--query",
            "wcount",
            "--events",
            &events,
            "--rate",
            &rate,
            "--sink",
            "kafka",
            "--bootstrap-servers",
            shared_bootstrap(),
            "--sink-topic",
            "chart-counts",
            "--delivery",
            "exactly-once",
            "--transactional-id-prefix",
            "chart-counts",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", node.logs());
    let job = weir_tests::cluster::submitted_job_id(&out);
    wait_for("the first checkpoint", Duration::from_secs(60), &node, || {
        (latest_checkpoint(&rest, &job) > 0).then_some(())
    });

    let first = kill_leader(&node, &rest, &job);
    let second = kill_leader(&node, &rest, &job);

    // The third leader pauses (SIGSTOP) past its lease; the standby takes over; the paused one
    // resumes (SIGCONT), finds itself deposed and exits, having changed nothing.
    let paused = wait_for("a leader", Duration::from_secs(30), &node, || leader(&node));
    let paused_epoch = highest_epoch(&s3);
    let exits_before = node.exits(&paused).len();
    node.signal(&paused, "STOP");
    // Requests it sent before the pause may still land; after this, it sends nothing.
    std::thread::sleep(Duration::from_secs(1));
    let before = leader_writes(&s3);
    wait_for("a leader after the pause", Duration::from_secs(30), &node, || leader(&node).filter(|l| *l != paused));
    assert!(highest_epoch(&s3) > paused_epoch);
    let resumed_checkpoint = latest_checkpoint(&rest, &job);
    wait_for("a checkpoint under the next leader", Duration::from_secs(60), &node, || {
        (latest_checkpoint(&rest, &job) > resumed_checkpoint).then_some(())
    });
    node.signal(&paused, "CONT");
    let code = wait_for("the deposed leader's exit", Duration::from_secs(20), &node, || {
        node.exits(&paused).get(exits_before).copied()
    });
    assert_eq!(code, Some(1), "the deposed leader exits with 1\n{}", node.log(&paused));
    assert!(node.log(&paused).contains(&format!("leadership of epoch {paused_epoch} lost")), "{}", node.log(&paused));
    for (key, (bytes, epoch)) in leader_writes(&s3) {
        if epoch == paused_epoch {
            assert_eq!(
                before.get(&key).map(|(b, _)| b),
                Some(&bytes),
                "{key} was written by the deposed leader (epoch {epoch}) after it resumed"
            );
        }
    }

    let end = wait_for("the job's end", Duration::from_secs(180), &node, || {
        let (_, details) = get(&format!("{rest}/jobs/{job}"));
        let state = details["state"].as_str().unwrap_or_default().to_owned();
        ["FINISHED", "FAILED", "CANCELED"].contains(&state.as_str()).then_some(details)
    });
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", node.logs());
    let committed: Vec<String> = kafka::read_all(shared_bootstrap(), "chart-counts", Isolation::ReadCommitted)
        .expect("read the output topic")
        .iter()
        .map(kafka::ConsumedRecord::value_str)
        .collect();
    assert_same_lines(
        "wcount through two leader kills and a deposed leader",
        committed,
        reference::nexmark("wcount", EVENTS),
        &node.logs(),
    );
    eprintln!("failover (leader SIGKILL -> job checkpointing again): {first:?}, {second:?}");
}
