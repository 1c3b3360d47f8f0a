//! Restart strategies (Flink's `restart-strategy.*`): whether and when a failed job runs again.
//!
//! [`RestartTracker::on_failure`] is a pure decision: the failure's time in, the delay before
//! the next attempt (or `None`: give up) out.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Which strategy decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartStrategy {
    /// Never restart.
    None,
    /// Up to `max_attempts` restarts, each after `delay`.
    #[default]
    FixedDelay,
    /// Up to `max_attempts` restarts; the delay starts at `delay` and grows by
    /// `backoff_multiplier` per restart up to `max_delay`, back to `delay` after the job ran
    /// `reset_backoff_after` without failing.
    ExponentialBackoff,
    /// Restart after `delay` as long as at most `max_attempts` failures happened within the
    /// last `failure_rate_interval`.
    FailureRate,
}

impl std::str::FromStr for RestartStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "disable" => Ok(Self::None),
            "fixed-delay" => Ok(Self::FixedDelay),
            // Flink 1.x's name and Flink 2.x's (`restart-strategy.type: exponential-delay`).
            "exponential-backoff" | "exponential-delay" => Ok(Self::ExponentialBackoff),
            "failure-rate" => Ok(Self::FailureRate),
            other => Err(format!(
                "unknown restart strategy '{other}': expected none, fixed-delay, exponential-delay (or \
                 exponential-backoff) or failure-rate"
            )),
        }
    }
}

/// When a failed job runs again. On the wire and in job records durations are milliseconds
/// (`delay_ms`, ...) and the strategy has Flink's names (`exponential-delay` is read too).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "RestartPolicyWire", try_from = "RestartPolicyWire")]
pub struct RestartPolicy {
    /// The strategy.
    pub strategy: RestartStrategy,
    /// Fixed delay and exponential backoff: restarts allowed (0: none). Failure rate: failures
    /// tolerated per interval.
    pub max_attempts: u32,
    /// Pause before a restart (the first one, for exponential backoff).
    pub delay: Duration,
    /// Exponential backoff: the longest pause.
    pub max_delay: Duration,
    /// Exponential backoff: growth of the pause per restart (at least 1).
    pub backoff_multiplier: f64,
    /// Exponential backoff: running this long without a failure resets the pause.
    pub reset_backoff_after: Duration,
    /// Failure rate: the interval failures are counted in.
    pub failure_rate_interval: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            strategy: RestartStrategy::FixedDelay,
            max_attempts: 0,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            backoff_multiplier: 2.0,
            reset_backoff_after: Duration::from_secs(3600),
            failure_rate_interval: Duration::from_secs(60),
        }
    }
}

/// [`RestartPolicy`] as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartPolicyWire {
    strategy: String,
    max_attempts: u32,
    delay_ms: u64,
    max_delay_ms: u64,
    backoff_multiplier: f64,
    reset_backoff_after_ms: u64,
    failure_rate_interval_ms: u64,
}

impl From<RestartPolicy> for RestartPolicyWire {
    fn from(p: RestartPolicy) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let strategy = match p.strategy {
            RestartStrategy::None => "none",
            RestartStrategy::FixedDelay => "fixed-delay",
            RestartStrategy::ExponentialBackoff => "exponential-delay",
            RestartStrategy::FailureRate => "failure-rate",
        };
        Self {
            strategy: strategy.to_owned(),
            max_attempts: p.max_attempts,
            delay_ms: ms(p.delay),
            max_delay_ms: ms(p.max_delay),
            backoff_multiplier: p.backoff_multiplier,
            reset_backoff_after_ms: ms(p.reset_backoff_after),
            failure_rate_interval_ms: ms(p.failure_rate_interval),
        }
    }
}

