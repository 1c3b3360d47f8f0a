//! Leader election among jobmanager replicas, on the storage they share (a shared filesystem or
//! S3-compatible object storage): no ZooKeeper and no Kubernetes API, so the same code runs under
//! Kubernetes (a jobmanager Deployment with several replicas) and without it.
//!
//! ```text
//! <storage>/ha/epoch-<n>   created by the candidate that leads epoch n, with a conditional put
//!                          (create if absent: exactly one candidate gets each epoch); holds its
//!                          id and addresses
//! <storage>/ha/beat-<n>    rewritten by epoch n's leader every renew interval (a counter)
//! <storage>/ha/released-<n> written by epoch n's leader when it hands over (SIGTERM): a
//!                          standby claims epoch n+1 at once instead of after a whole lease
//! ```
//!
//! - **Epochs are fencing tokens**: they only grow, and a leader stamps its epoch on what it
//!   tells taskmanagers and writes, so that whatever a deposed leader still sends is recognised
//!   as old.
//! - **A standby** watches the highest epoch's heartbeat. Expiry is judged on the standby's own
//!   monotonic clock (time since it last saw the heartbeat change), never by comparing clocks
//!   of different machines: when the heartbeat has not changed for [`LeaseTiming::lease`], it
//!   claims the next epoch. Of several standbys, the conditional put lets one win.
//! - **The leader** rewrites its heartbeat every [`LeaseTiming::renew_interval`] and acts only
//!   while its last successful write started less than [`LeaseTiming::renew_deadline`] ago on
//!   its own clock ([`Leadership::is_current`]). The deadline is below the lease, so a leader
//!   that is paused (SIGSTOP, a long GC-like stall) or cut off from the storage stops acting
//!   before any standby can take over, as long as the two clocks' rates differ by less than
//!   `lease / renew_deadline`. A leader that sees a higher epoch is deposed at once.
//! - **Handing over** ([`Leadership::hand_over`]): the leader stops acting (its fence closes),
//!   waits until its storage writes that passed the fence have landed, and only then writes
//!   `released-<n>`, so nothing of the old leader lands after a standby took over.
//! - Storage with conditional puts is required (S3 with `If-None-Match`, which `object_store`
//!   uses by default; a local or network filesystem through hard links).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tracing::{info, warn};
use weir_runtime::storage::{Storage, StorageError};

/// The lease's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a standby waits, on its own clock, without seeing the leader's heartbeat change
    /// before it claims the next epoch.
    pub lease: Duration,
    /// How often the leader writes its heartbeat (and a standby reads it).
    pub renew_interval: Duration,
    /// How long the leader goes on acting since its last successful heartbeat write started;
    /// below `lease`.
    pub renew_deadline: Duration,
}

impl Default for LeaseTiming {
    /// A 6 s lease renewed every second, acted on for 4 s: a dead leader is replaced within
    /// about 7 s (Flink's Kubernetes HA defaults are a 15 s lease renewed every 5 s).
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(6),
            renew_interval: Duration::from_secs(1),
            renew_deadline: Duration::from_secs(4),
        }
    }
}

impl LeaseTiming {
    /// Checks that the timing can work: a positive interval below the deadline, itself below
    /// the lease.
    ///
    /// # Errors
    /// One line saying which relation does not hold.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_interval.is_zero() || self.renew_interval >= self.renew_deadline {
            return Err(format!(
                "the lease's renew interval ({:?}) must be positive and below its renew deadline ({:?})",
                self.renew_interval, self.renew_deadline
            ));
        }
        if self.renew_deadline >= self.lease {
            return Err(format!(
                "the lease's renew deadline ({:?}) must be below the lease duration ({:?})",
                self.renew_deadline, self.lease
            ));
        }
        Ok(())
    }
}

/// Who leads an epoch: what the leader publishes in its epoch's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The jobmanager process (unique per start).
    pub id: String,
    /// Its REST URL.
    pub rest_url: String,
    /// Its RPC URL (for taskmanagers).
    pub rpc_url: String,
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadershipLost {
    /// Another jobmanager claimed a later epoch.
    Deposed {
        /// The later epoch.
        epoch: u64,
    },
    /// No heartbeat write succeeded within the renew deadline (storage unreachable, or the
    /// process was paused).
    Expired,
    /// This jobmanager handed its leadership over ([`Leadership::hand_over`]).
    HandedOver,
}

impl std::fmt::Display for LeadershipLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deposed { epoch } => write!(f, "another jobmanager leads epoch {epoch}"),
            Self::Expired => write!(f, "the lease expired (no heartbeat written within the renew deadline)"),
            Self::HandedOver => write!(f, "it was handed over"),
        }
    }
}

