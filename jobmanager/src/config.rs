//! The jobmanager process's configuration.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use crate::jobmanager::JobManagerSettings;
use crate::restart::{RestartPolicy, RestartStrategy};

/// Configuration of `weir-jobmanager`: defaults, then a TOML file (`--config`), then `WEIR_<KEY>`
/// environment variables, then flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobManagerConfig {
    /// Address of the REST API (`host:port`; port 0 picks a free one). Default `127.0.0.1:8081`.
    pub rest_addr: String,
    /// Address of the gRPC service taskmanagers register with. Default `127.0.0.1:6123`.
    pub rpc_addr: String,
    /// Where uploaded plugins and (unless a job names another location) checkpoints are stored,
    /// as a URL. Default `file://<temp dir>/weir/storage`.
    pub storage: String,
    /// Options of the checkpoint storage (`object_store` keys: `aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`), on top of the standard `AWS_*` environment variables.
    /// Default none.
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// Local directory for copies of uploaded plugins to load. Default `<temp dir>/weir/jobmanager-plugins`.
    pub plugin_cache_dir: PathBuf,
    /// How often taskmanagers send heartbeats, in ms. Default 1000.
    pub heartbeat_interval_ms: u64,
    /// A taskmanager silent for this long (ms) is declared lost. Default 5000.
    pub heartbeat_timeout_ms: u64,
    /// How long a job waits for enough free slots (ms) before it fails. Default 30000.
    pub slot_request_timeout_ms: u64,
    /// Restart strategy of failed jobs: `none`, `fixed-delay`, `exponential-backoff` or
    /// `failure-rate` (Flink's names). Default: not set, which is Flink 2.x's rule: a job with
    /// checkpoints restarts without limit with exponential delays (1 s up to 1 min), one without
    /// checkpoints does not restart; `restart_attempts` > 0 alone means `fixed-delay`.
    pub restart_strategy: String,
    /// Fixed delay, exponential backoff: how often a failed job is restarted (0: never).
    /// Failure rate: failures tolerated per interval. Default 0.
    pub restart_attempts: u32,
    /// Pause before each restart (the first, for exponential backoff), in ms. Default 1000.
    pub restart_delay_ms: u64,
    /// Exponential backoff: the longest pause, in ms. Default 60000.
    pub restart_max_delay_ms: u64,
    /// Exponential backoff: growth of the pause per restart. Default 2.0.
    pub restart_backoff_multiplier: f64,
    /// Exponential backoff: running this long (ms) without a failure resets the pause. Default 3600000.
    pub restart_reset_backoff_after_ms: u64,
    /// Failure rate: the interval failures are counted in, in ms. Default 60000.
    pub restart_failure_rate_interval_ms: u64,
    /// Where savepoints go when a request names no directory (Flink's
    /// `execution.checkpointing.savepoint-dir`), a storage URL (`file:///...`, `s3://...`).
    /// Default empty: every savepoint request must name its directory.
    pub savepoint_dir: String,
    /// Host name or IP other processes reach this jobmanager at, published by the leader (a
    /// standby names it); empty: the bound address. Under Kubernetes, the pod's IP. Default
    /// empty.
    pub advertised_host: String,
    /// Largest accepted job plugin upload (the whole request body), MiB; a larger one is
    /// refused with 413 naming this setting. Default 512.
    pub max_upload_mb: u64,
    /// High availability: several jobmanagers on the same storage elect one leader (see
    /// `ha`); the others stand by, answer `/readyz` with 503, and take over when the leader
    /// dies. Default off.
    pub high_availability: bool,
    /// The leader's lease, in ms (see [`crate::ha::LeaseTiming`]). Default 6000.
    pub ha_lease_ms: u64,
    /// How often the leader renews its lease, in ms. Default 1000.
    pub ha_renew_interval_ms: u64,
    /// How long the leader acts without a successful renewal, in ms (below the lease). Default
    /// 4000.
    pub ha_renew_deadline_ms: u64,
}

impl Default for JobManagerConfig {
    fn default() -> Self {
        let base = std::env::temp_dir().join("weir");
        Self {
            rest_addr: "127.0.0.1:8081".into(),
            rpc_addr: "127.0.0.1:6123".into(),
            storage: format!("file://{}", base.join("storage").display()),
            storage_options: std::collections::BTreeMap::new(),
            plugin_cache_dir: base.join("jobmanager-plugins"),
            heartbeat_interval_ms: 1000,
            heartbeat_timeout_ms: 5000,
            slot_request_timeout_ms: 30_000,
            restart_strategy: String::new(),
            restart_attempts: 0,
            restart_delay_ms: 1000,
            restart_max_delay_ms: 60_000,
            restart_backoff_multiplier: 2.0,
            restart_reset_backoff_after_ms: 3_600_000,
            restart_failure_rate_interval_ms: 60_000,
            savepoint_dir: String::new(),
            advertised_host: String::new(),
            max_upload_mb: 512,
            high_availability: false,
            ha_lease_ms: 6000,
            ha_renew_interval_ms: 1000,
            ha_renew_deadline_ms: 4000,
        }
    }
}

