//! A harness for operator unit tests: an in-memory [`TaskRuntime`] that hands out in-memory keyed
//! state ([`MemoryBackend`]) and restored snapshots, and a [`Downstream`] that records what an
//! operator emits. Operators are driven directly (records, watermarks, snapshots, restores),
//! without a taskmanager.

use crate::chain::{Downstream, Output, StreamRecord};
use crate::connectors::{SinkDescriptor, SourceDescriptor};
use crate::error::{Error, Result};
use crate::runtime::{
    CheckpointId, KeyGroupState, KeyedStateBackend, LogLevel, OperatorSnapshot, RestoredState, SinkWriter,
    SourceReader, StateEntry, StateId, StateKey, StateKind, TaskInfo, TaskRuntime, TypedBatch, encode_list_element,
    encode_state_entry, state_entries,
};
use crate::time::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

/// Keyed state in a sorted map: the reference implementation of [`KeyedStateBackend`] for tests.
///
/// Entries are addressed by state name, so a restore needs no registration first (unlike the
/// taskmanager's backends, which learn a state's kind only then). Internal structures (`__*`)
/// are not restored: operators restore them.
pub(crate) struct MemoryBackend {
    key_groups: RangeInclusive<u16>,
    states: Vec<(String, StateKind)>,
    /// Every entry's value; the user key is empty except for map state.
    entries: BTreeMap<EntryKey, Vec<u8>>,
    /// The value `get` returned last.
    read: Vec<u8>,
}

/// `(state, key group, key, namespace, user key)`.
type EntryKey = (String, u16, Vec<u8>, Vec<u8>, Vec<u8>);

impl MemoryBackend {
    pub(crate) fn new(key_groups: RangeInclusive<u16>) -> Self {
        Self { key_groups, states: Vec::new(), entries: BTreeMap::new(), read: Vec::new() }
    }

    fn address(&self, state: StateId, key: &StateKey<'_>, user_key: &[u8]) -> Result<EntryKey> {
        if !self.key_groups.contains(&key.key_group) {
            return Err(Error::runtime("memory backend", format!("key group {} out of range", key.key_group)));
        }
        let (name, _) = self
            .states
            .get(state as usize)
            .ok_or_else(|| Error::runtime("memory backend", format!("unknown state {state}")))?;
        Ok((name.clone(), key.key_group, key.key.to_vec(), key.namespace.to_vec(), user_key.to_vec()))
    }
}

impl KeyedStateBackend for MemoryBackend {
    fn register_state(&mut self, name: &str, kind: StateKind) -> Result<StateId> {
        if let Some(id) = self.states.iter().position(|(n, _)| n == name) {
            return Ok(id as StateId);
        }
        self.states.push((name.to_owned(), kind));
        Ok((self.states.len() - 1) as StateId)
    }

    fn get(&mut self, state: StateId, key: StateKey<'_>) -> Result<Option<&[u8]>> {
        let address = self.address(state, &key, &[])?;
        match self.entries.get(&address) {
            Some(value) => {
                self.read.clone_from(value);
                Ok(Some(&self.read))
            }
            None => Ok(None),
        }
    }

    fn put(&mut self, state: StateId, key: StateKey<'_>, value: &[u8]) -> Result<()> {
        let address = self.address(state, &key, &[])?;
        self.entries.insert(address, value.to_vec());
        Ok(())
    }

    fn append(&mut self, state: StateId, key: StateKey<'_>, element: &[u8]) -> Result<()> {
        let address = self.address(state, &key, &[])?;
        encode_list_element(self.entries.entry(address).or_default(), element);
        Ok(())
    }

    fn remove(&mut self, state: StateId, key: StateKey<'_>) -> Result<()> {
        let (name, group, k, namespace, _) = self.address(state, &key, &[])?;
        self.entries.retain(|(n, g, ek, ns, _), _| !(*n == name && *g == group && *ek == k && *ns == namespace));
        Ok(())
    }

