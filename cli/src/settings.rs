//! Per-job settings given as Flink's `-D KEY=VALUE` (`flink run -D`), mapped onto Weir's
//! submission options under Flink's configuration keys.
//!
//! | key | Weir option |
//! |---|---|
//! | `execution.checkpointing.interval` | `--checkpoint-interval` |
//! | `execution.checkpointing.timeout` | `--checkpoint-timeout` |
//! | `execution.checkpointing.min-pause` | `--checkpoint-min-pause` |
//! | `execution.checkpointing.max-concurrent-checkpoints` | `--checkpoint-max-concurrent` |
//! | `execution.checkpointing.tolerable-failed-checkpoints` | `--checkpoint-tolerable-failures` |
//! | `execution.checkpointing.dir`, `state.checkpoints.dir` | `--checkpoint-dir` |
//! | `execution.checkpointing.num-retained`, `state.checkpoints.num-retained` | `--checkpoints-retained` |
//! | `state.backend.type`, `state.backend` (`hashmap`, `rocksdb`) | `--state-backend` (`heap`, `rocksdb`) |
//! | `parallelism.default` | `-p` |
//! | `execution.savepoint.path` | `-s` |
//! | `execution.savepoint.ignore-unclaimed-state` | `-n` |
//! | `restart-strategy.type` and `restart-strategy.<type>.*` | the job's restart strategy (see [`RestartSettings`]) |
//!
//! Durations are Flink's: a number with a unit (`ms`, `s`, `min`, `h`, `d` and their long forms,
//! with or without a space) or a plain number of milliseconds. A value that does not fit, an
//! unknown key, and a key that is also given as a flag are errors naming the key.

use crate::error::{Error, Result};
use std::time::Duration;
use weir_jobmanager::checkpoint::CheckpointOptions;
use weir_jobmanager::{RestartPolicy, RestartStrategy};

/// The largest parallelism a job may ask for.
pub const MAX_PARALLELISM: u32 = 4096;

/// A value given with `-D`, with the key it was given under (errors name that key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The key as the user wrote it.
    pub key: String,
    /// The value, checked and normalised (durations as milliseconds: `500ms`).
    pub value: T,
}

/// Every `-D` setting of one command line; a key given twice takes the later value, as in Flink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSettings {
    /// `execution.checkpointing.interval`.
    pub checkpoint_interval: Option<Setting<String>>,
    /// `execution.checkpointing.timeout`.
    pub checkpoint_timeout: Option<Setting<String>>,
    /// `execution.checkpointing.min-pause`.
    pub checkpoint_min_pause: Option<Setting<String>>,
    /// `execution.checkpointing.max-concurrent-checkpoints`.
    pub checkpoint_max_concurrent: Option<Setting<String>>,
    /// `execution.checkpointing.tolerable-failed-checkpoints`.
    pub checkpoint_tolerable_failures: Option<Setting<String>>,
    /// `execution.checkpointing.dir` or `state.checkpoints.dir`.
    pub checkpoint_dir: Option<Setting<String>>,
    /// `execution.checkpointing.num-retained` or `state.checkpoints.num-retained`.
    pub checkpoints_retained: Option<Setting<String>>,
    /// `state.backend.type` or `state.backend`, as Weir names it (`heap`, `rocksdb`).
    pub state_backend: Option<Setting<String>>,
    /// `parallelism.default`.
    pub parallelism: Option<Setting<u32>>,
    /// `execution.savepoint.path`.
    pub savepoint_path: Option<Setting<String>>,
    /// `execution.savepoint.ignore-unclaimed-state`.
    pub allow_non_restored_state: Option<Setting<bool>>,
    /// `restart-strategy.*`.
    pub restart: RestartSettings,
}

