//! A window operator's event-time progress in its checkpoints: its watermark, written as one
//! canonical entry per key group it owns (state `__window/watermark`, empty key and namespace,
//! the watermark as a big-endian `i64`).
//!
//! Why: after a restore, a window operator must know which of its windows fired already. A window
//! kept for its allowed lateness has fired; firing it again when the watermark passes it a second
//! time duplicates output, and without the watermark a restored operator cannot tell it from a
//! window that has not fired. Both window operators write and read these entries, so either
//! restores the other's snapshot and both give the same output:
//!
//! - Per key group, not per operator: key groups are the unit that moves between subtasks when
//!   the parallelism changes. A subtask restored from key groups of several subtasks goes on from
//!   the lowest of their watermarks (a window is never considered fired too early) and remembers
//!   which key groups were further ahead: for their keys, a window up to their own watermark has
//!   fired. Its snapshots keep each key group's own watermark until its watermark passes them.
//! - Rather than a timer or marker per key and window (what the generic operator keeps): one entry
//!   per key group costs the same whatever the number of keys and windows, and needs no work per
//!   record. The heap operator writes a timer entry (`__timers/event`, as the generic operator
//!   does) only for the rare key whose window fired in a key group that was ahead and received a
//!   record since the restore: it is due to fire again.
//! - The restored watermark also decides lateness as before the failure: a record within the
//!   allowed lateness fires its window again at once, a record after it goes to the late side
//!   output, instead of event time starting again at `MIN_WATERMARK` (Flink's behaviour, which
//!   loses or delays late firings after a restore).

use crate::error::{Error, Result};
use crate::runtime::{KeyGroupState, StateEntry, encode_state_entry, state_entries};
use crate::time::{MIN_WATERMARK, Timestamp};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// The state name of the watermark entries.
pub(crate) const WATERMARK_STATE: &str = "__window/watermark";

/// The event-time progress a window operator restored, beyond its own watermark.
#[derive(Debug)]
pub(crate) struct KeyGroupWatermarks {
    /// Restored key groups whose watermark is above the operator's, by key group. Empty unless
    /// key groups of subtasks at different watermarks were restored into one subtask.
    ahead: FxHashMap<u16, Timestamp>,
    /// The highest of them; [`MIN_WATERMARK`] when there are none.
    max_ahead: Timestamp,
}

impl Default for KeyGroupWatermarks {
    fn default() -> Self {
        Self { ahead: FxHashMap::default(), max_ahead: MIN_WATERMARK }
    }
}

impl KeyGroupWatermarks {
    /// Reads the watermark entries of the key groups in `key_groups` among `groups`. Returns them
    /// and the watermark the operator goes on from: the lowest of its key groups' watermarks, or
    /// [`MIN_WATERMARK`] when one of them has none (its operator had seen no watermark).
    ///
    /// # Errors
    /// [`Error::Serialization`] when an entry's value is not 8 bytes.
    pub(crate) fn restore(groups: &[KeyGroupState], key_groups: &RangeInclusive<u16>) -> Result<(Self, Timestamp)> {
        let mut restored: FxHashMap<u16, Timestamp> = FxHashMap::default();
        for group in groups.iter().filter(|g| key_groups.contains(&g.key_group)) {
            for entry in state_entries(&group.entries) {
                let entry = entry?;
                if entry.state != WATERMARK_STATE {
                    continue;
                }
                let watermark = <[u8; 8]>::try_from(entry.value)
                    .map(Timestamp::from_be_bytes)
                    .map_err(|_| Error::serialization("deserialize", "window watermark", "value is not 8 bytes"))?;
                let stored = restored.entry(group.key_group).or_insert(watermark);
                *stored = (*stored).min(watermark);
            }
        }
        let (first, last) = (usize::from(*key_groups.start()), usize::from(*key_groups.end()));
        let owned = if first <= last { last - first + 1 } else { 0 };
        let watermark = match restored.values().min() {
            Some(&lowest) if restored.len() == owned => lowest,
            _ => MIN_WATERMARK,
        };
        restored.retain(|_, w| *w > watermark);
        let max_ahead = restored.values().copied().max().unwrap_or(MIN_WATERMARK);
        Ok((Self { ahead: restored, max_ahead }, watermark))
    }

    /// The watermark key group `key_group` reached, when the operator's is `watermark`.
    pub(crate) fn of(&self, key_group: u16, watermark: Timestamp) -> Timestamp {
        match self.ahead.get(&key_group) {
            Some(&ahead) => ahead.max(watermark),
            None => watermark,
        }
    }

