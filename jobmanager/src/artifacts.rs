//! Uploaded job plugins, kept in object storage by content hash.
//!
//! A plugin's bytes are stored once at `plugins/<sha256>.so` in the configured storage, and a
//! local copy `<cache_dir>/<sha256>.so` is materialized for `dlopen`. The same bytes uploaded
//! twice are stored once.

use crate::error::{Error, Result};
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode};
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, info};
use weir_runtime::JobArtifact;

/// Uploaded job plugins in object storage, with a local cache to load them from.
#[derive(Debug, Clone)]
pub struct PluginStore {
    store: Arc<dyn ObjectStore>,
    storage_url: String,
    cache_dir: PathBuf,
}

impl PluginStore {
    /// A store at `storage_url` (`file:///absolute/path`; created if missing) that materializes
    /// plugins for loading in `cache_dir` (created if missing).
    ///
    /// # Errors
    /// [`Error::Storage`] for an unsupported or malformed URL, or a directory that cannot be
    /// created (the operator's configuration; retrying does not help).
    pub fn new(storage_url: &str, cache_dir: PathBuf) -> Result<Self> {
        let root = local_root(storage_url)?;
        std::fs::create_dir_all(&root).map_err(|e| {
            Error::Storage(format!("cannot create the plugin storage directory {}: {e}", root.display()))
        })?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::Storage(format!("cannot open plugin storage {storage_url}: {}", chain(&e))))?;
        std::fs::create_dir_all(&cache_dir).map_err(|e| {
            Error::Storage(format!("cannot create the plugin cache directory {}: {e}", cache_dir.display()))
        })?;
        Ok(Self { store: Arc::new(store), storage_url: storage_url.to_owned(), cache_dir })
    }

    /// Where plugins are loaded from.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Stores `bytes` (if not stored yet) and materializes a local copy to load them from.
    /// Returns the artifact and whether the bytes were newly stored.
    ///
    /// # Errors
    /// [`Error::Storage`] when the storage or the cache directory fails (retrying may help).
    pub async fn put(&self, bytes: Bytes) -> Result<(JobArtifact, bool)> {
        self.put_hashed(sha256_hex(&bytes), bytes).await
    }

    /// [`PluginStore::put`] for bytes whose hash the caller computed with [`sha256_hex`].
    pub(crate) async fn put_hashed(&self, sha256: String, bytes: Bytes) -> Result<(JobArtifact, bool)> {
        let location = object_path(&sha256);
        let newly_stored = match self.store.put_opts(&location, bytes.clone().into(), PutMode::Create.into()).await {
            Ok(_) => true,
            Err(object_store::Error::AlreadyExists { .. }) => false,
            Err(e) => return Err(self.storage_error(&format!("cannot store plugin {sha256}"), &e)),
        };
        if newly_stored {
            info!(plugin = %sha256, size = bytes.len(), "plugin stored");
        } else {
            debug!(plugin = %sha256, "plugin already stored");
        }
        let path = self.materialize(&sha256, bytes).await?;
        Ok((JobArtifact::Stored { sha256, path }, newly_stored))
    }

    /// The bytes of the plugin with this hash.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] if `sha256` is not 64 lowercase hex digits,
    /// [`Error::PluginNotFound`] if no such plugin is stored, [`Error::Storage`] if the storage
    /// fails.
    pub async fn get(&self, sha256: &str) -> Result<Bytes> {
        validate_sha256(sha256)?;
        let location = object_path(sha256);
        let result = match self.store.get(&location).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::PluginNotFound(sha256.to_owned())),
            Err(e) => return Err(self.storage_error(&format!("cannot read plugin {sha256}"), &e)),
        };
        result.bytes().await.map_err(|e| self.storage_error(&format!("cannot read plugin {sha256}"), &e))
    }

    /// The artifact of the stored plugin with this hash, with a local copy to load (made from
    /// the stored bytes if missing, for example in a jobmanager that resumes a job after a
    /// restart).
    ///
    /// # Errors
    /// As [`PluginStore::get`], and [`Error::Storage`] when the local copy cannot be written.
    pub async fn artifact(&self, sha256: &str) -> Result<JobArtifact> {
        validate_sha256(sha256)?;
        let path = self.cache_path(sha256);
        let path = if path.is_file() { path } else { self.materialize(sha256, self.get(sha256).await?).await? };
        Ok(JobArtifact::Stored { sha256: sha256.to_owned(), path })
    }

    /// Removes the plugin and its local copy (absent ones are no error).
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a malformed hash, [`Error::Storage`] if removing fails.
    pub async fn delete(&self, sha256: &str) -> Result<()> {
        validate_sha256(sha256)?;
        match self.store.delete(&object_path(sha256)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.storage_error(&format!("cannot delete plugin {sha256}"), &e)),
        }
        let cached = self.cache_path(sha256);
        blocking(move || match std::fs::remove_file(&cached) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Storage(format!("cannot remove the cached plugin {}: {e}", cached.display()))),
        })
        .await?;
        info!(plugin = %sha256, "plugin deleted");
        Ok(())
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir.join(format!("{sha256}.so"))
    }

    /// Writes the local copy under a temporary name, then renames it into place, so a reader
    /// never sees a partial file (and a file already loaded keeps its inode).
    async fn materialize(&self, sha256: &str, bytes: Bytes) -> Result<PathBuf> {
        let path = self.cache_path(sha256);
        let temp = self.cache_dir.join(format!(".{sha256}.so.{}.tmp", uuid::Uuid::new_v4().simple()));
        blocking(move || {
            if path.is_file() {
                return Ok(path);
            }
            let result = std::fs::write(&temp, &bytes).and_then(|()| std::fs::rename(&temp, &path));
            match result {
                Ok(()) => Ok(path),
                Err(e) => {
                    let _ = std::fs::remove_file(&temp);
                    Err(Error::Storage(format!("cannot write the plugin cache file {}: {e}", path.display())))
                }
            }
        })
        .await
    }

    fn storage_error(&self, what: &str, e: &object_store::Error) -> Error {
        Error::Storage(format!("{what} in {}: {}", self.storage_url, chain(e)))
    }
}

