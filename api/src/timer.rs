//! Timers of keyed operators: event-time timers fire when the watermark passes them,
//! processing-time timers when the wall clock does. A timer is unique per
//! (timestamp, key, namespace): registering it again does nothing.
//!
//! Timers are bucketed by timestamp (windows make many keys share one), each bucket a hash set of
//! (key group, key, namespace) with the bytes stored inline for small keys, so registering a
//! timer neither searches a tree of byte strings nor allocates.

use crate::functions::TimeDomain;
use crate::time::Timestamp;
use rustc_hash::FxHashSet;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// Key and namespace bytes of a timer, inline up to 40 bytes.
type TimerBytes = SmallVec<[u8; 40]>;

/// Whom a timer is for: a key (and its group) in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct TimerTarget {
    key_group: u16,
    key_len: u32,
    /// The key, then the namespace.
    bytes: TimerBytes,
}

impl TimerTarget {
    fn set(&mut self, key_group: u16, key: &[u8], namespace: &[u8]) {
        self.key_group = key_group;
        self.key_len = key.len() as u32;
        self.bytes.clear();
        if key.len() + namespace.len() <= 40 {
            // Short keys (the common case) stay inline; avoid out-of-line copies for them.
            self.bytes.extend(key.iter().copied());
            self.bytes.extend(namespace.iter().copied());
        } else {
            self.bytes.extend_from_slice(key);
            self.bytes.extend_from_slice(namespace);
        }
    }
}

/// A timer that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Timer {
    pub(crate) timestamp: Timestamp,
    target: TimerTarget,
}

impl Timer {
    pub(crate) fn key_group(&self) -> u16 {
        self.target.key_group
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.target.bytes[..self.target.key_len as usize]
    }

    pub(crate) fn namespace(&self) -> &[u8] {
        &self.target.bytes[self.target.key_len as usize..]
    }
}

/// The timers of one time domain, by timestamp.
#[derive(Default)]
struct TimerQueue {
    by_time: BTreeMap<Timestamp, FxHashSet<TimerTarget>>,
    /// The bucket being fired: its timestamp and the targets not fired yet.
    firing: Option<(Timestamp, Vec<TimerTarget>)>,
    len: usize,
}

impl TimerQueue {
    fn register(&mut self, timestamp: Timestamp, probe: &TimerTarget) {
        if let Some((ts, pending)) = &self.firing
            && *ts == timestamp
            && pending.contains(probe)
        {
            return;
        }
        // One lookup: the probe's bytes are inline for short keys, so cloning it does not allocate.
        if self.by_time.entry(timestamp).or_default().insert(probe.clone()) {
            self.len += 1;
        }
    }

    fn delete(&mut self, timestamp: Timestamp, probe: &TimerTarget) {
        if let Some((ts, pending)) = &mut self.firing
            && *ts == timestamp
            && let Some(i) = pending.iter().position(|t| t == probe)
        {
            pending.swap_remove(i);
            self.len -= 1;
            return;
        }
        if let Some(bucket) = self.by_time.get_mut(&timestamp)
            && bucket.remove(probe)
        {
            self.len -= 1;
            if bucket.is_empty() {
                self.by_time.remove(&timestamp);
            }
        }
    }

    /// The earliest due timer (at or before `time`), in timestamp order.
    fn pop(&mut self, time: Timestamp) -> Option<Timer> {
        loop {
            if let Some((timestamp, pending)) = &mut self.firing {
                if let Some(target) = pending.pop() {
                    self.len -= 1;
                    return Some(Timer { timestamp: *timestamp, target });
                }
                self.firing = None;
            }
            let entry = self.by_time.first_entry()?;
            if *entry.key() > time {
                return None;
            }
            let (timestamp, bucket) = entry.remove_entry();
            self.firing = Some((timestamp, bucket.into_iter().collect()));
        }
    }

    fn next(&self) -> Option<Timestamp> {
        match &self.firing {
            Some((ts, pending)) if !pending.is_empty() => Some(*ts),
            _ => self.by_time.keys().next().copied(),
        }
    }
}

/// The timers of one keyed operator in one subtask.
#[derive(Default)]
pub(crate) struct Timers {
    event: TimerQueue,
    processing: TimerQueue,
    probe: TimerTarget,
}

impl Timers {
    fn queue(&mut self, domain: TimeDomain) -> (&mut TimerQueue, &mut TimerTarget) {
        match domain {
            TimeDomain::EventTime => (&mut self.event, &mut self.probe),
            TimeDomain::ProcessingTime => (&mut self.processing, &mut self.probe),
        }
    }

    /// Registers a timer; does nothing if it is registered already.
    pub(crate) fn register(
        &mut self,
        domain: TimeDomain,
        timestamp: Timestamp,
        key_group: u16,
        key: &[u8],
        namespace: &[u8],
    ) {
        let (queue, probe) = self.queue(domain);
        probe.set(key_group, key, namespace);
        queue.register(timestamp, probe);
    }

    /// Deletes a timer if registered.
    pub(crate) fn delete(
        &mut self,
        domain: TimeDomain,
        timestamp: Timestamp,
        key_group: u16,
        key: &[u8],
        namespace: &[u8],
    ) {
        let (queue, probe) = self.queue(domain);
        probe.set(key_group, key, namespace);
        queue.delete(timestamp, probe);
    }

    /// Removes and returns an event-time timer at or before `watermark`, earliest first.
    pub(crate) fn pop_event(&mut self, watermark: Timestamp) -> Option<Timer> {
        self.event.pop(watermark)
    }

    /// Removes and returns a processing-time timer at or before `now`, earliest first.
    pub(crate) fn pop_processing(&mut self, now: Timestamp) -> Option<Timer> {
        self.processing.pop(now)
    }

