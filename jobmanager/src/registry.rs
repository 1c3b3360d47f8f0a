//! The cluster registry: the registered taskmanagers, their slots and heartbeats, and which job
//! holds which slots.
//!
//! One owner task holds all of it ([`RegistryHandle`] sends it messages); nobody else touches
//! its state. Readers (REST) see the [`RegistryView`] it publishes after every change. It detects
//! lost taskmanagers (heartbeat timeout, a new registration under a known id, or another
//! component's report) and tells every job that holds slots there. Slot requests wait in a queue
//! until enough slots are free or their deadline passes.

use crate::job::JobInput;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};
use weir_runtime::metrics::ProcessStats;
use weir_runtime::{JobId, TaskManagerGateway};

/// A registered taskmanager, as reported by `GET /taskmanagers`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskManagerInfo {
    /// Its id.
    pub id: String,
    /// Slots it offers.
    pub slots: u32,
    /// Slots no job holds.
    pub free_slots: u32,
    /// Its data-plane address (`host:port`), empty in the local mini-cluster.
    pub data_address: String,
    /// Seconds since its last heartbeat (0 for the local mini-cluster's).
    pub seconds_since_heartbeat: f64,
    /// What its process uses, as of its last heartbeat (`None` before one that told, and for the
    /// local mini-cluster's, which is the jobmanager's own process).
    #[serde(skip)]
    pub process: Option<ProcessStats>,
}

/// What the registry publishes after every change.
#[derive(Debug, Clone, Default)]
pub struct RegistryView {
    taskmanagers: Vec<TaskManagerEntry>,
}

#[derive(Debug, Clone)]
struct TaskManagerEntry {
    id: String,
    slots: u32,
    free_slots: u32,
    data_address: String,
    /// `None` for a taskmanager that sends no heartbeats (the mini-cluster's).
    last_heartbeat: Option<Instant>,
    process: Option<ProcessStats>,
}

impl RegistryView {
    /// The registered taskmanagers, by id, with their heartbeat ages as of now.
    pub fn taskmanagers(&self) -> Vec<TaskManagerInfo> {
        self.taskmanagers
            .iter()
            .map(|tm| TaskManagerInfo {
                id: tm.id.clone(),
                slots: tm.slots,
                free_slots: tm.free_slots,
                data_address: tm.data_address.clone(),
                seconds_since_heartbeat: tm.last_heartbeat.map_or(0.0, |t| t.elapsed().as_secs_f64()),
                process: tm.process,
            })
            .collect()
    }

    /// Number of registered taskmanagers.
    pub fn len(&self) -> usize {
        self.taskmanagers.len()
    }

    /// Whether no taskmanager is registered.
    pub fn is_empty(&self) -> bool {
        self.taskmanagers.is_empty()
    }

    /// Slots offered by all taskmanagers.
    pub fn slots_total(&self) -> u32 {
        self.taskmanagers.iter().map(|tm| tm.slots).sum()
    }

    /// Slots no job holds.
    pub fn slots_free(&self) -> u32 {
        self.taskmanagers.iter().map(|tm| tm.free_slots).sum()
    }
}

/// One slot given to a job: where its subtasks run.
#[derive(Clone)]
pub(crate) struct AssignedSlot {
    /// The taskmanager's id.
    pub(crate) taskmanager: String,
    /// How to reach it.
    pub(crate) gateway: Arc<dyn TaskManagerGateway>,
    /// Its data-plane address.
    pub(crate) data_address: String,
}

impl std::fmt::Debug for AssignedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssignedSlot").field("taskmanager", &self.taskmanager).finish_non_exhaustive()
    }
}

/// A slot request that could not be met before its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not get {needed} task slots within {waited:?}: {free} free on {taskmanagers} taskmanagers")]
pub(crate) struct SlotShortage {
    pub(crate) needed: u32,
    pub(crate) waited: Duration,
    pub(crate) free: u32,
    pub(crate) taskmanagers: usize,
}

enum RegistryInput {
    Register { gateway: Arc<dyn TaskManagerGateway>, data_address: String, monitored: bool, instance: Option<String> },
    Deregister { taskmanager: String, instance: String, reason: String, reply: oneshot::Sender<bool> },
    Heartbeat { taskmanager: String, process: Option<ProcessStats>, reply: oneshot::Sender<bool> },
    Lost { taskmanager: String, reason: String },
    RequestSlots(SlotRequest),
    ReleaseSlots { job: JobId },
}