/// Flink's restart strategy keys (Flink 2.x names and defaults): the job's restart strategy, sent
/// with the submission (`weir run`) or given to the mini-cluster (`weir local run`); without them
/// the jobmanager's applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartSettings {
    /// `restart-strategy.type` (or `restart-strategy`).
    pub strategy: Option<Setting<RestartStrategy>>,
    /// `restart-strategy.fixed-delay.attempts` (default 1).
    pub fixed_delay_attempts: Option<Setting<u32>>,
    /// `restart-strategy.fixed-delay.delay` (default 1 s).
    pub fixed_delay_delay: Option<Setting<Duration>>,
    /// `restart-strategy.failure-rate.max-failures-per-interval` (default 1).
    pub failure_rate_max_failures: Option<Setting<u32>>,
    /// `restart-strategy.failure-rate.failure-rate-interval` (default 1 min).
    pub failure_rate_interval: Option<Setting<Duration>>,
    /// `restart-strategy.failure-rate.delay` (default 1 s).
    pub failure_rate_delay: Option<Setting<Duration>>,
    /// `restart-strategy.exponential-delay.initial-backoff` (default 1 s).
    pub exponential_initial_backoff: Option<Setting<Duration>>,
    /// `restart-strategy.exponential-delay.max-backoff` (default 1 min).
    pub exponential_max_backoff: Option<Setting<Duration>>,
    /// `restart-strategy.exponential-delay.backoff-multiplier` (default 1.5).
    pub exponential_multiplier: Option<Setting<f64>>,
    /// `restart-strategy.exponential-delay.reset-backoff-threshold` (default 1 h).
    pub exponential_reset_threshold: Option<Setting<Duration>>,
    /// `restart-strategy.exponential-delay.attempts-before-reset-backoff` (default unlimited).
    pub exponential_attempts: Option<Setting<u32>>,
    /// `restart-strategy.exponential-delay.jitter-factor`: only 0 (Weir adds no jitter).
    pub exponential_jitter: Option<Setting<f64>>,
}

impl JobSettings {
    /// Reads `-D` arguments, each `KEY=VALUE` (`KEY` as in Flink's configuration).
    ///
    /// # Errors
    /// [`Error::Setting`] naming the key: no `=`, an unknown key, or a value that does not fit.
    pub fn parse<S: AsRef<str>>(arguments: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut settings = Self::default();
        for argument in arguments {
            let argument = argument.as_ref();
            let Some((key, value)) = argument.split_once('=') else {
                return Err(Error::setting(
                    argument,
                    "expected KEY=VALUE, for example -D execution.checkpointing.interval=10s",
                ));
            };
            settings.set(key.trim(), value.trim())?;
        }
        Ok(settings)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let owned = |v: String| Some(Setting { key: key.to_owned(), value: v });
        match key {
            "execution.checkpointing.interval" => {
                let ms = positive_ms(key, value)?;
                self.checkpoint_interval = owned(format!("{ms}ms"));
            }
            "execution.checkpointing.timeout" => {
                let ms = positive_ms(key, value)?;
                self.checkpoint_timeout = owned(format!("{ms}ms"));
            }
            "execution.checkpointing.min-pause" => {
                let ms = millis(key, value)?;
                self.checkpoint_min_pause = owned(format!("{ms}ms"));
            }
            "execution.checkpointing.max-concurrent-checkpoints" => {
                self.checkpoint_max_concurrent = owned(count(key, value, 1)?.to_string());
            }
            "execution.checkpointing.tolerable-failed-checkpoints" => {
                self.checkpoint_tolerable_failures = owned(count(key, value, 0)?.to_string());
            }
            "execution.checkpointing.dir" | "state.checkpoints.dir" => {
                if value.is_empty() {
                    return Err(Error::setting(key, "expected a storage URL such as s3://bucket/checkpoints"));
                }
                self.checkpoint_dir = owned(storage_url(key, value)?);
            }
            "execution.checkpointing.num-retained" | "state.checkpoints.num-retained" => {
                self.checkpoints_retained = owned(count(key, value, 1)?.to_string());
            }
            "state.backend.type" | "state.backend" => {
                let backend = match value.to_ascii_lowercase().as_str() {
                    "hashmap" | "heap" => "heap",
                    "rocksdb" => "rocksdb",
                    other => {
                        return Err(Error::setting(
                            key,
                            format!("unknown state backend '{other}' (expected hashmap or rocksdb)"),
                        ));
                    }
                };
                self.state_backend = owned(backend.to_owned());
            }
            "parallelism.default" => {
                let n = count(key, value, 1)?;
                if n > MAX_PARALLELISM {
                    return Err(Error::setting(
                        key,
                        format!("'{value}' is above the largest parallelism {MAX_PARALLELISM}"),
                    ));
                }
                self.parallelism = Some(Setting { key: key.to_owned(), value: n });
            }
            "execution.savepoint.path" => {
                if value.is_empty() {
                    return Err(Error::setting(key, "expected a savepoint's directory or _metadata"));
                }
                self.savepoint_path = owned(value.to_owned());
            }
            "execution.savepoint.ignore-unclaimed-state" => {
                let flag = boolean(key, value)?;
                self.allow_non_restored_state = Some(Setting { key: key.to_owned(), value: flag });
            }
            _ if key == "restart-strategy" || key.starts_with("restart-strategy.") => self.restart.set(key, value)?,
            _ => {
                return Err(Error::setting(
                    key,
                    "unknown setting (`weir run --help` lists the -D keys Weir understands)",
                ));
            }
        }
        Ok(())
    }