impl TryFrom<RestartPolicyWire> for RestartPolicy {
    type Error = String;
    fn try_from(w: RestartPolicyWire) -> Result<Self, String> {
        if !(w.backoff_multiplier.is_finite() && w.backoff_multiplier >= 1.0) {
            return Err(format!("backoff_multiplier {} is not a number of at least 1", w.backoff_multiplier));
        }
        if w.failure_rate_interval_ms == 0 {
            return Err("failure_rate_interval_ms must be longer than 0".to_owned());
        }
        Ok(Self {
            strategy: w.strategy.parse()?,
            max_attempts: w.max_attempts,
            delay: Duration::from_millis(w.delay_ms),
            max_delay: Duration::from_millis(w.max_delay_ms),
            backoff_multiplier: w.backoff_multiplier,
            reset_backoff_after: Duration::from_millis(w.reset_backoff_after_ms),
            failure_rate_interval: Duration::from_millis(w.failure_rate_interval_ms),
        })
    }
}

impl RestartPolicy {
    /// A fixed-delay policy.
    pub fn fixed_delay(max_attempts: u32, delay: Duration) -> Self {
        Self { strategy: RestartStrategy::FixedDelay, max_attempts, delay, ..Self::default() }
    }

    /// Never restart.
    pub fn none() -> Self {
        Self { strategy: RestartStrategy::None, ..Self::default() }
    }

    /// The policy of a job for which none is configured, as in Flink 2.x: a job that takes
    /// checkpoints restarts without limit with exponential delays (1 s, growing by 1.5 up to
    /// 1 min, back to 1 s after an hour without failure); one without checkpoints does not
    /// restart.
    pub fn default_for(checkpointing: bool) -> Self {
        if !checkpointing {
            return Self::none();
        }
        Self {
            strategy: RestartStrategy::ExponentialBackoff,
            max_attempts: u32::MAX,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            backoff_multiplier: 1.5,
            reset_backoff_after: Duration::from_secs(3600),
            failure_rate_interval: Duration::from_secs(60),
        }
    }
}

/// A job's failures, as the policy needs them.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    restarts: u32,
    /// Failure times within the failure-rate interval, oldest first.
    recent: VecDeque<Instant>,
    /// The current exponential-backoff pause.
    backoff: Option<Duration>,
    /// When the current attempt started running.
    running_since: Option<Instant>,
}