impl JobManagerConfig {
    /// Every key and value, tables flattened with dots (`storage_options.aws_region`), values
    /// of keys that name secrets (`secret`, `password`, `token`, `access_key`, `apikey`)
    /// masked as `******`, as Flink's `/jobmanager/config` shows them.
    pub fn entries(&self) -> Vec<(String, String)> {
        fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
            for (key, value) in table {
                let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                match value {
                    toml::Value::Table(inner) => flatten(&key, inner, out),
                    toml::Value::String(text) => out.push((key, text.clone())),
                    other => out.push((key, other.to_string())),
                }
            }
        }
        let mut entries = Vec::new();
        if let Ok(table) = toml::Table::try_from(self) {
            flatten("", &table, &mut entries);
        }
        let secret = |key: &str| {
            let key = key.to_ascii_lowercase();
            ["secret", "password", "token", "access_key", "apikey"].iter().any(|s| key.contains(s))
        };
        for (key, value) in &mut entries {
            if secret(key) {
                "******".clone_into(value);
            }
        }
        entries
    }

    /// The lease timing of high availability.
    ///
    /// # Errors
    /// Timing that cannot work (one line, see [`crate::ha::LeaseTiming::check`]).
    pub fn lease_timing(&self) -> Result<crate::ha::LeaseTiming, String> {
        let timing = crate::ha::LeaseTiming {
            lease: Duration::from_millis(self.ha_lease_ms),
            renew_interval: Duration::from_millis(self.ha_renew_interval_ms),
            renew_deadline: Duration::from_millis(self.ha_renew_deadline_ms),
        };
        timing.check()?;
        Ok(timing)
    }

    /// The scheduling and recovery settings.
    ///
    /// # Errors
    /// An unknown restart strategy or a backoff multiplier below 1 (the user's configuration).
    pub fn settings(&self) -> Result<JobManagerSettings, String> {
        let strategy: Option<RestartStrategy> = match self.restart_strategy.trim() {
            // Not configured: Flink's rule (RestartPolicy::default_for), unless restarts were
            // asked for without naming a strategy (`--restart-attempts N` alone: fixed delay).
            "" if self.restart_attempts > 0 => Some(RestartStrategy::FixedDelay),
            "" => None,
            other => Some(other.parse()?),
        };
        if self.max_upload_mb == 0 {
            return Err("max_upload_mb must be at least 1 (MiB)".to_owned());
        }
        if !(self.restart_backoff_multiplier >= 1.0 && self.restart_backoff_multiplier.is_finite()) {
            return Err(format!(
                "restart_backoff_multiplier must be at least 1, got {}",
                self.restart_backoff_multiplier
            ));
        }
        Ok(JobManagerSettings {
            slot_request_timeout: Duration::from_millis(self.slot_request_timeout_ms),
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout_ms.max(1)),
            restart: strategy.map(|strategy| RestartPolicy {
                strategy,
                max_attempts: self.restart_attempts,
                delay: Duration::from_millis(self.restart_delay_ms),
                max_delay: Duration::from_millis(self.restart_max_delay_ms),
                backoff_multiplier: self.restart_backoff_multiplier,
                reset_backoff_after: Duration::from_millis(self.restart_reset_backoff_after_ms),
                failure_rate_interval: Duration::from_millis(self.restart_failure_rate_interval_ms),
            }),
            savepoint_dir: Some(self.savepoint_dir.trim().trim_end_matches('/').to_owned()).filter(|d| !d.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shown_configuration_masks_secrets_and_flattens_tables() {
        let mut config = JobManagerConfig::default();
        config.storage_options.insert("aws_secret_access_key".into(), "hunter2".into());
        config.storage_options.insert("aws_region".into(), "eu-west-1".into());
        let entries: std::collections::BTreeMap<String, String> = config.entries().into_iter().collect();
        assert_eq!(entries["storage_options.aws_secret_access_key"], "******");
        assert_eq!(entries["storage_options.aws_region"], "eu-west-1");
        assert_eq!(entries["rest_addr"], "127.0.0.1:8081");
        assert_eq!(entries["heartbeat_timeout_ms"], "5000");
        assert!(!entries.values().any(|v| v.contains("hunter2")));
    }
}