/// A candidate for leadership over the storage at `storage`'s `ha/` directory.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    storage: Storage,
    dir: String,
    candidate: LeaderInfo,
    timing: LeaseTiming,
}

/// The heartbeat's content: who writes it and how often it did.
#[derive(Debug, Serialize, Deserialize)]
struct Beat<'a> {
    id: &'a str,
    count: u64,
}

impl LeaderElection {
    /// A candidate `candidate` for the leadership recorded under `storage`'s `ha/` directory.
    pub fn new(storage: Storage, candidate: LeaderInfo, timing: LeaseTiming) -> Self {
        // The election's own writes decide who may write: never fenced.
        let storage = storage.unfenced();
        let dir = storage.url_of("ha");
        Self { storage, dir, candidate, timing }
    }

    fn epoch_url(&self, epoch: u64) -> String {
        format!("{}/epoch-{epoch:020}", self.dir)
    }

    fn beat_url(&self, epoch: u64) -> String {
        format!("{}/beat-{epoch:020}", self.dir)
    }

    fn released_url(&self, epoch: u64) -> String {
        format!("{}/released-{epoch:020}", self.dir)
    }

    /// Whether the leader of `epoch` handed over (an unreadable marker counts as absent).
    async fn released(&self, epoch: u64) -> bool {
        self.storage.get(&self.released_url(epoch)).await.is_ok()
    }

    /// The highest claimed epoch and its leader (`None` before the first election).
    ///
    /// # Errors
    /// The storage fails, or the epoch's object is not a leader's.
    pub async fn current(&self) -> Result<Option<(u64, LeaderInfo)>, StorageError> {
        let prefix = format!("{}/epoch-", self.dir);
        let highest = self
            .storage
            .list(&self.dir)
            .await?
            .into_iter()
            .filter_map(|(url, _)| url.strip_prefix(&prefix).and_then(|n| n.parse::<u64>().ok()))
            .max();
        let Some(epoch) = highest else { return Ok(None) };
        let bytes = self.storage.get(&self.epoch_url(epoch)).await?;
        let info = serde_json::from_slice(&bytes).map_err(|e| StorageError::Io {
            action: "cannot decode",
            url: self.epoch_url(epoch),
            message: e.to_string(),
        })?;
        Ok(Some((epoch, info)))
    }

    /// Tries to claim `epoch`: whether this candidate got it (and wrote its first heartbeat).
    async fn claim(&self, epoch: u64) -> Result<bool, StorageError> {
        let info = serde_json::to_vec(&self.candidate).unwrap_or_default();
        if !self.storage.put_if_absent(&self.epoch_url(epoch), info.into()).await? {
            return Ok(false);
        }
        info!(epoch, id = %self.candidate.id, "this jobmanager leads now");
        Ok(true)
    }