    /// The checkpoint options of `flags` (`--checkpoint-interval`, ...) with these settings
    /// added.
    ///
    /// # Errors
    /// [`Error::Setting`] when a key is also given by its flag.
    pub fn checkpoint_options(&self, flags: &CheckpointOptions) -> Result<CheckpointOptions> {
        let mut options = flags.clone();
        for (setting, target, flag) in [
            (&self.checkpoint_interval, &mut options.interval, "--checkpoint-interval"),
            (&self.checkpoint_timeout, &mut options.timeout, "--checkpoint-timeout"),
            (&self.checkpoint_min_pause, &mut options.min_pause, "--checkpoint-min-pause"),
            (&self.checkpoint_max_concurrent, &mut options.max_concurrent, "--checkpoint-max-concurrent"),
            (&self.checkpoint_tolerable_failures, &mut options.tolerable_failures, "--checkpoint-tolerable-failures"),
            (&self.checkpoint_dir, &mut options.storage_url, "--checkpoint-dir"),
            (&self.checkpoints_retained, &mut options.retained, "--checkpoints-retained"),
            (&self.state_backend, &mut options.backend, "--state-backend"),
        ] {
            let Some(setting) = setting else { continue };
            if target.is_some() {
                return Err(Error::setting(&setting.key, format!("is also given as {flag}; give one of them")));
            }
            *target = Some(setting.value.clone());
        }
        // Checkpoint settings without an interval: name the first key given.
        if options.interval.is_none() {
            let without = [
                &self.checkpoint_timeout,
                &self.checkpoint_min_pause,
                &self.checkpoint_max_concurrent,
                &self.checkpoint_tolerable_failures,
                &self.checkpoint_dir,
                &self.checkpoints_retained,
            ];
            if let Some(setting) = without.into_iter().flatten().next() {
                return Err(Error::setting(
                    &setting.key,
                    "needs a checkpoint interval (-D execution.checkpointing.interval=10s or --checkpoint-interval)",
                ));
            }
        }
        Ok(options)
    }

    /// The job's parallelism: `-p` (`flag`), else `parallelism.default`, else 1.
    ///
    /// # Errors
    /// [`Error::Setting`] when both are given.
    pub fn parallelism(&self, flag: Option<u32>) -> Result<u32> {
        match (flag, &self.parallelism) {
            (Some(_), Some(setting)) => Err(Error::setting(&setting.key, "is also given as -p; give one of them")),
            (Some(p), None) => Ok(p),
            (None, Some(setting)) => Ok(setting.value),
            (None, None) => Ok(1),
        }
    }

    /// The savepoint to start from and whether state without an operator may be dropped:
    /// `-s`/`-n` (`from_savepoint`, `allow_non_restored_state`) or their keys.
    ///
    /// # Errors
    /// [`Error::Setting`] when a key is also given by its flag, or
    /// `execution.savepoint.ignore-unclaimed-state=true` comes without a savepoint.
    pub fn savepoint(
        &self,
        from_savepoint: Option<&str>,
        allow_non_restored_state: bool,
    ) -> Result<Option<(String, bool)>> {
        let path = match (from_savepoint, &self.savepoint_path) {
            (Some(_), Some(setting)) => {
                return Err(Error::setting(&setting.key, "is also given as -s; give one of them"));
            }
            (Some(path), None) => Some(path.to_owned()),
            (None, setting) => setting.as_ref().map(|s| s.value.clone()),
        };
        let allow = allow_non_restored_state || self.allow_non_restored_state.as_ref().is_some_and(|s| s.value);
        match (path, &self.allow_non_restored_state) {
            (None, Some(setting)) if setting.value => Err(Error::setting(
                &setting.key,
                "needs a savepoint to start from (-s PATH or -D execution.savepoint.path=PATH)",
            )),
            (path, _) => Ok(path.map(|p| (p, allow))),
        }
    }
}