/// The directory of a `file://` storage URL.
fn local_root(storage_url: &str) -> Result<PathBuf> {
    let Some((scheme, rest)) = storage_url.split_once("://") else {
        return Err(Error::Storage(format!("invalid storage URL '{storage_url}': expected file:///absolute/path")));
    };
    if !scheme.eq_ignore_ascii_case("file") {
        return Err(Error::Storage(format!("unsupported storage URL scheme '{scheme}' (supported: file://)")));
    }
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(Error::Storage(format!(
            "invalid storage URL '{storage_url}': expected file:///absolute/path (an absolute path after file://)"
        )));
    }
    Ok(PathBuf::from(path))
}

fn object_path(sha256: &str) -> ObjectPath {
    ObjectPath::from(format!("plugins/{sha256}.so"))
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Checks a user-supplied plugin hash: 64 lowercase hex digits.
fn validate_sha256(sha256: &str) -> Result<()> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "'{}' is not a plugin hash (expected 64 lowercase hex digits)",
            sha256.chars().take(80).collect::<String>()
        )))
    }
}

/// An error's message followed by those of its sources that it does not already include.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = s.source();
    }
    text
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("plugin file operation did not complete: {e}")))?
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A directory removed on drop (`tempfile` is not a dependency of this crate).
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            let path = std::env::temp_dir().join(format!("weir-test-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store(dir: &TempDir) -> PluginStore {
        let url = format!("file://{}", dir.path().join("storage").display());
        PluginStore::new(&url, dir.path().join("cache")).unwrap()
    }

    #[tokio::test]
    async fn the_same_bytes_are_stored_once_and_read_back() {
        let dir = TempDir::new();
        let plugins = store(&dir);
        let bytes = Bytes::from_static(b"not really a shared library");
        let (artifact, newly_stored) = plugins.put(bytes.clone()).await.unwrap();
        assert!(newly_stored);
        let JobArtifact::Stored { sha256, path } = artifact else { panic!("expected a stored artifact") };
        assert_eq!(sha256, sha256_hex(&bytes));
        assert_eq!(sha256.len(), 64);
        assert_eq!(path, dir.path().join("cache").join(format!("{sha256}.so")));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert!(dir.path().join("storage/plugins").join(format!("{sha256}.so")).is_file());

        let (again, newly_stored) = plugins.put(bytes.clone()).await.unwrap();
        assert!(!newly_stored);
        assert!(matches!(again, JobArtifact::Stored { sha256: ref s, .. } if *s == sha256));
        assert_eq!(plugins.get(&sha256).await.unwrap(), bytes);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("cache")).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_malformed_hash_is_the_users_error() {
        let dir = TempDir::new();
        let plugins = store(&dir);
        for bad in ["", "../../etc/passwd", &"A".repeat(64), &"0".repeat(63), &"g".repeat(64)] {
            let err = plugins.get(bad).await.unwrap_err();
            assert!(matches!(err, Error::InvalidRequest(_)), "{bad}: {err}");
            assert_eq!(err.status_code(), 400);
        }
        let err = plugins.get(&"0".repeat(64)).await.unwrap_err();
        assert!(matches!(err, Error::PluginNotFound(_)), "{err}");
        assert_eq!(err.status_code(), 404);
    }

    #[tokio::test]
    async fn delete_removes_the_object_and_the_local_copy() {
        let dir = TempDir::new();
        let plugins = store(&dir);
        let (artifact, _) = plugins.put(Bytes::from_static(b"plugin")).await.unwrap();
        let JobArtifact::Stored { sha256, path } = artifact else { panic!("expected a stored artifact") };
        plugins.delete(&sha256).await.unwrap();
        assert!(!path.exists());
        assert!(matches!(plugins.get(&sha256).await.unwrap_err(), Error::PluginNotFound(_)));
        // Deleting again is no error; storing again stores anew.
        plugins.delete(&sha256).await.unwrap();
        assert!(plugins.put(Bytes::from_static(b"plugin")).await.unwrap().1);
    }

    #[test]
    fn only_file_urls_are_supported() {
        let dir = TempDir::new();
        let err = PluginStore::new("s3://bucket/plugins", dir.path().join("cache")).unwrap_err();
        assert_eq!(err.to_string(), "plugin storage: unsupported storage URL scheme 's3' (supported: file://)");
        assert!(PluginStore::new("file://relative/path", dir.path().join("cache")).is_err());
        assert!(PluginStore::new("/no/scheme", dir.path().join("cache")).is_err());
    }
}