    /// Whether a window whose `max_timestamp` the operator's watermark has not reached may have
    /// fired for the keys of some key groups (restored ahead of the operator).
    #[inline]
    pub(crate) fn may_have_fired(&self, max_timestamp: Timestamp) -> bool {
        max_timestamp <= self.max_ahead
    }

    /// Whether any key group is ahead of the operator.
    pub(crate) fn any_ahead(&self) -> bool {
        !self.ahead.is_empty()
    }

    /// The operator's watermark reached `watermark`: forgets the key groups it caught up with.
    pub(crate) fn advance(&mut self, watermark: Timestamp) {
        if self.ahead.is_empty() {
            return;
        }
        self.ahead.retain(|_, w| *w > watermark);
        self.max_ahead = self.ahead.values().copied().max().unwrap_or(MIN_WATERMARK);
    }

    /// Appends one watermark entry per key group of `key_groups` (the key group's watermark, when
    /// the operator's is `watermark`) to `groups`. Nothing when no watermark is known yet.
    ///
    /// # Errors
    /// When an entry cannot be encoded.
    pub(crate) fn snapshot_into(
        &self,
        watermark: Timestamp,
        key_groups: &RangeInclusive<u16>,
        groups: &mut BTreeMap<u16, Vec<u8>>,
    ) -> Result<()> {
        if watermark == MIN_WATERMARK && self.ahead.is_empty() {
            return Ok(());
        }
        for key_group in key_groups.clone() {
            let value = self.of(key_group, watermark).to_be_bytes();
            let entry = StateEntry { state: WATERMARK_STATE, key: &[], namespace: &[], user_key: &[], value: &value };
            encode_state_entry(groups.entry(key_group).or_default(), entry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(
        watermarks: &KeyGroupWatermarks,
        watermark: Timestamp,
        key_groups: RangeInclusive<u16>,
    ) -> Vec<KeyGroupState> {
        let mut groups = BTreeMap::new();
        watermarks.snapshot_into(watermark, &key_groups, &mut groups).unwrap();
        groups.into_iter().map(|(key_group, entries)| KeyGroupState { key_group, entries }).collect()
    }

    #[test]
    fn restores_the_lowest_watermark_and_remembers_the_key_groups_ahead() {
        let none = KeyGroupWatermarks::default();
        assert!(snapshot(&none, MIN_WATERMARK, 0..=3).is_empty(), "no watermark, no entries");
        let mut groups = snapshot(&none, 1000, 0..=1);
        groups.extend(snapshot(&none, 500, 2..=3));
        assert_eq!(groups.len(), 4);

        let (restored, watermark) = KeyGroupWatermarks::restore(&groups, &(0..=3)).unwrap();
        assert_eq!(watermark, 500);
        assert_eq!(
            (restored.of(0, watermark), restored.of(1, watermark), restored.of(3, watermark)),
            (1000, 1000, 500)
        );
        assert!(restored.may_have_fired(1000) && !restored.may_have_fired(1001));
        // A snapshot before the watermark caught up keeps each key group's own.
        assert_eq!(snapshot(&restored, watermark, 0..=3), groups);

        // Only the owned key groups count; one without an entry had no watermark.
        let (only_ahead, watermark) = KeyGroupWatermarks::restore(&groups, &(0..=1)).unwrap();
        assert_eq!((watermark, only_ahead.any_ahead()), (1000, false));
        let (missing, watermark) = KeyGroupWatermarks::restore(&groups, &(0..=4)).unwrap();
        assert_eq!((watermark, missing.of(2, watermark)), (MIN_WATERMARK, 500));

        let mut restored = restored;
        restored.advance(999);
        assert!(restored.any_ahead());
        restored.advance(1000);
        assert!(!restored.any_ahead() && !restored.may_have_fired(MIN_WATERMARK + 1));
    }

    #[test]
    fn a_malformed_entry_is_an_error() {
        let mut entries = Vec::new();
        let entry = StateEntry { state: WATERMARK_STATE, key: &[], namespace: &[], user_key: &[], value: b"short" };
        encode_state_entry(&mut entries, entry).unwrap();
        let groups = [KeyGroupState { key_group: 0, entries }];
        assert!(KeyGroupWatermarks::restore(&groups, &(0..=0)).is_err());
    }
}
