//! Timers of keyed operators: event-time timers fire when the watermark passes them,
//! processing-time timers when the wall clock does. A timer is unique per
//! (timestamp, key, namespace): registering it again does nothing.

use crate::time::Timestamp;
use std::collections::BTreeSet;

/// A registered timer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Timer {
    pub(crate) timestamp: Timestamp,
    pub(crate) key_group: u16,
    pub(crate) key: Vec<u8>,
    pub(crate) namespace: Vec<u8>,
}

/// The timers of one keyed operator in one subtask, ordered by time.
#[derive(Default)]
pub(crate) struct Timers {
    event: BTreeSet<Timer>,
    processing: BTreeSet<Timer>,
    probe: Timer,
}

impl Timers {
    fn set(&mut self, domain: crate::functions::TimeDomain) -> (&mut BTreeSet<Timer>, &mut Timer) {
        match domain {
            crate::functions::TimeDomain::EventTime => (&mut self.event, &mut self.probe),
            crate::functions::TimeDomain::ProcessingTime => (&mut self.processing, &mut self.probe),
        }
    }

    /// Registers a timer; allocates only when it is new.
    pub(crate) fn register(
        &mut self,
        domain: crate::functions::TimeDomain,
        timestamp: Timestamp,
        key_group: u16,
        key: &[u8],
        namespace: &[u8],
    ) {
        let (set, probe) = self.set(domain);
        probe.timestamp = timestamp;
        probe.key_group = key_group;
        probe.key.clear();
        probe.key.extend_from_slice(key);
        probe.namespace.clear();
        probe.namespace.extend_from_slice(namespace);
        if !set.contains(probe) {
            set.insert(probe.clone());
        }
    }

    /// Deletes a timer if registered.
    pub(crate) fn delete(
        &mut self,
        domain: crate::functions::TimeDomain,
        timestamp: Timestamp,
        key_group: u16,
        key: &[u8],
        namespace: &[u8],
    ) {
        let (set, probe) = self.set(domain);
        probe.timestamp = timestamp;
        probe.key_group = key_group;
        probe.key.clear();
        probe.key.extend_from_slice(key);
        probe.namespace.clear();
        probe.namespace.extend_from_slice(namespace);
        set.remove(probe);
    }

    /// Removes and returns the earliest event-time timer at or before `watermark`.
    pub(crate) fn pop_event(&mut self, watermark: Timestamp) -> Option<Timer> {
        if self.event.first()?.timestamp <= watermark { self.event.pop_first() } else { None }
    }

    /// Removes and returns the earliest processing-time timer at or before `now`.
    pub(crate) fn pop_processing(&mut self, now: Timestamp) -> Option<Timer> {
        if self.processing.first()?.timestamp <= now { self.processing.pop_first() } else { None }
    }

    /// When the earliest processing-time timer is due.
    pub(crate) fn next_processing(&self) -> Option<Timestamp> {
        self.processing.first().map(|t| t.timestamp)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.event.len() + self.processing.len()
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
        self.timers.register(crate::functions::TimeDomain::EventTime, timestamp, self.key_group, self.key, &[]);
    }

    /// Fires `on_timer` for the current key once the wall clock reaches `timestamp`.
    pub fn register_processing_time_timer(&mut self, timestamp: Timestamp) {
        self.timers.register(crate::functions::TimeDomain::ProcessingTime, timestamp, self.key_group, self.key, &[]);
    }

    /// Deletes an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, timestamp: Timestamp) {
        self.timers.delete(crate::functions::TimeDomain::EventTime, timestamp, self.key_group, self.key, &[]);
    }

    /// Deletes a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, timestamp: Timestamp) {
        self.timers.delete(crate::functions::TimeDomain::ProcessingTime, timestamp, self.key_group, self.key, &[]);
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
        t.register(EventTime, 10, 2, b"b", b"");
        t.register(EventTime, 20, 1, b"a", b"");
        t.register(ProcessingTime, 5, 1, b"a", b"");
        assert_eq!(t.len(), 3);
        assert_eq!(t.pop_event(15).map(|x| x.timestamp), Some(10));
        assert_eq!(t.pop_event(15), None);
        t.delete(EventTime, 20, 1, b"a", b"");
        assert_eq!(t.pop_event(i64::MAX), None);
        assert_eq!(t.next_processing(), Some(5));
        assert_eq!(t.pop_processing(4), None);
        assert_eq!(t.pop_processing(5).map(|x| x.key), Some(b"a".to_vec()));
    }
}