struct SlotRequest {
    job: JobId,
    needed: u32,
    asked: Instant,
    deadline: Instant,
    /// Where the job hears about lost taskmanagers while it holds the slots.
    listener: mpsc::UnboundedSender<JobInput>,
    reply: oneshot::Sender<Result<Vec<AssignedSlot>, SlotShortage>>,
}

/// The handle through which everyone else talks to the registry. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RegistryHandle {
    inputs: mpsc::UnboundedSender<RegistryInput>,
    view: watch::Receiver<Arc<RegistryView>>,
}

impl std::fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHandle").finish_non_exhaustive()
    }
}

impl RegistryHandle {
    /// Starts the registry's owner task on the current tokio runtime; it declares a monitored
    /// taskmanager lost after `heartbeat_timeout` without a heartbeat.
    pub(crate) fn start(heartbeat_timeout: Duration) -> Self {
        let (inputs, receiver) = mpsc::unbounded_channel();
        let (view_tx, view) = watch::channel(Arc::new(RegistryView::default()));
        let registry = Registry {
            taskmanagers: BTreeMap::new(),
            holders: HashMap::new(),
            requests: VecDeque::new(),
            heartbeat_timeout,
            view: view_tx,
        };
        tokio::spawn(registry.run(receiver));
        Self { inputs, view }
    }

    fn send(&self, input: RegistryInput) {
        // The registry lives as long as any handle: sending cannot fail while it runs.
        let _ = self.inputs.send(input);
    }

    /// Adds a taskmanager's slots. A taskmanager registering again under a known id lost its
    /// earlier tasks (it restarted): it is declared lost first. `monitored`: whether it sends
    /// heartbeats.
    pub(crate) fn register(&self, gateway: Arc<dyn TaskManagerGateway>, data_address: String, monitored: bool) {
        self.send(RegistryInput::Register { gateway, data_address, monitored, instance: None });
    }

    /// [`Self::register`] of a monitored taskmanager process started as `instance`, which can
    /// end this registration with [`Self::deregister`].
    pub(crate) fn register_instance(
        &self,
        gateway: Arc<dyn TaskManagerGateway>,
        data_address: String,
        instance: String,
    ) {
        let instance = Some(instance).filter(|i| !i.is_empty());
        self.send(RegistryInput::Register { gateway, data_address, monitored: true, instance });
    }

    /// Ends the registration of `taskmanager` made by `instance` (it shuts down): it is lost
    /// now. `false` when no such registration exists (already lost, or replaced by a later
    /// start under the same id, which is left alone).
    pub(crate) async fn deregister(&self, taskmanager: &str, instance: &str, reason: &str) -> bool {
        let (reply, answer) = oneshot::channel();
        self.send(RegistryInput::Deregister {
            taskmanager: taskmanager.to_owned(),
            instance: instance.to_owned(),
            reason: reason.to_owned(),
            reply,
        });
        answer.await.unwrap_or(false)
    }

    /// Records a heartbeat that reported `process`; `false` for an unknown taskmanager, which
    /// must register (again).
    pub(crate) async fn heartbeat(&self, taskmanager: &str, process: Option<ProcessStats>) -> bool {
        let (reply, answer) = oneshot::channel();
        self.send(RegistryInput::Heartbeat { taskmanager: taskmanager.to_owned(), process, reply });
        answer.await.unwrap_or(false)
    }

    /// Declares a taskmanager lost now; the jobs holding slots there hear of it.
    pub(crate) fn lost(&self, taskmanager: &str, reason: &str) {
        self.send(RegistryInput::Lost { taskmanager: taskmanager.to_owned(), reason: reason.to_owned() });
    }

    /// Asks for `needed` slots for `job` (the slots it held before are released first), waiting
    /// up to `timeout` for them to be free. While the job holds them, `listener` hears of every
    /// lost taskmanager among them. Dropping the returned receiver withdraws the request.
    pub(crate) fn request_slots(
        &self,
        job: JobId,
        needed: u32,
        timeout: Duration,
        listener: mpsc::UnboundedSender<JobInput>,
    ) -> oneshot::Receiver<Result<Vec<AssignedSlot>, SlotShortage>> {
        let (reply, answer) = oneshot::channel();
        let asked = Instant::now();
        self.send(RegistryInput::RequestSlots(SlotRequest {
            job,
            needed,
            asked,
            deadline: asked + timeout,
            listener,
            reply,
        }));
        answer
    }

    /// Frees the slots `job` holds.
    pub(crate) fn release_slots(&self, job: JobId) {
        self.send(RegistryInput::ReleaseSlots { job });
    }

    /// The latest published view.
    pub(crate) fn view(&self) -> Arc<RegistryView> {
        self.view.borrow().clone()
    }
}

