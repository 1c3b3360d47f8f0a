//! Broadcast state (Flink's broadcast state pattern): a low-throughput stream (rules, patterns,
//! configuration) is broadcast to every subtask of an operator, which keeps what it says in map
//! states of its own, identical on every subtask, and reads them while processing the other,
//! high-throughput input.
//!
//! Only the broadcast side writes the state (`process_broadcast_element` gets it mutably);
//! elements of the other side read it (`&BroadcastState`). Since every subtask sees the same
//! broadcast elements in the same order, every subtask's state stays the same, as long as the
//! function's updates depend only on the broadcast elements. The state is snapshotted with the
//! operator and restored on every subtask, also at another parallelism.

use crate::codec::{decode, encode_into};
use crate::error::Result;
use crate::state::MapStateDescriptor;
use std::collections::BTreeMap;

/// The broadcast map states of one operator instance, by name; keys and values serialized.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BroadcastState {
    states: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl BroadcastState {
    fn key_bytes<K: crate::Data, V>(descriptor: &MapStateDescriptor<K, V>, key: &K) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        encode_into(key, &mut bytes, descriptor.name)?;
        Ok(bytes)
    }

    /// The value of `key` in the broadcast state `descriptor`.
    ///
    /// # Errors
    /// The stored value is not a `V` (the state was written with another type).
    pub fn get<K: crate::Data, V: crate::Data>(
        &self,
        descriptor: &MapStateDescriptor<K, V>,
        key: &K,
    ) -> Result<Option<V>> {
        let Some(state) = self.states.get(descriptor.name) else { return Ok(None) };
        match state.get(&Self::key_bytes(descriptor, key)?) {
            Some(bytes) => decode(bytes, descriptor.name).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `key` is present in the broadcast state `descriptor`.
    pub fn contains<K: crate::Data, V>(&self, descriptor: &MapStateDescriptor<K, V>, key: &K) -> Result<bool> {
        Ok(self
            .states
            .get(descriptor.name)
            .is_some_and(|s| Self::key_bytes(descriptor, key).is_ok_and(|k| s.contains_key(&k))))
    }

    /// Every entry of the broadcast state `descriptor`, in the order of their serialized keys.
    pub fn entries<K: crate::Data, V: crate::Data>(
        &self,
        descriptor: &MapStateDescriptor<K, V>,
    ) -> Result<Vec<(K, V)>> {
        let Some(state) = self.states.get(descriptor.name) else { return Ok(Vec::new()) };
        state.iter().map(|(k, v)| Ok((decode(k, descriptor.name)?, decode(v, descriptor.name)?))).collect()
    }

    /// Sets `key` to `value` in the broadcast state `descriptor`.
    pub fn put<K: crate::Data, V: crate::Data>(
        &mut self,
        descriptor: &MapStateDescriptor<K, V>,
        key: &K,
        value: &V,
    ) -> Result<()> {
        let key = Self::key_bytes(descriptor, key)?;
        let mut bytes = Vec::new();
        encode_into(value, &mut bytes, descriptor.name)?;
        self.states.entry(descriptor.name.to_owned()).or_default().insert(key, bytes);
        Ok(())
    }

    /// Removes `key` from the broadcast state `descriptor`.
    pub fn remove<K: crate::Data, V>(&mut self, descriptor: &MapStateDescriptor<K, V>, key: &K) -> Result<()> {
        let key = Self::key_bytes(descriptor, key)?;
        if let Some(state) = self.states.get_mut(descriptor.name) {
            state.remove(&key);
        }
        Ok(())
    }

    /// Removes every entry of the broadcast state `descriptor`.
    pub fn clear<K, V>(&mut self, descriptor: &MapStateDescriptor<K, V>) {
        self.states.remove(descriptor.name);
    }

    /// The state as an operator snapshot's non-keyed state.
    pub(crate) fn snapshot(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        encode_into(&self.states, &mut bytes, "broadcast state")?;
        Ok(bytes)
    }

    /// The state of a snapshot: any one of `snapshots` (every subtask's is the same).
    pub(crate) fn restore(snapshots: &[Vec<u8>]) -> Result<Self> {
        match snapshots.first() {
            Some(bytes) => Ok(Self { states: decode(bytes, "broadcast state")? }),
            None => Ok(Self::default()),
        }
    }
}

impl std::fmt::Display for BroadcastState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<String> = self.states.iter().map(|(name, s)| format!("{name}: {} entries", s.len())).collect();
        write!(f, "broadcast state [{}]", sizes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: MapStateDescriptor<String, u64> = MapStateDescriptor::new("rules");

    #[test]
    fn a_snapshot_restores_the_same_state_and_the_same_bytes() {
        let mut state = BroadcastState::default();
        state.put(&RULES, &"max".to_owned(), &10).unwrap();
        state.put(&RULES, &"min".to_owned(), &1).unwrap();
        state.remove(&RULES, &"min".to_owned()).unwrap();
        let bytes = state.snapshot().unwrap();
        let restored = BroadcastState::restore(&[bytes.clone(), bytes.clone()]).unwrap();
        assert_eq!(restored.get(&RULES, &"max".to_owned()).unwrap(), Some(10));
        assert_eq!(restored.get(&RULES, &"min".to_owned()).unwrap(), None);
        assert_eq!(restored.entries(&RULES).unwrap(), vec![("max".to_owned(), 10)]);
        assert_eq!(restored.snapshot().unwrap(), bytes);
        assert_eq!(BroadcastState::restore(&[]).unwrap(), BroadcastState::default());
    }
}