    /// When the earliest processing-time timer is due.
    pub(crate) fn next_processing(&self) -> Option<Timestamp> {
        self.processing.next()
    }

    /// Appends every timer to the entries of its key group, as canonical state entries named
    /// `__timers/event` and `__timers/processing` whose value is the timestamp (big-endian).
    pub(crate) fn snapshot_into(&self, groups: &mut BTreeMap<u16, Vec<u8>>) -> crate::Result<()> {
        for (state, queue) in [("__timers/event", &self.event), ("__timers/processing", &self.processing)] {
            let firing = queue.firing.iter().flat_map(|(ts, pending)| pending.iter().map(move |t| (*ts, t)));
            let queued = queue.by_time.iter().flat_map(|(ts, bucket)| bucket.iter().map(move |t| (*ts, t)));
            for (timestamp, target) in firing.chain(queued) {
                let key_len = target.key_len as usize;
                crate::runtime::encode_state_entry(
                    groups.entry(target.key_group).or_default(),
                    crate::runtime::StateEntry {
                        state,
                        key: &target.bytes[..key_len],
                        namespace: &target.bytes[key_len..],
                        user_key: &[],
                        value: &timestamp.to_be_bytes(),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Registers the timers among canonical entries (as [`Timers::snapshot_into`] writes them) of
    /// the key groups in `key_groups`.
    pub(crate) fn restore(
        &mut self,
        groups: &[crate::runtime::KeyGroupState],
        key_groups: &std::ops::RangeInclusive<u16>,
    ) -> crate::Result<()> {
        for group in groups.iter().filter(|g| key_groups.contains(&g.key_group)) {
            for entry in crate::runtime::state_entries(&group.entries) {
                let entry = entry?;
                let domain = match entry.state {
                    "__timers/event" => TimeDomain::EventTime,
                    "__timers/processing" => TimeDomain::ProcessingTime,
                    _ => continue,
                };
                let timestamp = <[u8; 8]>::try_from(entry.value)
                    .map(Timestamp::from_be_bytes)
                    .map_err(|_| crate::Error::serialization("deserialize", "timer", "timestamp is not 8 bytes"))?;
                self.register(domain, timestamp, group.key_group, entry.key, entry.namespace);
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.event.len + self.processing.len
    }
}

/// Timers of the current key, as user functions see them (Flink's `TimerService`).
pub struct TimerService<'a> {
    pub(crate) timers: &'a mut Timers,
    pub(crate) key_group: u16,
    pub(crate) key: &'a [u8],
    pub(crate) watermark: Timestamp,
    pub(crate) now: Timestamp,
}

impl TimerService<'_> {
    /// The operator's current watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> Timestamp {
        self.now
    }

    /// Fires `on_timer` for the current key once the watermark reaches `timestamp`.
    pub fn register_event_time_timer(&mut self, timestamp: Timestamp) {
        self.timers.register(TimeDomain::EventTime, timestamp, self.key_group, self.key, &[]);
    }

    /// Fires `on_timer` for the current key once the wall clock reaches `timestamp`.
    pub fn register_processing_time_timer(&mut self, timestamp: Timestamp) {
        self.timers.register(TimeDomain::ProcessingTime, timestamp, self.key_group, self.key, &[]);
    }

    /// Deletes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, timestamp: Timestamp) {
        self.timers.delete(TimeDomain::EventTime, timestamp, self.key_group, self.key, &[]);
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, timestamp: Timestamp) {
        self.timers.delete(TimeDomain::ProcessingTime, timestamp, self.key_group, self.key, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::TimeDomain::*;

    #[test]
    fn timers_are_deduplicated_and_fire_in_time_order() {
        let mut t = Timers::default();
        t.register(EventTime, 20, 1, b"a", b"");
        t.register(EventTime, 10, 2, b"b", b"ns");
        t.register(EventTime, 20, 1, b"a", b"");
        t.register(ProcessingTime, 5, 1, b"a", b"");
        assert_eq!(t.len(), 3);
        let first = t.pop_event(15).unwrap();
        assert_eq!(
            (first.timestamp, first.key_group(), first.key(), first.namespace()),
            (10, 2, &b"b"[..], &b"ns"[..])
        );
        assert_eq!(t.pop_event(15), None);
        t.delete(EventTime, 20, 1, b"a", b"");
        assert_eq!(t.pop_event(i64::MAX), None);
        assert_eq!(t.next_processing(), Some(5));
        assert_eq!(t.pop_processing(4), None);
        assert_eq!(t.pop_processing(5).map(|x| x.key().to_vec()), Some(b"a".to_vec()));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn timers_registered_or_deleted_while_their_bucket_fires_are_honoured() {
        let mut t = Timers::default();
        for key in [b"a", b"b", b"c"] {
            t.register(EventTime, 10, 0, key, b"");
        }
        let fired = t.pop_event(10).unwrap();
        // The bucket is being fired: re-registering a pending one is a no-op, deleting one
        // prevents it from firing, registering a new one at the same time still fires it.
        let others: Vec<&[u8]> = [&b"a"[..], b"b", b"c"].into_iter().filter(|k| *k != fired.key()).collect();
        t.register(EventTime, 10, 0, others[0], b"");
        t.delete(EventTime, 10, 0, others[1], b"");
        t.register(EventTime, 10, 0, b"d", b"");
        let mut rest: Vec<Vec<u8>> = std::iter::from_fn(|| t.pop_event(10)).map(|x| x.key().to_vec()).collect();
        rest.sort();
        let mut expected = vec![others[0].to_vec(), b"d".to_vec()];
        expected.sort();
        assert_eq!(rest, expected);
        assert_eq!(t.len(), 0);
    }
}
