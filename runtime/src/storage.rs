//! Checkpoint storage: an `object_store` URL and the layout of a job's checkpoints under it.
//!
//! ```text
//! <root>/<job-id>/chk-<n>/_metadata           written last by the jobmanager: the checkpoint exists
//! <root>/<job-id>/chk-<n>/<vertex>-<subtask>  task-owned files of checkpoint n
//! <root>/<job-id>/shared/<file>               files shared by incremental checkpoints (ref-counted)
//! ```
//!
//! `<root>` is `file:///absolute/path` (the embedded default) or `s3://bucket/prefix`. S3 takes
//! its endpoint, region, credentials and addressing style from the standard `AWS_*` environment
//! variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`), overridden by explicit options with
//! `object_store`'s keys (`aws_endpoint`, `aws_region`, ...). Handles name files by their full URL,
//! so a checkpoint can be read by any process configured for the same store.

use crate::deployment::JobId;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Name of the file whose existence makes a checkpoint complete.
pub const METADATA_FILE: &str = "_metadata";

/// A storage failure, with the URL it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL or an option is malformed or unsupported (the user's configuration).
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// The store failed (network, permissions, missing object); retrying may help.
    #[error("{action} {url}: {message}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The object or prefix.
        url: String,
        /// The store's error chain.
        message: String,
    },
    /// The object does not exist.
    #[error("{url} does not exist")]
    NotFound {
        /// The object.
        url: String,
    },
}

/// Result with [`StorageError`].
pub type StorageResult<T> = Result<T, StorageError>;

/// Where and how to store checkpoints: a root URL and the store's options.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageConfig {
    /// `file:///absolute/path` or `s3://bucket/prefix`.
    pub url: String,
    /// `object_store` options (`aws_endpoint`, `aws_region`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_allow_http`, `aws_virtual_hosted_style_request`, ...).
    pub options: BTreeMap<String, String>,
}

/// Whether this process may change storage now (see [`fence_process_writes`]).
pub type WriteFence = Arc<dyn Fn() -> bool + Send + Sync>;

/// The fence of storages opened in this process from now on.
static PROCESS_FENCE: std::sync::OnceLock<WriteFence> = std::sync::OnceLock::new();