struct Registered {
    gateway: Arc<dyn TaskManagerGateway>,
    data_address: String,
    last_heartbeat: Instant,
    process: Option<ProcessStats>,
    monitored: bool,
    /// The process start that registered (see [`RegistryHandle::register_instance`]).
    instance: Option<String>,
}

/// Slots a job holds: the taskmanager of each, and where to report their loss.
struct Holder {
    slots: Vec<String>,
    listener: mpsc::UnboundedSender<JobInput>,
}

struct Registry {
    taskmanagers: BTreeMap<String, Registered>,
    holders: HashMap<JobId, Holder>,
    requests: VecDeque<SlotRequest>,
    heartbeat_timeout: Duration,
    view: watch::Sender<Arc<RegistryView>>,
}

impl Registry {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<RegistryInput>) {
        let period = (self.heartbeat_timeout / 5).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => self.apply(input),
                    None => break,
                },
                _ = tick.tick() => self.check(Instant::now()),
            }
            self.grant(Instant::now());
            self.publish();
        }
    }

    fn apply(&mut self, input: RegistryInput) {
        match input {
            RegistryInput::Register { gateway, data_address, monitored, instance } => {
                let id = gateway.id().to_owned();
                if self.taskmanagers.contains_key(&id) {
                    self.lose(&id, "it registered again (restarted)");
                }
                info!(taskmanager = %id, slots = gateway.slots(), %data_address, "taskmanager registered");
                self.taskmanagers.insert(
                    id,
                    Registered {
                        gateway,
                        data_address,
                        last_heartbeat: Instant::now(),
                        process: None,
                        monitored,
                        instance,
                    },
                );
            }
            RegistryInput::Deregister { taskmanager, instance, reason, reply } => {
                let registered = self
                    .taskmanagers
                    .get(&taskmanager)
                    .is_some_and(|tm| tm.instance.as_deref() == Some(instance.as_str()));
                if registered {
                    self.lose(&taskmanager, &reason);
                } else {
                    info!(taskmanager = %taskmanager, instance = %instance, "deregistration of an unknown registration ignored");
                }
                let _ = reply.send(registered);
            }
            RegistryInput::Heartbeat { taskmanager, process, reply } => {
                let known = match self.taskmanagers.get_mut(&taskmanager) {
                    Some(tm) => {
                        tm.last_heartbeat = Instant::now();
                        if process.is_some() && tm.process != process {
                            tm.process = process;
                            self.publish();
                        }
                        true
                    }
                    None => false,
                };
                let _ = reply.send(known);
            }
            RegistryInput::Lost { taskmanager, reason } => self.lose(&taskmanager, &reason),
            RegistryInput::RequestSlots(request) => {
                self.holders.remove(&request.job);
                self.requests.push_back(request);
            }
            RegistryInput::ReleaseSlots { job } => {
                self.holders.remove(&job);
            }
        }
    }

    /// Declares silent taskmanagers lost and fails requests past their deadline.
    fn check(&mut self, now: Instant) {
        let silent: Vec<(String, Duration)> = self
            .taskmanagers
            .iter()
            .filter(|(_, tm)| tm.monitored)
            .map(|(id, tm)| (id.clone(), now.saturating_duration_since(tm.last_heartbeat)))
            .filter(|(_, silent)| *silent > self.heartbeat_timeout)
            .collect();
        for (id, silent) in silent {
            self.lose(&id, &format!("no heartbeat for {:.1} s", silent.as_secs_f64()));
        }
        let free: u32 = self.free_slots().values().sum();
        let taskmanagers = self.taskmanagers.len();
        let (expired, waiting): (Vec<SlotRequest>, Vec<SlotRequest>) =
            self.requests.drain(..).partition(|r| now >= r.deadline);
        self.requests = waiting.into();
        for request in expired {
            let shortage = SlotShortage {
                needed: request.needed,
                waited: request.deadline.saturating_duration_since(request.asked),
                free,
                taskmanagers,
            };
            let _ = request.reply.send(Err(shortage));
        }
    }

    fn lose(&mut self, id: &str, reason: &str) {
        if self.taskmanagers.remove(id).is_none() {
            return;
        }
        warn!(taskmanager = id, "taskmanager lost: {reason}");
        for holder in self.holders.values().filter(|h| h.slots.iter().any(|s| s == id)) {
            let _ = holder
                .listener
                .send(JobInput::TaskManagerLost { taskmanager: id.to_owned(), reason: reason.to_owned() });
        }
    }

    /// Free slots per taskmanager: offered minus held.
    fn free_slots(&self) -> BTreeMap<String, u32> {
        let mut free: BTreeMap<String, u32> =
            self.taskmanagers.iter().map(|(id, tm)| (id.clone(), tm.gateway.slots())).collect();
        for holder in self.holders.values() {
            for tm in &holder.slots {
                if let Some(n) = free.get_mut(tm) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        free
    }

    /// Grants waiting requests, oldest first, while slots suffice; withdrawn requests go.
    fn grant(&mut self, now: Instant) {
        if self.requests.is_empty() {
            return;
        }
        let mut waiting = VecDeque::new();
        while let Some(request) = self.requests.pop_front() {
            if request.reply.is_closed() {
                continue;
            }
            let Some(slots) = allocate(&self.free_slots(), request.needed) else {
                waiting.push_back(request);
                continue;
            };
            let assigned: Vec<AssignedSlot> = slots
                .iter()
                .map(|id| {
                    let tm = &self.taskmanagers[id];
                    AssignedSlot {
                        taskmanager: id.clone(),
                        gateway: tm.gateway.clone(),
                        data_address: tm.data_address.clone(),
                    }
                })
                .collect();
            if request.reply.send(Ok(assigned)).is_ok() {
                tracing::debug!(job_id = %request.job, slots = request.needed, waited_ms = now.saturating_duration_since(request.asked).as_millis() as u64, "slots granted");
                self.holders.insert(request.job, Holder { slots, listener: request.listener });
            }
        }
        self.requests = waiting;
    }

    fn publish(&self) {
        let free = self.free_slots();
        let taskmanagers = self
            .taskmanagers
            .iter()
            .map(|(id, tm)| TaskManagerEntry {
                id: id.clone(),
                slots: tm.gateway.slots(),
                free_slots: free.get(id).copied().unwrap_or(0),
                data_address: tm.data_address.clone(),
                last_heartbeat: tm.monitored.then_some(tm.last_heartbeat),
                process: tm.process,
            })
            .collect();
        self.view.send_replace(Arc::new(RegistryView { taskmanagers }));
    }
}

/// Picks `needed` slots from the free ones, round robin over taskmanagers so that subtasks
/// spread across them.
pub(crate) fn allocate(free: &BTreeMap<String, u32>, needed: u32) -> Option<Vec<String>> {
    if free.values().sum::<u32>() < needed {
        return None;
    }
    let mut left = free.clone();
    let mut slots = Vec::with_capacity(needed as usize);
    while slots.len() < needed as usize {
        for (tm, n) in left.iter_mut() {
            if *n > 0 && slots.len() < needed as usize {
                *n -= 1;
                slots.push(tm.clone());
            }
        }
    }
    Some(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deregistration_ends_only_the_registration_of_its_instance() {
        use crate::job::tests::FakeTaskManager;
        let registry = RegistryHandle::start(Duration::from_secs(60));
        registry.register_instance(FakeTaskManager::new("tm-a"), "127.0.0.1:1".into(), "start-1".into());
        // The process restarted under the same id (a StatefulSet pod) and registered again.
        registry.register_instance(FakeTaskManager::new("tm-a"), "127.0.0.1:1".into(), "start-2".into());
        assert!(!registry.deregister("tm-a", "start-1", "late").await, "a late call of the earlier start");
        let process = ProcessStats { rss_bytes: 1 << 20, cpu_time_ms: 70, threads: 9 };
        assert!(registry.heartbeat("tm-a", Some(process)).await, "the later registration stays");
        let tm = registry.view().taskmanagers().into_iter().find(|tm| tm.id == "tm-a").unwrap();
        assert_eq!(tm.process, Some(process), "the heartbeat's process figures are published");
        assert!(registry.deregister("tm-a", "start-2", "SIGTERM").await);
        assert!(!registry.heartbeat("tm-a", None).await, "lost at once");
        assert!(!registry.deregister("tm-a", "start-2", "SIGTERM").await, "a repeated call");
        // A registration without an instance (the local mini-cluster's) cannot be ended so.
        registry.register(FakeTaskManager::new("tm-b"), String::new(), false);
        assert!(!registry.deregister("tm-b", "", "").await);
        assert!(registry.heartbeat("tm-b", None).await);
    }

    #[test]
    fn allocation_spreads_slots_round_robin() {
        let free: BTreeMap<String, u32> = [("a".to_owned(), 2), ("b".to_owned(), 3)].into();
        assert_eq!(allocate(&free, 4).unwrap(), vec!["a", "b", "a", "b"]);
        assert_eq!(allocate(&free, 5).unwrap(), vec!["a", "b", "a", "b", "b"]);
        assert_eq!(allocate(&free, 6), None);
    }
}