impl RestartSettings {
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let owned = || key.to_owned();
        match key {
            "restart-strategy" | "restart-strategy.type" => {
                let strategy = match value.to_ascii_lowercase().as_str() {
                    "none" | "off" | "disable" => RestartStrategy::None,
                    "fixed-delay" | "fixeddelay" => RestartStrategy::FixedDelay,
                    "failure-rate" | "failurerate" => RestartStrategy::FailureRate,
                    "exponential-delay" | "exponentialdelay" | "exponential-backoff" => {
                        RestartStrategy::ExponentialBackoff
                    }
                    other => {
                        return Err(Error::setting(
                            key,
                            format!(
                                "unknown restart strategy '{other}' (expected none, fixed-delay, failure-rate or \
                                 exponential-delay)"
                            ),
                        ));
                    }
                };
                self.strategy = Some(Setting { key: owned(), value: strategy });
            }
            "restart-strategy.fixed-delay.attempts" => {
                self.fixed_delay_attempts = Some(Setting { key: owned(), value: count(key, value, 0)? });
            }
            "restart-strategy.fixed-delay.delay" => {
                self.fixed_delay_delay = Some(Setting { key: owned(), value: duration(key, value)? });
            }
            "restart-strategy.failure-rate.max-failures-per-interval" => {
                self.failure_rate_max_failures = Some(Setting { key: owned(), value: count(key, value, 1)? });
            }
            "restart-strategy.failure-rate.failure-rate-interval" => {
                let interval = duration(key, value)?;
                if interval.is_zero() {
                    return Err(Error::setting(key, "must be longer than 0"));
                }
                self.failure_rate_interval = Some(Setting { key: owned(), value: interval });
            }
            "restart-strategy.failure-rate.delay" => {
                self.failure_rate_delay = Some(Setting { key: owned(), value: duration(key, value)? });
            }
            "restart-strategy.exponential-delay.initial-backoff" => {
                self.exponential_initial_backoff = Some(Setting { key: owned(), value: duration(key, value)? });
            }
            "restart-strategy.exponential-delay.max-backoff" => {
                self.exponential_max_backoff = Some(Setting { key: owned(), value: duration(key, value)? });
            }
            "restart-strategy.exponential-delay.backoff-multiplier" => {
                let multiplier: f64 = value
                    .parse()
                    .ok()
                    .filter(|m: &f64| m.is_finite() && *m >= 1.0)
                    .ok_or_else(|| Error::setting(key, format!("'{value}' is not a number of at least 1")))?;
                self.exponential_multiplier = Some(Setting { key: owned(), value: multiplier });
            }
            "restart-strategy.exponential-delay.reset-backoff-threshold" => {
                self.exponential_reset_threshold = Some(Setting { key: owned(), value: duration(key, value)? });
            }
            "restart-strategy.exponential-delay.attempts-before-reset-backoff" => {
                self.exponential_attempts = Some(Setting { key: owned(), value: count(key, value, 1)? });
            }
            "restart-strategy.exponential-delay.jitter-factor" => {
                // Weir's exponential delay has no jitter: only "none" fits.
                if value.parse::<f64>().ok() != Some(0.0) {
                    return Err(Error::setting(key, "Weir's exponential delay has no jitter; only 0 is accepted"));
                }
                self.exponential_jitter = Some(Setting { key: owned(), value: 0.0 });
            }
            _ => {
                return Err(Error::setting(
                    key,
                    "unknown setting (`weir run --help` lists the -D keys Weir understands)",
                ));
            }
        }
        Ok(())
    }

    /// The first restart key given, if any.
    pub fn first_key(&self) -> Option<&str> {
        key_of(&self.strategy).or_else(|| self.options_given().first().map(|(_, key)| *key))
    }

    /// The strategies whose own keys (`restart-strategy.<type>.*`) are given, each with the
    /// first of them.
    fn options_given(&self) -> Vec<(RestartStrategy, &str)> {
        fn first<'k>(keys: &[Option<&'k str>]) -> Option<&'k str> {
            keys.iter().flatten().next().copied()
        }
        let fixed = first(&[key_of(&self.fixed_delay_attempts), key_of(&self.fixed_delay_delay)]);
        let rate = first(&[
            key_of(&self.failure_rate_max_failures),
            key_of(&self.failure_rate_interval),
            key_of(&self.failure_rate_delay),
        ]);
        let exponential = first(&[
            key_of(&self.exponential_initial_backoff),
            key_of(&self.exponential_max_backoff),
            key_of(&self.exponential_multiplier),
            key_of(&self.exponential_reset_threshold),
            key_of(&self.exponential_attempts),
            key_of(&self.exponential_jitter),
        ]);
        [
            (RestartStrategy::FixedDelay, fixed),
            (RestartStrategy::FailureRate, rate),
            (RestartStrategy::ExponentialBackoff, exponential),
        ]
        .into_iter()
        .filter_map(|(strategy, key)| key.map(|key| (strategy, key)))
        .collect()
    }

    /// The restart policy these keys describe (`None`: none given), with Flink 2.x's defaults
    /// for the keys left out. Without `restart-strategy.type`, the strategy whose keys are given.
    ///
    /// # Errors
    /// [`Error::Setting`] when keys of another strategy than `restart-strategy.type`, or of
    /// several strategies, are given.
    pub fn policy(&self) -> Result<Option<RestartPolicy>> {
        let given = self.options_given();
        let strategy = match (&self.strategy, given.as_slice()) {
            (None, []) => return Ok(None),
            (Some(s), _) => {
                if let Some((other, key)) = given.iter().find(|(g, _)| *g != s.value) {
                    return Err(Error::setting(
                        *key,
                        format!("applies to restart-strategy.type={}, not {}", flink_name(*other), flink_name(s.value)),
                    ));
                }
                s.value
            }
            (None, [(strategy, _)]) => *strategy,
            (None, [_, (_, key), ..]) => {
                return Err(Error::setting(
                    *key,
                    "keys of several restart strategies; name one with -D restart-strategy.type=...",
                ));
            }
        };
        let second = Duration::from_secs(1);
        let policy = match strategy {
            RestartStrategy::None => RestartPolicy::none(),
            RestartStrategy::FixedDelay => RestartPolicy {
                strategy,
                max_attempts: value_or(&self.fixed_delay_attempts, 1),
                delay: value_or(&self.fixed_delay_delay, second),
                ..RestartPolicy::default()
            },
            RestartStrategy::FailureRate => RestartPolicy {
                strategy,
                max_attempts: value_or(&self.failure_rate_max_failures, 1),
                delay: value_or(&self.failure_rate_delay, second),
                failure_rate_interval: value_or(&self.failure_rate_interval, Duration::from_secs(60)),
                ..RestartPolicy::default()
            },
            RestartStrategy::ExponentialBackoff => RestartPolicy {
                strategy,
                max_attempts: value_or(&self.exponential_attempts, u32::MAX),
                delay: value_or(&self.exponential_initial_backoff, second),
                max_delay: value_or(&self.exponential_max_backoff, Duration::from_secs(60)),
                backoff_multiplier: value_or(&self.exponential_multiplier, 1.5),
                reset_backoff_after: value_or(&self.exponential_reset_threshold, Duration::from_secs(3600)),
                ..RestartPolicy::default()
            },
        };
        Ok(Some(policy))
    }
}