/// The leader epoch of the fence (0: none installed).
static PROCESS_EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The leader epoch this process writes under, stamped into what a jobmanager writes (job
/// records, checkpoint metadata) so that every write names its leader; 0 without high
/// availability.
pub fn writer_epoch() -> u64 {
    PROCESS_EPOCH.load(std::sync::atomic::Ordering::SeqCst)
}

/// Fences every storage this process opens from now on: their writes and deletes are refused
/// (an error naming the object) whenever `may_write` says no. A jobmanager with high
/// availability installs its leadership's check, so that once it is not the leader any more
/// (paused, partitioned, deposed) it changes nothing in storage; `epoch` is its leader epoch
/// ([`writer_epoch`]). Returns `false` (and changes nothing) when a fence was installed before.
pub fn fence_process_writes(epoch: u64, may_write: WriteFence) -> bool {
    let installed = PROCESS_FENCE.set(may_write).is_ok();
    if installed {
        PROCESS_EPOCH.store(epoch, std::sync::atomic::Ordering::SeqCst);
    }
    installed
}

/// Fenced writes and deletes that passed their fence and have not finished (process-wide).
static FENCED_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Waits until no fenced write or delete that passed its fence is still in flight, at most
/// `timeout`; returns whether none is. A jobmanager handing its leadership over closes its
/// fence first (so none starts any more), then waits here before it tells a standby to take
/// over: no write of the old leader lands after the new one has read the storage.
pub async fn fenced_writes_settled(timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if FENCED_IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A fenced change in flight (see [`fenced_writes_settled`]); counted until dropped.
struct InFlight(bool);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0 {
            FENCED_IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// An open object store with a root prefix.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The root URL without a trailing slash.
    root_url: String,
    root: Path,
    /// Refuses writes while it says no (see [`fence_process_writes`]).
    fence: Option<WriteFence>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("root_url", &self.root_url).finish_non_exhaustive()
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

impl Storage {
    /// Opens the store at `config.url` (a `file://` root directory is created if missing).
    ///
    /// # Errors
    /// [`StorageError::Config`] for an unsupported scheme, a relative file path, an unknown
    /// option or a directory that cannot be created.
    pub fn open(config: &StorageConfig) -> StorageResult<Self> {
        let url = config.url.trim_end_matches('/');
        let parsed = url::Url::parse(url).map_err(|e| {
            StorageError::Config(format!("'{url}' is not a URL ({e}); expected file:///path or s3://bucket/prefix"))
        })?;
        let (store, root): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| StorageError::Config(format!("'{url}' must be file:///absolute/path")))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| StorageError::Config(format!("cannot create {}: {e}", dir.display())))?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| StorageError::Config(format!("cannot open {url}: {}", chain(&e))))?;
                (Arc::new(store), Path::default())
            }
            "s3" | "s3a" => {
                let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                    StorageError::Config(format!("'{url}' names no bucket: expected s3://bucket/prefix"))
                })?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in &config.options {
                    let key: AmazonS3ConfigKey =
                        key.parse().map_err(|_| StorageError::Config(format!("unknown S3 storage option '{key}'")))?;
                    builder = builder.with_config(key, value);
                }
                let store = builder
                    .build()
                    .map_err(|e| StorageError::Config(format!("cannot configure {url}: {}", chain(&e))))?;
                let root = Path::parse(parsed.path().trim_start_matches('/'))
                    .map_err(|e| StorageError::Config(format!("invalid prefix in '{url}': {e}")))?;
                (Arc::new(store), root)
            }
            other => {
                return Err(StorageError::Config(format!(
                    "unsupported storage scheme '{other}' in '{url}' (supported: file://, s3://)"
                )));
            }
        };
        Ok(Self { store, root_url: url.to_owned(), root, fence: PROCESS_FENCE.get().cloned() })
    }

    /// A storage over `store` whose root is `root_url` (for embedding and tests: an in-memory
    /// store, or one wrapped to script faults). Paths under the root are relative to the store's
    /// own root.
    pub fn from_object_store(store: Arc<dyn ObjectStore>, root_url: &str) -> Self {
        Self {
            store,
            root_url: root_url.trim_end_matches('/').to_owned(),
            root: Path::default(),
            fence: PROCESS_FENCE.get().cloned(),
        }
    }

    /// This storage with `may_write` as its fence (see [`fence_process_writes`]).
    #[must_use]
    pub fn with_fence(mut self, may_write: WriteFence) -> Self {
        self.fence = Some(may_write);
        self
    }

    /// This storage without a fence: for the leader election itself, whose writes decide who
    /// may write.
    #[must_use]
    pub fn unfenced(mut self) -> Self {
        self.fence = None;
        self
    }

    /// Refuses a change of `url` while the fence says no; a change it lets through is counted
    /// as in flight until the returned guard drops (counted before the fence is asked, so that
    /// a change is either refused or seen by [`fenced_writes_settled`]).
    fn check_fence(&self, url: &str) -> StorageResult<InFlight> {
        let Some(may_write) = &self.fence else { return Ok(InFlight(false)) };
        FENCED_IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let in_flight = InFlight(true);
        if may_write() {
            Ok(in_flight)
        } else {
            Err(StorageError::Io {
                action: "refused to change",
                url: url.to_owned(),
                message: "this process may not write any more (a jobmanager that is not the leader any more)".into(),
            })
        }
    }

    /// Injected faults (feature `failpoints`, see [`crate::faults`]): a delay, then maybe an
    /// error for `operation`.
    async fn inject(operation: &'static str, url: &str) -> StorageResult<()> {
        if !crate::faults::ENABLED {
            return Ok(());
        }
        crate::faults::delay("storage::delay").await;
        match crate::faults::fires(operation) {
            Some(_) => Err(StorageError::Io {
                action: "injected fault in",
                url: url.to_owned(),
                message: format!("failpoint {operation}"),
            }),
            None => Ok(()),
        }
    }

    /// The root URL.
    pub fn url(&self) -> &str {
        &self.root_url
    }

    /// The URL of `relative` (slash-separated, under the root).
    pub fn url_of(&self, relative: &str) -> String {
        format!("{}/{relative}", self.root_url)
    }

    /// The path of a URL under this store's root.
    fn path_of(&self, url: &str) -> StorageResult<Path> {
        let relative = url
            .strip_prefix(&self.root_url)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorageError::Config(format!("{url} is not under the storage root {}", self.root_url)))?;
        let mut path = self.root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        Ok(path)
    }

    fn io(action: &'static str, url: &str, e: &object_store::Error) -> StorageError {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound { url: url.to_owned() },
            _ => StorageError::Io { action, url: url.to_owned(), message: chain(e) },
        }
    }

    /// Writes `bytes` at `url` (replacing what is there); the object is complete or absent.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the store fails.
    pub async fn put(&self, url: &str, bytes: Bytes) -> StorageResult<()> {
        let path = self.path_of(url)?;
        let _in_flight = self.check_fence(url)?;
        Self::inject("storage::put", url).await?;
        self.store.put(&path, PutPayload::from_bytes(bytes)).await.map_err(|e| Self::io("cannot write", url, &e))?;
        Ok(())
    }

    /// Writes `bytes` at `url` only if no object is there (a conditional put: on S3
    /// `If-None-Match: *`, on a filesystem a hard link). Returns whether this call created it:
    /// of several concurrent callers exactly one does.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the store fails or cannot write conditionally.
    pub async fn put_if_absent(&self, url: &str, bytes: Bytes) -> StorageResult<bool> {
        let path = self.path_of(url)?;
        let _in_flight = self.check_fence(url)?;
        Self::inject("storage::put", url).await?;
        let options = object_store::PutOptions::from(object_store::PutMode::Create);
        match self.store.put_opts(&path, PutPayload::from_bytes(bytes), options).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(Self::io("cannot write", url, &e)),
        }
    }

    /// Checks that objects can be written under the directory `dir_url`: writes a small probe
    /// object there and deletes it again.
    ///
    /// # Errors
    /// [`StorageError::Io`] (or another error) when the write or the delete fails.
    pub async fn check_writable(&self, dir_url: &str) -> StorageResult<()> {
        let probe = format!("{}/_weir-write-probe-{}", dir_url.trim_end_matches('/'), uuid::Uuid::new_v4().simple());
        self.put(&probe, Bytes::from_static(b"weir")).await?;
        self.delete(&probe).await
    }

    /// Reads the object at `url`.
    ///
    /// # Errors
    /// [`StorageError::NotFound`], or [`StorageError::Io`] when the store fails.
    pub async fn get(&self, url: &str) -> StorageResult<Bytes> {
        let path = self.path_of(url)?;
        Self::inject("storage::get", url).await?;
        let result = self.store.get(&path).await.map_err(|e| Self::io("cannot read", url, &e))?;
        result.bytes().await.map_err(|e| Self::io("cannot read", url, &e))
    }

    /// Deletes the object at `url`; a missing object is not an error.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the store fails.
    pub async fn delete(&self, url: &str) -> StorageResult<()> {
        let path = self.path_of(url)?;
        let _in_flight = self.check_fence(url)?;
        Self::inject("storage::delete", url).await?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::io("cannot delete", url, &e)),
        }
    }

    /// The URLs and sizes of every object under the prefix `url` (recursively), sorted.
    ///
    /// # Errors
    /// [`StorageError::Io`] when the store fails.
    pub async fn list(&self, url: &str) -> StorageResult<Vec<(String, u64)>> {
        let prefix = self.path_of(url)?;
        Self::inject("storage::list", url).await?;
        let objects: Vec<_> = match self.store.list(Some(&prefix)).try_collect().await {
            Ok(objects) => objects,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Self::io("cannot list", url, &e)),
        };
        let root = self.root.as_ref();
        let mut found: Vec<(String, u64)> = objects
            .into_iter()
            .map(|meta| {
                let full = meta.location.as_ref();
                let relative = full.strip_prefix(root).unwrap_or(full).trim_start_matches('/');
                (self.url_of(relative), meta.size)
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Deletes every object under the prefix `url`.
    ///
    /// # Errors
    /// [`StorageError::Io`] when listing or a delete fails.
    pub async fn delete_prefix(&self, url: &str) -> StorageResult<()> {
        for (object, _) in self.list(url).await? {
            self.delete(&object).await?;
        }
        Ok(())
    }
}

/// The layout of one job's checkpoints under a storage root.
#[derive(Debug, Clone)]
pub struct CheckpointLayout {
    job_url: String,
}

impl CheckpointLayout {
    /// The layout of `job` under `storage`.
    pub fn new(storage: &Storage, job: JobId) -> Self {
        Self { job_url: storage.url_of(&job.to_string()) }
    }

    /// `<root>/<job-id>`.
    pub fn job_url(&self) -> &str {
        &self.job_url
    }

    /// `<root>/<job-id>/chk-<n>`.
    pub fn checkpoint_url(&self, checkpoint: u64) -> String {
        format!("{}/chk-{checkpoint}", self.job_url)
    }

    /// `<root>/<job-id>/chk-<n>/_metadata`.
    pub fn metadata_url(&self, checkpoint: u64) -> String {
        format!("{}/chk-{checkpoint}/{METADATA_FILE}", self.job_url)
    }

    /// `<root>/<job-id>/chk-<n>/<name>`: a file owned by checkpoint `n`.
    pub fn task_file_url(&self, checkpoint: u64, name: &str) -> String {
        format!("{}/chk-{checkpoint}/{name}", self.job_url)
    }

    /// `<root>/<job-id>/shared/`.
    pub fn shared_url(&self) -> String {
        format!("{}/shared", self.job_url)
    }

    /// `<root>/<job-id>/shared/<name>`.
    pub fn shared_file_url(&self, name: &str) -> String {
        format!("{}/shared/{name}", self.job_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &std::path::Path) -> Storage {
        Storage::open(&StorageConfig { url: format!("file://{}", dir.display()), options: BTreeMap::new() })
            .expect("open")
    }

    #[tokio::test]
    async fn file_storage_puts_lists_gets_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = local(&dir.path().join("root"));
        let layout = CheckpointLayout::new(&storage, JobId(uuid::Uuid::nil()));
        let a = layout.task_file_url(3, "0-1");
        let m = layout.metadata_url(3);
        storage.put(&a, Bytes::from_static(b"state")).await.expect("put");
        storage.put(&m, Bytes::from_static(b"meta!!")).await.expect("put");
        assert!(dir.path().join("root/00000000000000000000000000000000/chk-3/0-1").is_file());
        let listed = storage.list(&layout.checkpoint_url(3)).await.expect("list");
        assert_eq!(listed, vec![(a.clone(), 5), (m.clone(), 6)]);
        assert_eq!(&storage.get(&a).await.expect("get")[..], b"state");
        storage.delete_prefix(&layout.checkpoint_url(3)).await.expect("delete");
        assert!(storage.list(layout.job_url()).await.expect("list").is_empty());
        assert!(matches!(storage.get(&a).await, Err(StorageError::NotFound { .. })));
        storage.delete(&a).await.expect("deleting a missing object is fine");
    }

    #[test]
    fn bad_urls_and_options_are_configuration_errors() {
        for (url, expected) in [
            ("relative/path", "not a URL"),
            ("ftp://host/x", "unsupported storage scheme 'ftp'"),
            ("s3:///prefix", "names no bucket"),
        ] {
            let err = Storage::open(&StorageConfig { url: url.into(), options: BTreeMap::new() }).unwrap_err();
            assert!(err.to_string().contains(expected), "{url}: {err}");
        }
        let options = BTreeMap::from([("aws_no_such_option".to_string(), "1".to_string())]);
        let err = Storage::open(&StorageConfig { url: "s3://bucket/p".into(), options }).unwrap_err();
        assert!(err.to_string().contains("unknown S3 storage option 'aws_no_such_option'"), "{err}");
    }

    #[test]
    fn urls_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = local(dir.path());
        assert!(storage.path_of("file:///elsewhere/x").is_err());
        assert_eq!(storage.path_of(&storage.url_of("a/b")).expect("path").as_ref(), "a/b");
    }

    #[tokio::test]
    async fn a_fenced_storage_refuses_changes_while_its_fence_says_no() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let may_write = Arc::new(AtomicBool::new(true));
        let fence: WriteFence = Arc::new({
            let may_write = Arc::clone(&may_write);
            move || may_write.load(Ordering::SeqCst)
        });
        let storage =
            Storage::from_object_store(Arc::new(object_store::memory::InMemory::new()), "memory://x").with_fence(fence);
        let url = storage.url_of("a");
        storage.put(&url, Bytes::from_static(b"1")).await.unwrap();
        may_write.store(false, Ordering::SeqCst);
        for refused in [
            storage.put(&url, Bytes::from_static(b"2")).await,
            storage.delete(&url).await,
            storage.put_if_absent(&storage.url_of("b"), Bytes::from_static(b"3")).await.map(|_| ()),
        ] {
            let e = refused.unwrap_err().to_string();
            assert!(e.starts_with("refused to change memory://x/") && e.contains("may not write"), "{e}");
        }
        assert_eq!(&storage.get(&url).await.unwrap()[..], b"1", "reads go on, nothing changed");
        let unfenced = storage.clone().unfenced();
        assert!(unfenced.put_if_absent(&unfenced.url_of("b"), Bytes::from_static(b"3")).await.unwrap());
    }

    #[tokio::test]
    async fn a_closed_fence_waits_for_the_writes_that_passed_it() {
        use object_store::throttle::{ThrottleConfig, ThrottledStore};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let may_write = Arc::new(AtomicBool::new(true));
        let fence: WriteFence = Arc::new({
            let may_write = Arc::clone(&may_write);
            move || may_write.load(Ordering::SeqCst)
        });
        let slow = ThrottleConfig { wait_put_per_call: Duration::from_millis(400), ..ThrottleConfig::default() };
        let store = Arc::new(ThrottledStore::new(object_store::memory::InMemory::new(), slow));
        let storage = Storage::from_object_store(store, "memory://x").with_fence(fence);
        let url = storage.url_of("late");
        let write = tokio::spawn({
            let storage = storage.clone();
            let url = url.clone();
            async move { storage.put(&url, Bytes::from_static(b"old leader")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        may_write.store(false, Ordering::SeqCst);
        // Other tests of this binary may have fenced writes in flight too: they only add.
        assert!(!fenced_writes_settled(Duration::from_millis(100)).await, "the write that passed is in flight");
        assert!(fenced_writes_settled(Duration::from_secs(10)).await);
        assert!(write.await.unwrap().is_ok(), "it passed the fence before it closed");
        assert!(storage.put(&url, Bytes::from_static(b"x")).await.is_err());
    }
}