    fn map_get(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8]) -> Result<Option<&[u8]>> {
        let address = self.address(state, &key, user_key)?;
        Ok(self.entries.get(&address).map(Vec::as_slice))
    }

    fn map_put(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8], value: &[u8]) -> Result<()> {
        let address = self.address(state, &key, user_key)?;
        self.entries.insert(address, value.to_vec());
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8]) -> Result<()> {
        let address = self.address(state, &key, user_key)?;
        self.entries.remove(&address);
        Ok(())
    }

    fn map_scan(
        &mut self,
        state: StateId,
        key: StateKey<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let (name, group, k, namespace, _) = self.address(state, &key, &[])?;
        for ((n, g, ek, ns, user_key), value) in &self.entries {
            if *n == name && *g == group && *ek == k && *ns == namespace && !visit(user_key, value) {
                break;
            }
        }
        Ok(())
    }

    fn remove_expired(&mut self, state: StateId, kind: StateKind, expiry: crate::runtime::Expiry) -> Result<u64> {
        let Some((name, _)) = self.states.get(state as usize).cloned() else {
            return Err(Error::runtime("memory backend", format!("unknown state {state}")));
        };
        let mut removed = 0;
        let mut live = Vec::new();
        self.entries.retain(|(n, ..), value| {
            if *n != name {
                return true;
            }
            if kind == StateKind::List {
                match expiry.live_elements(value, &mut live) {
                    Ok(expired) => {
                        removed += expired;
                        std::mem::swap(value, &mut live);
                        !value.is_empty()
                    }
                    Err(_) => true,
                }
            } else if expiry.expired(value) {
                removed += 1;
                false
            } else {
                true
            }
        });
        Ok(removed)
    }

    fn snapshot(&mut self) -> Result<Vec<KeyGroupState>> {
        let mut groups: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        for ((state, group, key, namespace, user_key), value) in &self.entries {
            let entry = StateEntry { state, key, namespace, user_key, value };
            encode_state_entry(groups.entry(*group).or_default(), entry)?;
        }
        Ok(groups.into_iter().map(|(key_group, entries)| KeyGroupState { key_group, entries }).collect())
    }

    fn restore(&mut self, groups: &[KeyGroupState]) -> Result<()> {
        for group in groups.iter().filter(|g| self.key_groups.contains(&g.key_group)) {
            for entry in state_entries(&group.entries) {
                let e = entry?;
                if e.state.starts_with("__") {
                    continue;
                }
                let address =
                    (e.state.to_owned(), group.key_group, e.key.to_vec(), e.namespace.to_vec(), e.user_key.to_vec());
                self.entries.insert(address, e.value.to_vec());
            }
        }
        Ok(())
    }
}

/// A task runtime in memory: one subtask's identity, a settable clock, [`MemoryBackend`]s, and
/// the snapshots to restore by operator uid.
pub(crate) struct TestRuntime {
    pub(crate) info: TaskInfo,
    pub(crate) now: Timestamp,
    pub(crate) restored: HashMap<String, RestoredState>,
    /// What sinks registered to commit at checkpoint completion.
    pub(crate) committers: Vec<Arc<dyn crate::runtime::CheckpointCommitter>>,
}

impl TestRuntime {
    /// Subtask `subtask` of `parallelism`, keeping state in memory (`heap_state`) or not.
    pub(crate) fn new(subtask: u32, parallelism: u32, heap_state: bool) -> Self {
        let info = TaskInfo {
            job_id: "job".into(),
            job_name: "test".into(),
            task_name: "task".into(),
            subtask,
            parallelism,
            max_parallelism: crate::keygroup::DEFAULT_MAX_PARALLELISM,
            attempt: 0,
            heap_state,
        };
        Self { info, now: 0, restored: HashMap::new(), committers: Vec::new() }
    }

    /// The same subtask, restoring `snapshots` when its operators open.
    pub(crate) fn restoring(mut self, snapshots: impl IntoIterator<Item = OperatorSnapshot>) -> Self {
        self.restored = snapshots
            .into_iter()
            .map(|s| {
                let operator_states = if s.operator_state.is_empty() { Vec::new() } else { vec![s.operator_state] };
                (s.uid, RestoredState { keyed: s.keyed, operator_states })
            })
            .collect();
        self
    }
}

impl TaskRuntime for TestRuntime {
    fn info(&self) -> &TaskInfo {
        &self.info
    }