fn key_of<T>(setting: &Option<Setting<T>>) -> Option<&str> {
    setting.as_ref().map(|s| s.key.as_str())
}

fn value_or<T: Copy>(setting: &Option<Setting<T>>, default: T) -> T {
    setting.as_ref().map_or(default, |s| s.value)
}

/// Flink's name of a restart strategy.
pub fn flink_name(strategy: RestartStrategy) -> &'static str {
    match strategy {
        RestartStrategy::None => "none",
        RestartStrategy::FixedDelay => "fixed-delay",
        RestartStrategy::FailureRate => "failure-rate",
        RestartStrategy::ExponentialBackoff => "exponential-delay",
    }
}

/// A duration as Flink writes them: `500ms`, `10 s`, `1min`, `2h`, `1d`, their long forms
/// (`10 seconds`), or a plain number of milliseconds.
///
/// # Errors
/// What is wrong, in words.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let bad = || format!("'{text}' is not a duration such as 500ms, 10s, 1min or 1h (a plain number is milliseconds)");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return Err(bad()),
    };
    number.checked_mul(unit_ms).map(Duration::from_millis).ok_or_else(|| format!("'{text}' is too long"))
}

fn duration(key: &str, value: &str) -> Result<Duration> {
    parse_duration(value).map_err(|reason| Error::setting(key, reason))
}

fn millis(key: &str, value: &str) -> Result<u128> {
    Ok(duration(key, value)?.as_millis())
}

fn positive_ms(key: &str, value: &str) -> Result<u128> {
    let ms = millis(key, value)?;
    if ms == 0 {
        return Err(Error::setting(key, format!("'{value}' must be longer than 0")));
    }
    Ok(ms)
}

fn count(key: &str, value: &str, at_least: u32) -> Result<u32> {
    match value.parse::<u32>() {
        Ok(n) if n >= at_least => Ok(n),
        _ => Err(Error::setting(key, format!("'{value}' is not a whole number of at least {at_least}"))),
    }
}

fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::setting(key, format!("'{value}' is not true or false"))),
    }
}

