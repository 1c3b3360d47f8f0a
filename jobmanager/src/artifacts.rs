//! Uploaded job plugins, kept in object storage by content hash.
//!
//! A plugin's bytes are stored once at `plugins/<sha256>.so` in the jobmanager's storage (a
//! `file://` directory or S3, the same storage as job records, so that a standby jobmanager that
//! takes over has every plugin), and a local copy `<cache_dir>/<sha256>.so` is materialized for
//! `dlopen`. The same bytes uploaded twice are stored once.

use crate::error::{Error, Result};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tracing::{debug, info};
use weir_runtime::JobArtifact;
use weir_runtime::storage::{Storage, StorageConfig, StorageError};

/// Uploaded job plugins in object storage, with a local cache to load them from.
#[derive(Debug, Clone)]
pub struct PluginStore {
    storage: Storage,
    cache_dir: PathBuf,
}

impl PluginStore {
    /// A store in `storage` (`file:///absolute/path`, created if missing, or `s3://bucket/prefix`
    /// with its options) that materializes plugins for loading in `cache_dir` (created if
    /// missing). Its writes are fenced as every storage of the process is.
    ///
    /// # Errors
    /// [`Error::Storage`] for an unsupported or malformed URL or option, or a directory that
    /// cannot be created (the operator's configuration; retrying does not help).
    pub fn new(storage: &StorageConfig, cache_dir: PathBuf) -> Result<Self> {
        let storage = Storage::open(storage).map_err(|e| Error::Storage(e.to_string()))?;
        std::fs::create_dir_all(&cache_dir).map_err(|e| {
            Error::Storage(format!("cannot create the plugin cache directory {}: {e}", cache_dir.display()))
        })?;
        Ok(Self { storage, cache_dir })
    }

    /// [`PluginStore::new`] for a storage URL without options.
    ///
    /// # Errors
    /// As [`PluginStore::new`].
    pub fn at(storage_url: &str, cache_dir: PathBuf) -> Result<Self> {
        Self::new(&StorageConfig { url: storage_url.to_owned(), options: Default::default() }, cache_dir)
    }

    fn url(&self, sha256: &str) -> String {
        self.storage.url_of(&format!("plugins/{sha256}.so"))
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
        let newly_stored = self
            .storage
            .put_if_absent(&self.url(&sha256), bytes.clone())
            .await
            .map_err(|e| Error::Storage(format!("cannot store plugin {sha256}: {e}")))?;
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
        match self.storage.get(&self.url(sha256)).await {
            Ok(bytes) => Ok(bytes),
            Err(StorageError::NotFound { .. }) => Err(Error::PluginNotFound(sha256.to_owned())),
            Err(e) => Err(Error::Storage(format!("cannot read plugin {sha256}: {e}"))),
        }
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
        self.storage
            .delete(&self.url(sha256))
            .await
            .map_err(|e| Error::Storage(format!("cannot delete plugin {sha256}: {e}")))?;
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
        PluginStore::at(&url, dir.path().join("cache")).unwrap()
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
    fn malformed_storage_urls_are_the_operators_error() {
        let dir = TempDir::new();
        let err = PluginStore::at("ftp://host/plugins", dir.path().join("cache")).unwrap_err();
        assert!(err.to_string().contains("unsupported storage scheme 'ftp'"), "{err}");
        assert!(PluginStore::at("file://relative/path", dir.path().join("cache")).is_err());
        assert!(PluginStore::at("/no/scheme", dir.path().join("cache")).is_err());
        // S3 opens without contacting the store (the bucket is reached on first use).
        assert!(PluginStore::at("s3://bucket/weir", dir.path().join("cache")).is_ok());
    }
}