    fn processing_time(&self) -> Timestamp {
        self.now
    }

    fn send_batch(&mut self, _output: usize, _channel: usize, _batch: Vec<u8>, _records: usize) -> Result<()> {
        Err(Error::runtime("test runtime", "no task outputs"))
    }

    fn is_local(&self, _output: usize, _channel: usize) -> bool {
        false
    }

    fn send_records(&mut self, _output: usize, _channel: usize, _batch: TypedBatch, _records: usize) -> Result<()> {
        Err(Error::runtime("test runtime", "no task outputs"))
    }

    fn send_watermark(&mut self, _output: usize, _watermark: Timestamp) -> Result<()> {
        Err(Error::runtime("test runtime", "no task outputs"))
    }

    fn send_idleness(&mut self, _output: usize, _idle: bool) -> Result<()> {
        Err(Error::runtime("test runtime", "no task outputs"))
    }

    fn keyed_state_backend(&mut self, _operator_uid: &str) -> Result<Box<dyn KeyedStateBackend>> {
        Ok(Box::new(MemoryBackend::new(self.info.key_groups())))
    }

    fn open_source(&mut self, _source: &SourceDescriptor) -> Result<Box<dyn SourceReader>> {
        Err(Error::runtime("test runtime", "no sources"))
    }

    fn open_sink(&mut self, _sink: &SinkDescriptor, _restored: &[Vec<u8>]) -> Result<Box<dyn SinkWriter>> {
        Err(Error::runtime("test runtime", "no sinks"))
    }

    fn restored_state(&mut self, operator_uid: &str) -> Option<RestoredState> {
        self.restored.remove(operator_uid)
    }

    fn add_committer(&mut self, committer: Arc<dyn crate::runtime::CheckpointCommitter>) -> Result<()> {
        self.committers.push(committer);
        Ok(())
    }

    fn add_records_in(&mut self, _records: u64) {}

    fn add_records_out(&mut self, _records: u64) {}

    fn log(&self, _level: LogLevel, _message: &str) {}
}

/// What a [`Collecting`] downstream received, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Received<T> {
    Record(Timestamp, T),
    Watermark(Timestamp),
    Idle(bool),
}

/// What a [`Collecting`] downstream received, shared with the test.
pub(crate) type ReceivedLog<T> = Arc<Mutex<Vec<Received<T>>>>;

/// A downstream that records what it receives (shared, so the test keeps a handle).
pub(crate) struct Collecting<T> {
    pub(crate) received: ReceivedLog<T>,
}

impl<T: Clone + Send + 'static> Collecting<T> {
    /// An output into a new collector, and the handle to what it receives.
    pub(crate) fn output() -> (Output<T>, ReceivedLog<T>) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let downstream: Box<dyn Downstream<T>> = Box::new(Collecting { received: received.clone() });
        (Output { buffer: Vec::new(), downstream }, received)
    }
}

impl<T: Send + 'static> Downstream<T> for Collecting<T> {
    fn open(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, _rt: &mut dyn TaskRuntime) -> Result<()> {
        let mut received = self.received.lock().map_err(|_| Error::runtime("test", "poisoned"))?;
        received.extend(batch.drain(..).map(|r| Received::Record(r.timestamp, r.value)));
        Ok(())
    }

    fn watermark(&mut self, watermark: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
        let mut received = self.received.lock().map_err(|_| Error::runtime("test", "poisoned"))?;
        received.push(Received::Watermark(watermark));
        Ok(())
    }

    fn idleness(&mut self, idle: bool, _rt: &mut dyn TaskRuntime) -> Result<()> {
        let mut received = self.received.lock().map_err(|_| Error::runtime("test", "poisoned"))?;
        received.push(Received::Idle(idle));
        Ok(())
    }

    fn time(&mut self, _now: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }

    fn next_time(&self) -> Option<Timestamp> {
        None
    }

    fn end(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }

    fn close(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }

    fn snapshot(
        &mut self,
        _checkpoint: CheckpointId,
        _into: &mut Vec<OperatorSnapshot>,
        _rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        Ok(())
    }
}