    /// Whether `epoch` has been claimed.
    async fn claimed(&self, epoch: u64) -> Result<bool, StorageError> {
        match self.storage.get(&self.epoch_url(epoch)).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The heartbeat of `epoch` as last written (`None` when there is none yet, or it cannot
    /// be read: no change is seen then).
    async fn beat(&self, epoch: u64) -> Option<bytes::Bytes> {
        self.storage.get(&self.beat_url(epoch)).await.ok()
    }

    /// Waits until this candidate leads: claims the first epoch if there is none, else watches
    /// the highest epoch's heartbeat and claims the next epoch once it has not changed for a
    /// whole lease (on this process's clock). Storage errors are retried.
    pub async fn acquire(&self) -> Leadership {
        loop {
            match self.try_acquire().await {
                Ok(Some(leadership)) => return leadership,
                Ok(None) => {}
                Err(e) => {
                    warn!(id = %self.candidate.id, "leader election: {e}; retrying");
                    tokio::time::sleep(self.timing.renew_interval).await;
                }
            }
        }
    }

    /// One round of [`Self::acquire`]: `None` when another candidate got the epoch this one
    /// tried for (look again).
    async fn try_acquire(&self) -> Result<Option<Leadership>, StorageError> {
        let Some((epoch, leader)) = self.current().await? else {
            return Ok(self.claim(1).await?.then(|| self.leadership(1)));
        };
        info!(epoch, leader = %leader.id, rest_url = %leader.rest_url, "standing by: another jobmanager leads");
        let mut seen = self.beat(epoch).await;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(self.timing.renew_interval).await;
            if self.claimed(epoch + 1).await? {
                return Ok(None);
            }
            if self.released(epoch).await {
                info!(epoch, leader = %leader.id, "the leader handed over: claiming the next epoch");
                return Ok(self.claim(epoch + 1).await?.then(|| self.leadership(epoch + 1)));
            }
            let beat = self.beat(epoch).await;
            if beat != seen {
                (seen, since) = (beat, Instant::now());
                continue;
            }
            if since.elapsed() >= self.timing.lease {
                info!(epoch, leader = %leader.id, "the leader's heartbeat stopped for a whole lease: claiming the next epoch");
                return Ok(self.claim(epoch + 1).await?.then(|| self.leadership(epoch + 1)));
            }
        }
    }

    fn leadership(&self, epoch: u64) -> Leadership {
        Leadership {
            election: self.clone(),
            epoch,
            renewed: Arc::new(Mutex::new(None)),
            handed_over: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// This jobmanager leads `epoch`: cheap to clone and share with everything that must check it
/// before acting.
#[derive(Debug, Clone)]
pub struct Leadership {
    election: LeaderElection,
    epoch: u64,
    /// When the last successful heartbeat write started (`None` before the first).
    renewed: Arc<Mutex<Option<Instant>>>,
    /// Set by [`Self::hand_over`]: never current again.
    handed_over: Arc<AtomicBool>,
}

impl Leadership {
    /// The epoch led: the fencing token.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this jobmanager may act as the leader now: its last heartbeat write started less
    /// than the renew deadline ago on its own monotonic clock (which goes on while the process
    /// is paused).
    pub fn is_current(&self) -> bool {
        if self.handed_over.load(Ordering::SeqCst) {
            return false;
        }
        let renewed = *self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        renewed.is_some_and(|at| at.elapsed() < self.election.timing.renew_deadline)
    }

    /// Renews the lease until it is lost, and says why: the caller then stops acting as the
    /// leader (the jobmanager exits and comes back as a standby). Writes the first heartbeat at
    /// once.
    pub async fn hold(&self) -> LeadershipLost {
        let election = &self.election;
        let beat_url = election.beat_url(self.epoch);
        let mut count = 0u64;
        loop {
            if self.handed_over.load(Ordering::SeqCst) {
                return LeadershipLost::HandedOver;
            }
            match election.claimed(self.epoch + 1).await {
                Ok(true) => {
                    warn!(epoch = self.epoch, "deposed: another jobmanager claimed epoch {}", self.epoch + 1);
                    *self.renewed.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    return LeadershipLost::Deposed { epoch: self.epoch + 1 };
                }
                Ok(false) => {}
                Err(e) => warn!(epoch = self.epoch, "leader election: cannot look for a later epoch: {e}"),
            }
            // A leader that is not current any more (paused past its deadline) writes no
            // heartbeat: standbys must see it silent.
            if count > 0 && !self.is_current() {
                warn!(epoch = self.epoch, "the lease expired: no heartbeat written within the renew deadline");
                return LeadershipLost::Expired;
            }
            let started = Instant::now();
            count += 1;
            let beat = serde_json::to_vec(&Beat { id: &election.candidate.id, count }).unwrap_or_default();
            match election.storage.put(&beat_url, beat.into()).await {
                Ok(()) => *self.renewed.lock().unwrap_or_else(PoisonError::into_inner) = Some(started),
                Err(e) => warn!(epoch = self.epoch, "leader election: cannot write the heartbeat: {e}"),
            }
            if self.handed_over.load(Ordering::SeqCst) {
                return LeadershipLost::HandedOver;
            }
            if !self.is_current() {
                warn!(epoch = self.epoch, "the lease expired: no heartbeat written within the renew deadline");
                return LeadershipLost::Expired;
            }
            tokio::time::sleep(election.timing.renew_interval).await;
        }
    }

    /// Hands the leadership over (the jobmanager shuts down, SIGTERM): stops acting at once
    /// (the storage fence closes and [`Self::hold`] ends), waits up to `settle` for storage
    /// writes that passed the fence before, then marks the epoch released so that a standby
    /// claims the next one at its next look instead of after a whole lease. Returns whether the
    /// marker was written (otherwise the standby takes over when the lease runs out).
    pub async fn hand_over(&self, settle: Duration) -> bool {
        self.handed_over.store(true, Ordering::SeqCst);
        if !weir_runtime::storage::fenced_writes_settled(settle).await {
            warn!(
                epoch = self.epoch,
                "handing over: writes still in flight after {settle:?}; the lease runs out instead"
            );
            return false;
        }
        let election = &self.election;
        match election.storage.put(&election.released_url(self.epoch), election.candidate.id.clone().into()).await {
            Ok(()) => {
                info!(epoch = self.epoch, "handed the leadership over");
                true
            }
            Err(e) => {
                warn!(
                    epoch = self.epoch,
                    "handing over: cannot mark the epoch released ({e}); the lease runs out instead"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::storage::StorageConfig;

    /// Short, but with a deadline that a loaded machine (the whole suite runs in parallel on
    /// two cores) does not stall a heartbeat write past: a 300 ms deadline once expired a live
    /// leader in CI.
    const TIMING: LeaseTiming = LeaseTiming {
        lease: Duration::from_millis(1500),
        renew_interval: Duration::from_millis(50),
        renew_deadline: Duration::from_millis(1200),
    };

    fn candidate(storage: &Storage, id: &str) -> LeaderElection {
        let info =
            LeaderInfo { id: id.into(), rest_url: format!("http://{id}:8081"), rpc_url: format!("http://{id}:6123") };
        LeaderElection::new(storage.clone(), info, TIMING)
    }

    fn storage(dir: &tempfile::TempDir) -> Storage {
        Storage::open(&StorageConfig { url: format!("file://{}", dir.path().display()), options: Default::default() })
            .unwrap()
    }

    #[tokio::test]
    async fn one_leads_and_a_standby_waits_while_the_leader_renews() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(&dir);
        let a = candidate(&storage, "a").acquire().await;
        assert_eq!(a.epoch(), 1);
        assert!(!a.is_current(), "not before its first heartbeat");
        let holding = tokio::spawn({
            let a = a.clone();
            async move { a.hold().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.is_current());
        let b = candidate(&storage, "b");
        let waited = tokio::time::timeout(TIMING.lease * 2, b.acquire()).await;
        assert!(!holding.is_finished(), "the leader stopped renewing: {:?}", holding.await);
        assert!(waited.is_err(), "the standby took over from a live leader");
        assert_eq!(b.current().await.unwrap().map(|(e, l)| (e, l.id)), Some((1, "a".into())));
        assert!(a.is_current());
        holding.abort();
    }

    #[tokio::test]
    async fn a_standby_takes_over_a_silent_leader_which_then_learns_it_is_deposed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(&dir);
        let a = candidate(&storage, "a").acquire().await;
        let holding = tokio::spawn({
            let a = a.clone();
            async move { a.hold().await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The leader pauses (its renewals stop, as under SIGSTOP).
        holding.abort();
        let paused = Instant::now();
        let b = candidate(&storage, "b").acquire().await;
        let took = paused.elapsed();
        assert_eq!(b.epoch(), 2);
        assert!(took >= TIMING.lease, "taken over after {took:?}, before a whole lease");
        assert!(!a.is_current(), "the paused leader's own clock ended its leadership first");
        // Resumed, the old leader learns at once that it was deposed, and writes no heartbeat.
        assert_eq!(a.hold().await, LeadershipLost::Deposed { epoch: 2 });
        assert!(!a.is_current());
    }

    #[tokio::test]
    async fn a_leader_that_hands_over_is_replaced_without_waiting_for_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(&dir);
        let a = candidate(&storage, "a").acquire().await;
        let holding = tokio::spawn({
            let a = a.clone();
            async move { a.hold().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = tokio::spawn(async move { candidate(&storage, "b").acquire().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let handed = Instant::now();
        assert!(a.hand_over(Duration::from_secs(1)).await);
        assert!(!a.is_current(), "it stops acting before the standby may start");
        assert_eq!(holding.await.unwrap(), LeadershipLost::HandedOver);
        let b = b.await.unwrap();
        let took = handed.elapsed();
        assert_eq!(b.epoch(), 2);
        assert!(took < TIMING.lease / 2, "taken over after {took:?}, the lease is {:?}", TIMING.lease);
    }

    #[tokio::test]
    async fn of_concurrent_claims_of_an_epoch_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(&dir);
        let claims: Vec<_> = (0..8)
            .map(|i| {
                let c = candidate(&storage, &format!("c{i}"));
                tokio::spawn(async move { c.claim(7).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for claim in claims {
            won += usize::from(claim.await.unwrap());
        }
        assert_eq!(won, 1);
    }

    #[test]
    fn the_timing_must_leave_room_between_renewals_deadline_and_lease() {
        assert!(LeaseTiming::default().check().is_ok());
        assert!(TIMING.check().is_ok());
        let e = LeaseTiming { renew_deadline: Duration::from_secs(6), ..LeaseTiming::default() }.check().unwrap_err();
        assert!(e.contains("below the lease duration"), "{e}");
        let e = LeaseTiming { renew_interval: Duration::ZERO, ..LeaseTiming::default() }.check().unwrap_err();
        assert!(e.contains("must be positive"), "{e}");
    }
}