/// A storage URL, or a path made absolute (the jobmanager and taskmanagers do not share our
/// working directory).
fn storage_url(key: &str, value: &str) -> Result<String> {
    if value.contains("://") {
        return Ok(value.to_owned());
    }
    let path = std::path::absolute(value).map_err(|e| Error::setting(key, format!("cannot resolve the path: {e}")))?;
    Ok(format!("file://{}", path.display()))
}

/// The REST form fields (`POST /jobs`) of checkpoint and state backend options.
pub fn checkpoint_form_fields(options: &CheckpointOptions) -> Vec<(&'static str, String)> {
    [
        ("checkpoint_interval", &options.interval),
        ("state_backend", &options.backend),
        ("checkpoint_dir", &options.storage_url),
        ("checkpoints_retained", &options.retained),
        ("checkpoint_timeout", &options.timeout),
        ("checkpoint_min_pause", &options.min_pause),
        ("checkpoint_max_concurrent", &options.max_concurrent),
        ("checkpoint_tolerable_failures", &options.tolerable_failures),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[&str]) -> Result<JobSettings> {
        JobSettings::parse(pairs)
    }

    fn error(pairs: &[&str]) -> String {
        let err = parse(pairs).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "one line: {text}");
        text
    }

    #[test]
    fn flink_checkpoint_keys_map_onto_weirs_options() {
        let settings = parse(&[
            "execution.checkpointing.interval=10s",
            "execution.checkpointing.timeout=2 min",
            "execution.checkpointing.min-pause=500",
            "execution.checkpointing.max-concurrent-checkpoints=2",
            "execution.checkpointing.tolerable-failed-checkpoints=3",
            "state.checkpoints.dir=s3://bucket/checkpoints",
            "state.checkpoints.num-retained=4",
            "state.backend.type=rocksdb",
        ])
        .unwrap();
        let options = settings.checkpoint_options(&CheckpointOptions::default()).unwrap();
        assert_eq!(
            options,
            CheckpointOptions {
                interval: Some("10000ms".into()),
                backend: Some("rocksdb".into()),
                storage_url: Some("s3://bucket/checkpoints".into()),
                retained: Some("4".into()),
                timeout: Some("120000ms".into()),
                min_pause: Some("500ms".into()),
                max_concurrent: Some("2".into()),
                tolerable_failures: Some("3".into()),
            }
        );
        // They resolve as the flags do.
        let resolved = options.resolve().unwrap();
        assert_eq!(resolved.state_backend, weir_runtime::checkpoint::StateBackendKind::Rocksdb);
        let checkpointing = resolved.checkpointing.unwrap();
        assert_eq!(checkpointing.config.interval_ms, 10_000);
        assert_eq!(checkpointing.config.timeout_ms, 120_000);
        assert_eq!(checkpointing.config.min_pause_ms, 500);
        assert_eq!(checkpointing.config.max_concurrent, 2);
        assert_eq!(checkpointing.config.tolerable_failures, 3);
        assert_eq!(checkpointing.config.retained, 4);
        assert_eq!(checkpointing.storage_url.as_deref(), Some("s3://bucket/checkpoints"));
        // And become the REST form fields of the submission.
        let fields = checkpoint_form_fields(&options);
        assert!(fields.contains(&("checkpoint_interval", "10000ms".to_owned())), "{fields:?}");
        assert!(fields.contains(&("state_backend", "rocksdb".to_owned())), "{fields:?}");
        assert!(fields.contains(&("checkpoint_dir", "s3://bucket/checkpoints".to_owned())), "{fields:?}");
        assert_eq!(fields.len(), 8, "{fields:?}");
    }

    #[test]
    fn newer_and_older_flink_names_and_the_last_value_win() {
        let settings = parse(&[
            "execution.checkpointing.interval=1s",
            "execution.checkpointing.dir=file:///a",
            "state.checkpoints.dir=file:///b",
            "execution.checkpointing.num-retained=2",
            "state.backend=hashmap",
            "execution.checkpointing.interval=2s",
        ])
        .unwrap();
        let options = settings.checkpoint_options(&CheckpointOptions::default()).unwrap();
        assert_eq!(options.interval.as_deref(), Some("2000ms"));
        assert_eq!(options.storage_url.as_deref(), Some("file:///b"));
        assert_eq!(options.retained.as_deref(), Some("2"));
        assert_eq!(options.backend.as_deref(), Some("heap"));
        // A relative checkpoint directory is made absolute, as --checkpoint-dir paths are.
        let relative = parse(&["state.checkpoints.dir=chk"]).unwrap();
        let url = relative.checkpoint_dir.unwrap().value;
        assert!(url.starts_with("file:///") && url.ends_with("/chk"), "{url}");
    }

    #[test]
    fn durations_are_flinks() {
        for (text, ms) in [
            ("500", 500),
            ("500ms", 500),
            ("10s", 10_000),
            ("10 s", 10_000),
            ("1min", 60_000),
            ("1 m", 60_000),
            ("2 minutes", 120_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("3 seconds", 3000),
        ] {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "s", "ten seconds", "1.5s", "-1s", "10 fortnights", "1h30m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_one_line_naming_the_key() {
        for (pairs, expected) in [
            (vec!["pipeline.name=x"], "-D pipeline.name: unknown setting"),
            (vec!["execution.checkpointing.interval"], "-D execution.checkpointing.interval: expected KEY=VALUE"),
            (
                vec!["execution.checkpointing.interval=soon"],
                "-D execution.checkpointing.interval: 'soon' is not a duration",
            ),
            (
                vec!["execution.checkpointing.interval=0"],
                "-D execution.checkpointing.interval: '0' must be longer than 0",
            ),
            (
                vec!["execution.checkpointing.timeout=0s"],
                "-D execution.checkpointing.timeout: '0s' must be longer than 0",
            ),
            (
                vec!["execution.checkpointing.max-concurrent-checkpoints=0"],
                "-D execution.checkpointing.max-concurrent-checkpoints: '0' is not a whole number of at least 1",
            ),
            (
                vec!["execution.checkpointing.tolerable-failed-checkpoints=-1"],
                "-D execution.checkpointing.tolerable-failed-checkpoints: '-1' is not a whole number",
            ),
            (vec!["state.checkpoints.num-retained=0"], "-D state.checkpoints.num-retained: '0' is not a whole number"),
            (vec!["state.backend.type=forst"], "-D state.backend.type: unknown state backend 'forst'"),
            (vec!["parallelism.default=0"], "-D parallelism.default: '0' is not a whole number of at least 1"),
            (vec!["parallelism.default=5000"], "-D parallelism.default: '5000' is above the largest parallelism"),
            (
                vec!["execution.savepoint.ignore-unclaimed-state=yes"],
                "-D execution.savepoint.ignore-unclaimed-state: 'yes' is not true or false",
            ),
            (vec!["restart-strategy.type=sometimes"], "-D restart-strategy.type: unknown restart strategy 'sometimes'"),
            (vec!["restart-strategy.fixed-delay.attempts=many"], "-D restart-strategy.fixed-delay.attempts: 'many'"),
            (vec!["restart-strategy.fixed-delay.tries=2"], "-D restart-strategy.fixed-delay.tries: unknown setting"),
            (
                vec!["restart-strategy.exponential-delay.jitter-factor=0.1"],
                "-D restart-strategy.exponential-delay.jitter-factor: Weir's exponential delay has no jitter",
            ),
            (
                vec!["restart-strategy.exponential-delay.backoff-multiplier=0.5"],
                "-D restart-strategy.exponential-delay.backoff-multiplier: '0.5' is not a number of at least 1",
            ),
        ] {
            let text = error(&pairs);
            assert!(text.starts_with(expected), "{pairs:?}: {text}");
        }
    }

    #[test]
    fn a_key_and_its_flag_together_are_refused() {
        let settings = parse(&["execution.checkpointing.interval=1s"]).unwrap();
        let flags = CheckpointOptions { interval: Some("2s".into()), ..Default::default() };
        let err = settings.checkpoint_options(&flags).unwrap_err().to_string();
        assert_eq!(
            err,
            "-D execution.checkpointing.interval: is also given as --checkpoint-interval; give one of them"
        );
        let settings = parse(&["parallelism.default=4"]).unwrap();
        assert_eq!(settings.parallelism(None), Ok(4));
        assert!(settings.parallelism(Some(2)).unwrap_err().to_string().contains("also given as -p"));
        assert_eq!(JobSettings::default().parallelism(None), Ok(1));
        // Checkpoint keys without an interval name themselves.
        let settings = parse(&["state.checkpoints.num-retained=3"]).unwrap();
        let err = settings.checkpoint_options(&CheckpointOptions::default()).unwrap_err().to_string();
        assert!(err.starts_with("-D state.checkpoints.num-retained: needs a checkpoint interval"), "{err}");
        // ... but an interval given as a flag is enough.
        let flags = CheckpointOptions { interval: Some("2s".into()), ..Default::default() };
        assert_eq!(settings.checkpoint_options(&flags).unwrap().retained.as_deref(), Some("3"));
    }

    #[test]
    fn savepoint_keys_stand_for_s_and_n() {
        let settings =
            parse(&["execution.savepoint.path=s3://b/sp", "execution.savepoint.ignore-unclaimed-state=true"]).unwrap();
        assert_eq!(settings.savepoint(None, false), Ok(Some(("s3://b/sp".to_owned(), true))));
        assert!(settings.savepoint(Some("x"), false).unwrap_err().to_string().contains("also given as -s"));
        let ignore = parse(&["execution.savepoint.ignore-unclaimed-state=true"]).unwrap();
        assert_eq!(ignore.savepoint(Some("/sp"), false), Ok(Some(("/sp".to_owned(), true))));
        assert!(ignore.savepoint(None, false).unwrap_err().to_string().contains("needs a savepoint"));
        assert_eq!(JobSettings::default().savepoint(None, false), Ok(None));
    }

    #[test]
    fn restart_strategies_take_flinks_names_and_defaults() {
        let policy = |pairs: &[&str]| parse(pairs).unwrap().restart.policy().unwrap();
        assert_eq!(policy(&[]), None);
        assert_eq!(policy(&["restart-strategy.type=none"]), Some(RestartPolicy::none()));
        assert_eq!(policy(&["restart-strategy=disable"]).map(|p| p.strategy), Some(RestartStrategy::None));
        let fixed = policy(&[
            "restart-strategy.type=fixed-delay",
            "restart-strategy.fixed-delay.attempts=3",
            "restart-strategy.fixed-delay.delay=200 ms",
        ]);
        assert_eq!(fixed, Some(RestartPolicy::fixed_delay(3, Duration::from_millis(200))));
        // Flink's default for fixed-delay: one attempt after 1 s; the type alone is enough.
        assert_eq!(
            policy(&["restart-strategy.type=fixed-delay"]),
            Some(RestartPolicy::fixed_delay(1, Duration::from_secs(1)))
        );
        // Keys of one strategy alone name it.
        assert_eq!(
            policy(&["restart-strategy.fixed-delay.attempts=2"]),
            Some(RestartPolicy::fixed_delay(2, Duration::from_secs(1)))
        );
        let exponential = policy(&[
            "restart-strategy.type=exponential-delay",
            "restart-strategy.exponential-delay.initial-backoff=10ms",
            "restart-strategy.exponential-delay.max-backoff=1s",
            "restart-strategy.exponential-delay.backoff-multiplier=2.0",
            "restart-strategy.exponential-delay.reset-backoff-threshold=10min",
            "restart-strategy.exponential-delay.attempts-before-reset-backoff=5",
            "restart-strategy.exponential-delay.jitter-factor=0",
        ])
        .unwrap();
        assert_eq!(exponential.strategy, RestartStrategy::ExponentialBackoff);
        assert_eq!(
            (exponential.max_attempts, exponential.delay, exponential.max_delay, exponential.backoff_multiplier),
            (5, Duration::from_millis(10), Duration::from_secs(1), 2.0)
        );
        assert_eq!(exponential.reset_backoff_after, Duration::from_secs(600));
        // Flink 2.x's defaults for exponential-delay: 1 s doubling by 1.5 up to 1 min, unlimited.
        let default = policy(&["restart-strategy.type=exponential-delay"]).unwrap();
        assert_eq!(default, RestartPolicy::default_for(true));
        let rate = policy(&[
            "restart-strategy.type=failure-rate",
            "restart-strategy.failure-rate.max-failures-per-interval=3",
            "restart-strategy.failure-rate.failure-rate-interval=5 min",
            "restart-strategy.failure-rate.delay=2s",
        ])
        .unwrap();
        assert_eq!(
            (rate.strategy, rate.max_attempts, rate.failure_rate_interval, rate.delay),
            (RestartStrategy::FailureRate, 3, Duration::from_secs(300), Duration::from_secs(2))
        );
        // Keys of another strategy than the type are refused, naming the key.
        let err = parse(&["restart-strategy.type=fixed-delay", "restart-strategy.failure-rate.delay=1s"])
            .unwrap()
            .restart
            .policy()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "-D restart-strategy.failure-rate.delay: applies to restart-strategy.type=failure-rate, not fixed-delay"
        );
        let err = parse(&["restart-strategy.fixed-delay.delay=1s", "restart-strategy.failure-rate.delay=1s"])
            .unwrap()
            .restart
            .policy()
            .unwrap_err()
            .to_string();
        assert!(err.contains("several restart strategies"), "{err}");
        assert_eq!(
            parse(&["restart-strategy.fixed-delay.delay=1s"]).unwrap().restart.first_key(),
            Some("restart-strategy.fixed-delay.delay")
        );
    }
}