impl RestartTracker {
    /// The job's attempt started at `now`.
    pub fn attempt_started(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// The attempt failed at `now`: the delay before restarting, or `None` to fail the job.
    pub fn on_failure(&mut self, policy: &RestartPolicy, now: Instant) -> Option<Duration> {
        let delay = match policy.strategy {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay => (self.restarts < policy.max_attempts).then_some(policy.delay),
            RestartStrategy::ExponentialBackoff => {
                if self.restarts >= policy.max_attempts {
                    None
                } else {
                    let ran = self.running_since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                    let current = match self.backoff {
                        Some(previous) if ran < policy.reset_backoff_after => {
                            previous.mul_f64(policy.backoff_multiplier.max(1.0)).min(policy.max_delay)
                        }
                        _ => policy.delay.min(policy.max_delay),
                    };
                    self.backoff = Some(current);
                    Some(current)
                }
            }
            RestartStrategy::FailureRate => {
                self.recent.push_back(now);
                while self
                    .recent
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > policy.failure_rate_interval)
                {
                    self.recent.pop_front();
                }
                (self.recent.len() <= policy.max_attempts as usize).then_some(policy.delay)
            }
        };
        if delay.is_some() {
            self.restarts += 1;
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn policies_travel_as_json_with_flinks_names_and_milliseconds() {
        let policy = RestartPolicy { backoff_multiplier: 1.5, ..RestartPolicy::default_for(true) };
        let json = serde_json::to_value(policy).unwrap();
        assert_eq!(json["strategy"], "exponential-delay");
        assert_eq!((json["delay_ms"].as_u64(), json["max_delay_ms"].as_u64()), (Some(1000), Some(60_000)));
        assert_eq!(serde_json::from_value::<RestartPolicy>(json.clone()).unwrap(), policy);
        let mut bad = json;
        bad["backoff_multiplier"] = serde_json::json!(0.5);
        let e = serde_json::from_value::<RestartPolicy>(bad.clone()).unwrap_err().to_string();
        assert!(e.contains("backoff_multiplier 0.5"), "{e}");
        bad["backoff_multiplier"] = serde_json::json!(2.0);
        bad["strategy"] = serde_json::json!("sometimes");
        let e = serde_json::from_value::<RestartPolicy>(bad).unwrap_err().to_string();
        assert!(e.contains("unknown restart strategy 'sometimes'"), "{e}");
    }

    #[test]
    fn fixed_delay_restarts_max_attempts_times() {
        let policy = RestartPolicy::fixed_delay(2, 5 * MS);
        let mut t = RestartTracker::default();
        let now = Instant::now();
        assert_eq!(t.on_failure(&policy, now), Some(5 * MS));
        assert_eq!(t.on_failure(&policy, now), Some(5 * MS));
        assert_eq!(t.on_failure(&policy, now), None);
        assert_eq!(RestartTracker::default().on_failure(&RestartPolicy::default(), now), None, "0 attempts");
    }

    #[test]
    fn exponential_backoff_grows_up_to_the_maximum_and_resets_after_a_long_run() {
        let policy = RestartPolicy {
            strategy: RestartStrategy::ExponentialBackoff,
            max_attempts: 10,
            delay: 100 * MS,
            max_delay: 350 * MS,
            backoff_multiplier: 2.0,
            reset_backoff_after: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let mut t = RestartTracker::default();
        let start = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|i| {
                t.attempt_started(start + i * MS);
                t.on_failure(&policy, start + (i + 1) * MS)
            })
            .collect();
        assert_eq!(delays, vec![Some(100 * MS), Some(200 * MS), Some(350 * MS), Some(350 * MS)]);
        t.attempt_started(start);
        assert_eq!(t.on_failure(&policy, start + Duration::from_secs(11)), Some(100 * MS), "reset after 10 s running");
    }

    #[test]
    fn failure_rate_gives_up_when_too_many_failures_fall_in_the_interval() {
        let policy = RestartPolicy {
            strategy: RestartStrategy::FailureRate,
            max_attempts: 2,
            delay: 7 * MS,
            failure_rate_interval: Duration::from_secs(60),
            ..RestartPolicy::default()
        };
        let mut t = RestartTracker::default();
        let start = Instant::now();
        assert_eq!(t.on_failure(&policy, start), Some(7 * MS));
        assert_eq!(t.on_failure(&policy, start + Duration::from_secs(30)), Some(7 * MS));
        // The first failure left the interval: still two within 60 s.
        assert_eq!(t.on_failure(&policy, start + Duration::from_secs(61)), Some(7 * MS));
        assert_eq!(t.on_failure(&policy, start + Duration::from_secs(62)), None, "three failures within 60 s");
    }

    #[test]
    fn without_a_configured_strategy_only_jobs_with_checkpoints_restart_and_they_keep_restarting() {
        let now = Instant::now();
        assert_eq!(RestartTracker::default().on_failure(&RestartPolicy::default_for(false), now), None);
        let policy = RestartPolicy::default_for(true);
        let mut t = RestartTracker::default();
        let delays: Vec<Duration> = (0..20).map(|_| t.on_failure(&policy, now).expect("restarts")).collect();
        assert_eq!(delays[0], Duration::from_secs(1));
        assert_eq!(delays[1], Duration::from_millis(1500));
        assert_eq!(delays[19], Duration::from_secs(60), "capped at a minute");
    }

    #[test]
    fn strategies_parse_by_their_flink_names() {
        assert_eq!("exponential-backoff".parse(), Ok(RestartStrategy::ExponentialBackoff));
        assert_eq!("exponential-delay".parse(), Ok(RestartStrategy::ExponentialBackoff));
        assert_eq!("none".parse(), Ok(RestartStrategy::None));
        assert!("sometimes".parse::<RestartStrategy>().unwrap_err().contains("fixed-delay"));
    }
}
