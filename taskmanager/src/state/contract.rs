//! The behavioural contract every [`KeyedStateBackend`] of the runtime must meet, as one test
//! function that each backend's tests call with a factory of fresh, empty backends.

use std::ops::RangeInclusive;
use weir_api::runtime::{
    KeyGroupState, KeyedStateBackend, StateEntry, StateKey, StateKind, encode_list_element, encode_state_entry,
    list_elements, state_entries,
};
use weir_api::{Error, Result};

fn key<'a>(key_group: u16, key: &'a [u8], namespace: &'a [u8]) -> StateKey<'a> {
    StateKey { key_group, key, namespace }
}

fn owned(value: Option<&[u8]>) -> Option<Vec<u8>> {
    value.map(<[u8]>::to_vec)
}

fn scan(backend: &mut dyn KeyedStateBackend, state: u32, at: StateKey<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seen = Vec::new();
    backend
        .map_scan(state, at, &mut |user_key, value| {
            seen.push((user_key.to_vec(), value.to_vec()));
            true
        })
        .unwrap();
    seen
}

fn pairs(entries: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries.iter().map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec())).collect()
}

/// Checks the contract on backends made by `make(key_groups)`, each new and empty.
#[cfg(test)]
pub(crate) fn check_backend_contract(make: impl Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    value_put_get_remove(&make);
    value_update(&make);
    list_append(&make);
    map_put_get_remove_scan(&make);
    key_groups_are_isolated(&make);
    states_are_isolated(&make);
    out_of_range_key_groups_and_unknown_states(&make);
    registration_and_kind_mismatch(&make);
    snapshot_and_restore(&make);
    restored_entries_outlive_snapshots_until_registered(&make);
    expired_entries_are_removed(&make);
}

/// `value` stamped with write time `at` (the layout of states with a time-to-live).
fn stamped(at: i64, value: &[u8]) -> Vec<u8> {
    let mut bytes = at.to_le_bytes().to_vec();
    bytes.extend_from_slice(value);
    bytes
}

/// Entries written at 1000 expire with a time-to-live of 500 at 1500, those written at 1400 at
/// 1900: at 1600 only the first go (value entries, map entries, list elements; a list whose
/// elements all expired goes too); other states are untouched.
fn expired_entries_are_removed(make: &impl Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut b = make(0..=3);
    let value = b.register_state("v", StateKind::Value).unwrap();
    let list = b.register_state("l", StateKind::List).unwrap();
    let map = b.register_state("m", StateKind::Map).unwrap();
    let plain = b.register_state("p", StateKind::Value).unwrap();
    for group in 0..=3u16 {
        b.put(value, key(group, b"old", b""), &stamped(1000, b"x")).unwrap();
        b.put(value, key(group, b"new", b""), &stamped(1400, b"y")).unwrap();
        b.append(list, key(group, b"mixed", b""), &stamped(1000, b"a")).unwrap();
        b.append(list, key(group, b"mixed", b""), &stamped(1400, b"b")).unwrap();
        b.append(list, key(group, b"gone", b""), &stamped(1000, b"c")).unwrap();
        b.map_put(map, key(group, b"k", b""), b"old", &stamped(1000, b"1")).unwrap();
        b.map_put(map, key(group, b"k", b""), b"new", &stamped(1400, b"2")).unwrap();
        b.put(plain, key(group, b"k", b""), &stamped(0, b"kept")).unwrap();
    }
    let expiry = weir_api::runtime::Expiry { ttl_ms: 500, now: 1600 };
    assert_eq!(b.remove_expired(value, StateKind::Value, expiry).unwrap(), 4);
    assert_eq!(b.remove_expired(list, StateKind::List, expiry).unwrap(), 8);
    assert_eq!(b.remove_expired(map, StateKind::Map, expiry).unwrap(), 4);
    for group in 0..=3u16 {
        assert_eq!(b.get(value, key(group, b"old", b"")).unwrap(), None);
        assert_eq!(b.get(value, key(group, b"new", b"")).unwrap(), Some(&stamped(1400, b"y")[..]));
        let mut expected = Vec::new();
        encode_list_element(&mut expected, &stamped(1400, b"b"));
        assert_eq!(b.get(list, key(group, b"mixed", b"")).unwrap(), Some(&expected[..]));
        assert_eq!(b.get(list, key(group, b"gone", b"")).unwrap(), None);
        assert_eq!(b.map_get(map, key(group, b"k", b""), b"old").unwrap(), None);
        assert_eq!(b.map_get(map, key(group, b"k", b""), b"new").unwrap(), Some(&stamped(1400, b"2")[..]));
        assert_eq!(b.get(plain, key(group, b"k", b"")).unwrap(), Some(&stamped(0, b"kept")[..]));
    }
    assert_eq!(b.remove_expired(value, StateKind::Value, expiry).unwrap(), 0, "nothing left to remove");
}

/// An entry of a snapshot, owned: `(key group, state, key, namespace, user key, value)`.
pub(crate) type OwnedEntry = (u16, String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// The entries of a snapshot, sorted (backends may order entries within a key group differently).
/// Also checks that key groups are ascending, distinct and not empty.
pub(crate) fn snapshot_entries(groups: &[KeyGroupState]) -> Vec<OwnedEntry> {
    let mut entries = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        assert!(!group.entries.is_empty(), "key group {} is empty", group.key_group);
        if i > 0 {
            assert!(groups[i - 1].key_group < group.key_group, "key groups out of order");
        }
        for entry in state_entries(&group.entries) {
            let e = entry.unwrap();
            entries.push((
                group.key_group,
                e.state.to_owned(),
                e.key.to_vec(),
                e.namespace.to_vec(),
                e.user_key.to_vec(),
                e.value.to_vec(),
            ));
        }
    }
    entries.sort();
    entries
}

fn snapshot_and_restore(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    assert_eq!(make(0..=3).snapshot().unwrap(), Vec::new());

    let mut source = make(0..=3);
    let value = source.register_state("v", StateKind::Value).unwrap();
    let list = source.register_state("l", StateKind::List).unwrap();
    let map = source.register_state("m", StateKind::Map).unwrap();
    let _unused = source.register_state("unused", StateKind::Value).unwrap();
    for group in 0..=3u16 {
        let k = [b'k', b'0' + group as u8];
        source.put(value, key(group, &k, b""), &[group as u8]).unwrap();
        source.put(value, key(group, &k, b"w"), b"in w").unwrap();
    }
    for element in [&b"x"[..], b"", b"yy"] {
        source.append(list, key(1, b"k", b"ns"), element).unwrap();
        source.append(list, key(2, b"k", b"ns"), element).unwrap();
    }
    source.map_put(map, key(2, b"k", b"a"), b"bc", b"1").unwrap();
    source.map_put(map, key(2, b"k", b"ab"), b"c", b"2").unwrap();
    source.map_put(map, key(3, b"", b""), b"", b"3").unwrap();
    source.put(value, key(3, b"removed", b""), b"x").unwrap();
    source.remove(value, key(3, b"removed", b"")).unwrap();

    let snapshot = source.snapshot().unwrap();
    let mut list_value = Vec::new();
    for element in [&b"x"[..], b"", b"yy"] {
        encode_list_element(&mut list_value, element);
    }
    let entry = |group: u16, state: &str, k: &[u8], namespace: &[u8], user_key: &[u8], value: &[u8]| -> OwnedEntry {
        (group, state.to_owned(), k.to_vec(), namespace.to_vec(), user_key.to_vec(), value.to_vec())
    };
    let mut expected = Vec::new();
    for group in 0..=3u16 {
        let k = [b'k', b'0' + group as u8];
        expected.push(entry(group, "v", &k, b"", b"", &[group as u8]));
        expected.push(entry(group, "v", &k, b"w", b"", b"in w"));
    }
    expected.push(entry(1, "l", b"k", b"ns", b"", &list_value));
    expected.push(entry(2, "l", b"k", b"ns", b"", &list_value));
    expected.push(entry(2, "m", b"k", b"a", b"bc", b"1"));
    expected.push(entry(2, "m", b"k", b"ab", b"c", b"2"));
    expected.push(entry(3, "m", b"", b"", b"", b"3"));
    expected.sort();
    assert_eq!(snapshot_entries(&snapshot), expected);
    // A snapshot does not change the state.
    assert_eq!(source.get(value, key(0, b"k0", b"")).unwrap(), Some(&[0u8][..]));
    assert_eq!(snapshot_entries(&source.snapshot().unwrap()), expected);

    // Restoring into a backend of key groups 2..=3: a state registered before the restore gets
    // its entries at once, the others when they are registered; other key groups are ignored;
    // internal structures (`__` names) are left to their operators.
    let mut internal = Vec::new();
    let timer = StateEntry { state: "__timers/event", key: b"k", namespace: b"", user_key: b"", value: b"t" };
    encode_state_entry(&mut internal, timer).unwrap();
    let mut groups = snapshot.clone();
    groups.push(KeyGroupState { key_group: 2, entries: internal });
    let mut target = make(2..=3);
    let list = target.register_state("l", StateKind::List).unwrap();
    target.restore(&groups).unwrap();
    let stored = target.get(list, key(2, b"k", b"ns")).unwrap().unwrap().to_vec();
    assert_eq!(list_elements(&stored).collect::<Result<Vec<_>>>().unwrap(), vec![&b"x"[..], b"", b"yy"]);
    target.append(list, key(2, b"k", b"ns"), b"z").unwrap();
    let map = target.register_state("m", StateKind::Map).unwrap();
    let value = target.register_state("v", StateKind::Value).unwrap();
    let timers = target.register_state("__timers/event", StateKind::Value).unwrap();
    assert_eq!(target.get(timers, key(2, b"k", b"")).unwrap(), None);
    assert_eq!(target.get(value, key(2, b"k2", b"")).unwrap(), Some(&[2u8][..]));
    assert_eq!(target.get(value, key(3, b"k3", b"w")).unwrap(), Some(&b"in w"[..]));
    assert_eq!(scan(&mut *target, map, key(2, b"k", b"a")), pairs(&[("bc", "1")]));
    assert_eq!(scan(&mut *target, map, key(2, b"k", b"ab")), pairs(&[("c", "2")]));
    assert_eq!(target.map_get(map, key(3, b"", b""), b"").unwrap(), Some(&b"3"[..]));

    let mut list_value_z = list_value.clone();
    encode_list_element(&mut list_value_z, b"z");
    let expected_target: Vec<OwnedEntry> = expected
        .iter()
        .filter(|e| (2..=3).contains(&e.0))
        .map(|e| if e.1 == "l" { entry(e.0, "l", &e.2, &e.3, &e.4, &list_value_z) } else { e.clone() })
        .collect();
    assert_eq!(snapshot_entries(&target.snapshot().unwrap()), expected_target);

    // A backend with no key groups restores nothing.
    let (start, end) = (5, 4);
    let mut empty = make(start..=end);
    empty.restore(&snapshot).unwrap();
    empty.register_state("v", StateKind::Value).unwrap();
    assert_eq!(empty.snapshot().unwrap(), Vec::new());
}

/// Restored entries of states the operator has not registered (yet) are still the operator's
/// state: every later snapshot holds them, so a second restore (after a second failure) finds
/// them, however many snapshots were taken in between and whichever states were registered.
fn restored_entries_outlive_snapshots_until_registered(
    make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>,
) {
    let entry = |group: u16, state: &str, k: &[u8], namespace: &[u8], user_key: &[u8], value: &[u8]| -> OwnedEntry {
        (group, state.to_owned(), k.to_vec(), namespace.to_vec(), user_key.to_vec(), value.to_vec())
    };
    let mut list_value = Vec::new();
    for element in [&b"a"[..], b"bb"] {
        encode_list_element(&mut list_value, element);
    }
    // The first checkpoint: value, list and map state in key groups 0..=3, and a timer.
    let mut first = make(0..=3);
    let value = first.register_state("v", StateKind::Value).unwrap();
    let list = first.register_state("l", StateKind::List).unwrap();
    let map = first.register_state("m", StateKind::Map).unwrap();
    for group in 0..=3u16 {
        let k = [b'k', b'0' + group as u8];
        first.put(value, key(group, &k, b""), &[group as u8]).unwrap();
        first.put(value, key(group, &k, b"w"), b"in w").unwrap();
        for element in [&b"a"[..], b"bb"] {
            first.append(list, key(group, &k, b""), element).unwrap();
        }
        first.map_put(map, key(group, &k, b"ns"), b"u1", b"1").unwrap();
        first.map_put(map, key(group, &k, b"ns"), b"u2", b"2").unwrap();
    }
    let mut snapshot = first.snapshot().unwrap();
    let mut timer = Vec::new();
    let timer_entry = StateEntry { state: "__timers/event", key: b"k2", namespace: b"", user_key: b"", value: b"t" };
    encode_state_entry(&mut timer, timer_entry).unwrap();
    snapshot.push(KeyGroupState { key_group: 2, entries: timer });
    let mut expected = Vec::new();
    for group in 2..=3u16 {
        let k = [b'k', b'0' + group as u8];
        expected.push(entry(group, "v", &k, b"", b"", &[group as u8]));
        expected.push(entry(group, "v", &k, b"w", b"", b"in w"));
        expected.push(entry(group, "l", &k, b"", b"", &list_value));
        expected.push(entry(group, "m", &k, b"ns", b"u1", b"1"));
        expected.push(entry(group, "m", &k, b"ns", b"u2", b"2"));
    }
    expected.sort();

    // After a failure, a subtask of key groups 2..=3 registers nothing before its next snapshots:
    // they hold its key groups' entries (not the others', not the timer, which operators write).
    let mut second = make(2..=3);
    second.restore(&snapshot).unwrap();
    let untouched = second.snapshot().unwrap();
    assert_eq!(snapshot_entries(&untouched), expected, "a snapshot before any registration");
    assert_eq!(snapshot_entries(&second.snapshot().unwrap()), expected, "a second snapshot");

    // It registers some states, and changes one entry: the others still wait, and are snapshotted.
    let value = second.register_state("v", StateKind::Value).unwrap();
    assert_eq!(second.get(value, key(3, b"k3", b"")).unwrap(), Some(&[3u8][..]));
    second.put(value, key(3, b"k3", b""), b"new").unwrap();
    let partly = second.snapshot().unwrap();
    let mut expected_partly: Vec<OwnedEntry> =
        expected
            .iter()
            .map(|e| {
                if e.1 == "v" && e.0 == 3 && e.3.is_empty() {
                    entry(3, "v", b"k3", b"", b"", b"new")
                } else {
                    e.clone()
                }
            })
            .collect();
    expected_partly.sort();
    assert_eq!(snapshot_entries(&partly), expected_partly, "a snapshot with one state registered");
    // A state registered after a snapshot gets its entries, and the next snapshot has them once.
    let map = second.register_state("m", StateKind::Map).unwrap();
    assert_eq!(scan(&mut *second, map, key(2, b"k2", b"ns")), pairs(&[("u1", "1"), ("u2", "2")]));
    assert_eq!(snapshot_entries(&second.snapshot().unwrap()), expected_partly, "after a late registration");

    // A second failure: a fresh backend restores the snapshot taken before the states were
    // registered, another the one taken after; both find every entry when they register.
    for (restored, expected) in [(&untouched, &expected), (&partly, &expected_partly)] {
        let mut third = make(2..=3);
        third.restore(restored).unwrap();
        assert_eq!(snapshot_entries(&third.snapshot().unwrap()), *expected);
        let list = third.register_state("l", StateKind::List).unwrap();
        let map = third.register_state("m", StateKind::Map).unwrap();
        let value = third.register_state("v", StateKind::Value).unwrap();
        for group in 2..=3u16 {
            let k = [b'k', b'0' + group as u8];
            let stored = third.get(list, key(group, &k, b"")).unwrap().unwrap().to_vec();
            assert_eq!(list_elements(&stored).collect::<Result<Vec<_>>>().unwrap(), vec![&b"a"[..], b"bb"]);
            assert_eq!(scan(&mut *third, map, key(group, &k, b"ns")), pairs(&[("u1", "1"), ("u2", "2")]));
            assert_eq!(third.get(value, key(group, &k, b"w")).unwrap(), Some(&b"in w"[..]));
        }
        assert_eq!(third.get(value, key(2, b"k2", b"")).unwrap(), Some(&[2u8][..]));
        let v3 = owned(third.get(value, key(3, b"k3", b"")).unwrap());
        let expected_v3 = expected.iter().find(|e| e.0 == 3 && e.1 == "v" && e.3.is_empty()).map(|e| e.5.clone());
        assert_eq!(v3, expected_v3);
        assert_eq!(snapshot_entries(&third.snapshot().unwrap()), *expected);
    }

    // Rescaled to key group 3 alone: a snapshot before any registration holds only key group 3.
    let mut rescaled = make(3..=3);
    rescaled.restore(&untouched).unwrap();
    let only_3: Vec<OwnedEntry> = expected.iter().filter(|e| e.0 == 3).cloned().collect();
    assert_eq!(snapshot_entries(&rescaled.snapshot().unwrap()), only_3);
}

fn value_put_get_remove(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut backend = make(0..=3);
    let id = backend.register_state("v", StateKind::Value).unwrap();
    assert_eq!(backend.get(id, key(1, b"k", b"")).unwrap(), None);
    backend.put(id, key(1, b"k", b""), b"one").unwrap();
    assert_eq!(backend.get(id, key(1, b"k", b"")).unwrap(), Some(&b"one"[..]));
    backend.put(id, key(1, b"k", b""), b"two").unwrap();
    assert_eq!(backend.get(id, key(1, b"k", b"")).unwrap(), Some(&b"two"[..]));
    // Empty values are values.
    backend.put(id, key(1, b"empty", b""), b"").unwrap();
    assert_eq!(backend.get(id, key(1, b"empty", b"")).unwrap(), Some(&b""[..]));
    // Other namespace, and an ambiguous split of the same bytes, are different entries.
    assert_eq!(backend.get(id, key(1, b"k", b"w")).unwrap(), None);
    backend.put(id, key(1, b"ab", b"c"), b"x").unwrap();
    assert_eq!(backend.get(id, key(1, b"a", b"bc")).unwrap(), None);
    assert_eq!(backend.get(id, key(1, b"abc", b"")).unwrap(), None);
    backend.remove(id, key(1, b"k", b"")).unwrap();
    assert_eq!(backend.get(id, key(1, b"k", b"")).unwrap(), None);
    assert_eq!(backend.get(id, key(1, b"ab", b"c")).unwrap(), Some(&b"x"[..]));
    // Removing an absent entry is fine.
    backend.remove(id, key(1, b"k", b"")).unwrap();
    // Large values round-trip.
    let large: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    backend.put(id, key(3, b"large", b"ns"), &large).unwrap();
    assert_eq!(owned(backend.get(id, key(3, b"large", b"ns")).unwrap()), Some(large));
}

fn value_update(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut backend = make(0..=1);
    let id = backend.register_state("counter", StateKind::Value).unwrap();
    let k = key(1, b"k", b"");
    let increment = |current: Option<&[u8]>, out: &mut Vec<u8>| -> Result<()> {
        assert!(out.is_empty(), "update must pass an empty output buffer");
        let n = current.map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().unwrap()));
        out.extend_from_slice(&(n + 1).to_le_bytes());
        Ok(())
    };
    assert!(!backend.update(id, k, &mut { increment }).unwrap());
    assert_eq!(backend.get(id, k).unwrap(), Some(&1u64.to_le_bytes()[..]));
    for _ in 0..4 {
        assert!(backend.update(id, k, &mut { increment }).unwrap());
    }
    assert_eq!(backend.get(id, k).unwrap(), Some(&5u64.to_le_bytes()[..]));

    // A failing merge leaves the value unchanged, present or absent.
    let mut failing = |current: Option<&[u8]>, out: &mut Vec<u8>| -> Result<()> {
        assert_eq!(current, Some(&5u64.to_le_bytes()[..]));
        out.extend_from_slice(b"garbage");
        Err(Error::runtime("test", "merge failed"))
    };
    assert!(backend.update(id, k, &mut failing).is_err());
    assert_eq!(backend.get(id, k).unwrap(), Some(&5u64.to_le_bytes()[..]));
    let absent = key(0, b"other", b"");
    let mut failing = |current: Option<&[u8]>, _: &mut Vec<u8>| -> Result<()> {
        assert_eq!(current, None);
        Err(Error::runtime("test", "merge failed"))
    };
    assert!(backend.update(id, absent, &mut failing).is_err());
    assert_eq!(backend.get(id, absent).unwrap(), None);

    // Another key is independent.
    assert!(!backend.update(id, absent, &mut { increment }).unwrap());
    assert_eq!(backend.get(id, absent).unwrap(), Some(&1u64.to_le_bytes()[..]));
    assert_eq!(backend.get(id, k).unwrap(), Some(&5u64.to_le_bytes()[..]));

    // Map state has no single value to update.
    let map = backend.register_state("m", StateKind::Map).unwrap();
    assert!(backend.update(map, k, &mut { increment }).is_err());
}

fn list_append(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut backend = make(5..=5);
    let id = backend.register_state("l", StateKind::List).unwrap();
    let k = key(5, b"k", b"ns");
    assert_eq!(backend.get(id, k).unwrap(), None);
    for element in [&b"a"[..], b"", b"ccc"] {
        backend.append(id, k, element).unwrap();
    }
    let stored = backend.get(id, k).unwrap().unwrap().to_vec();
    let elements: Vec<&[u8]> = list_elements(&stored).collect::<Result<_>>().unwrap();
    assert_eq!(elements, vec![&b"a"[..], b"", b"ccc"]);

    // Another namespace is another list.
    backend.append(id, key(5, b"k", b"other"), b"z").unwrap();
    let other = backend.get(id, key(5, b"k", b"other")).unwrap().unwrap().to_vec();
    assert_eq!(list_elements(&other).collect::<Result<Vec<_>>>().unwrap(), vec![&b"z"[..]]);

    // `put` replaces the whole list; appending continues after it.
    let mut replacement = Vec::new();
    encode_list_element(&mut replacement, b"first");
    backend.put(id, k, &replacement).unwrap();
    backend.append(id, k, b"second").unwrap();
    let stored = backend.get(id, k).unwrap().unwrap().to_vec();
    let elements: Vec<&[u8]> = list_elements(&stored).collect::<Result<_>>().unwrap();
    assert_eq!(elements, vec![&b"first"[..], b"second"]);

    // Many appends keep their order.
    let many = key(5, b"many", b"");
    for i in 0..500u32 {
        backend.append(id, many, &i.to_le_bytes()).unwrap();
    }
    let stored = backend.get(id, many).unwrap().unwrap().to_vec();
    let decoded: Vec<u32> =
        list_elements(&stored).map(|e| u32::from_le_bytes(e.unwrap().try_into().unwrap())).collect();
    assert_eq!(decoded, (0..500).collect::<Vec<_>>());

    backend.remove(id, k).unwrap();
    assert_eq!(backend.get(id, k).unwrap(), None);
    // A removed list starts empty again.
    backend.append(id, k, b"again").unwrap();
    let stored = backend.get(id, k).unwrap().unwrap().to_vec();
    assert_eq!(list_elements(&stored).collect::<Result<Vec<_>>>().unwrap(), vec![&b"again"[..]]);
}

fn map_put_get_remove_scan(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut backend = make(0..=0);
    let id = backend.register_state("m", StateKind::Map).unwrap();
    let k = key(0, b"k", b"");
    for user_key in [&b"b"[..], b"a", b"c", b"ab", b"\xff", b"\x00"] {
        backend.map_put(id, k, user_key, user_key).unwrap();
    }
    backend.map_put(id, k, b"a", b"A").unwrap();
    assert_eq!(backend.map_get(id, k, b"a").unwrap(), Some(&b"A"[..]));
    assert_eq!(backend.map_get(id, k, b"z").unwrap(), None);
    assert_eq!(backend.map_get(id, key(0, b"k", b"ns"), b"a").unwrap(), None);
    assert_eq!(backend.map_get(id, key(0, b"kk", b""), b"a").unwrap(), None);

    // Scans yield user-key byte order.
    let mut expected = vec![(b"\x00".to_vec(), b"\x00".to_vec())];
    expected.extend(pairs(&[("a", "A"), ("ab", "ab"), ("b", "b"), ("c", "c")]));
    expected.push((b"\xff".to_vec(), b"\xff".to_vec()));
    assert_eq!(scan(&mut *backend, id, k), expected);

    // Early stop.
    let mut count = 0;
    backend
        .map_scan(id, k, &mut |_, _| {
            count += 1;
            count < 2
        })
        .unwrap();
    assert_eq!(count, 2);

    backend.map_remove(id, k, b"a").unwrap();
    assert_eq!(backend.map_get(id, k, b"a").unwrap(), None);
    backend.map_remove(id, k, b"never there").unwrap();
    for user_key in [&b"ab"[..], b"b", b"c", b"\x00", b"\xff"] {
        backend.map_remove(id, k, user_key).unwrap();
    }
    assert_eq!(scan(&mut *backend, id, k), Vec::new());

    // Maps of other keys and namespaces are separate, even when their bytes could run together:
    // (namespace "a", user key "bc") and (namespace "ab", user key "c"); keys "k" and "k\0".
    backend.map_put(id, key(0, b"k", b"a"), b"bc", b"1").unwrap();
    backend.map_put(id, key(0, b"k", b"ab"), b"c", b"2").unwrap();
    backend.map_put(id, key(0, b"k\0", b""), b"", b"3").unwrap();
    backend.map_put(id, key(0, b"k", b""), b"", b"4").unwrap();
    assert_eq!(scan(&mut *backend, id, key(0, b"k", b"a")), pairs(&[("bc", "1")]));
    assert_eq!(scan(&mut *backend, id, key(0, b"k", b"ab")), pairs(&[("c", "2")]));
    assert_eq!(scan(&mut *backend, id, key(0, b"k\0", b"")), pairs(&[("", "3")]));
    assert_eq!(scan(&mut *backend, id, key(0, b"k", b"")), pairs(&[("", "4")]));
    assert_eq!(backend.map_get(id, key(0, b"k", b"a"), b"bc").unwrap(), Some(&b"1"[..]));
    assert_eq!(backend.map_get(id, key(0, b"k", b"ab"), b"c").unwrap(), Some(&b"2"[..]));
    backend.remove(id, key(0, b"k", b"a")).unwrap();
    assert_eq!(scan(&mut *backend, id, key(0, b"k", b"a")), Vec::new());
    assert_eq!(scan(&mut *backend, id, key(0, b"k", b"ab")), pairs(&[("c", "2")]));
    assert_eq!(scan(&mut *backend, id, key(0, b"k\0", b"")), pairs(&[("", "3")]));
    backend.remove(id, key(0, b"k\0", b"")).unwrap();
    backend.remove(id, key(0, b"k", b"ab")).unwrap();
    backend.remove(id, key(0, b"k", b"")).unwrap();

    // `remove` removes the whole map.
    backend.map_put(id, k, b"x", b"1").unwrap();
    backend.map_put(id, k, b"y", b"2").unwrap();
    backend.remove(id, k).unwrap();
    assert_eq!(backend.map_get(id, k, b"x").unwrap(), None);
    let mut visited = false;
    backend
        .map_scan(id, k, &mut |_, _| {
            visited = true;
            true
        })
        .unwrap();
    assert!(!visited);
    // Removing an absent map is fine, and a removed map can be filled again.
    backend.remove(id, k).unwrap();
    backend.map_put(id, k, b"x", b"again").unwrap();
    assert_eq!(scan(&mut *backend, id, k), pairs(&[("x", "again")]));
}

fn key_groups_are_isolated(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut backend = make(10..=12);
    let value = backend.register_state("v", StateKind::Value).unwrap();
    let map = backend.register_state("m", StateKind::Map).unwrap();
    let list = backend.register_state("l", StateKind::List).unwrap();
    backend.put(value, key(10, b"k", b""), b"ten").unwrap();
    backend.put(value, key(12, b"k", b""), b"twelve").unwrap();
    assert_eq!(backend.get(value, key(10, b"k", b"")).unwrap(), Some(&b"ten"[..]));
    assert_eq!(backend.get(value, key(12, b"k", b"")).unwrap(), Some(&b"twelve"[..]));
    assert_eq!(backend.get(value, key(11, b"k", b"")).unwrap(), None);
    backend.map_put(map, key(11, b"k", b""), b"u", b"1").unwrap();
    backend.map_put(map, key(12, b"k", b""), b"w", b"2").unwrap();
    assert_eq!(backend.map_get(map, key(12, b"k", b""), b"u").unwrap(), None);
    assert_eq!(scan(&mut *backend, map, key(11, b"k", b"")), pairs(&[("u", "1")]));
    assert_eq!(scan(&mut *backend, map, key(12, b"k", b"")), pairs(&[("w", "2")]));
    backend.remove(map, key(11, b"k", b"")).unwrap();
    assert_eq!(scan(&mut *backend, map, key(12, b"k", b"")), pairs(&[("w", "2")]));
    backend.append(list, key(10, b"k", b""), b"a").unwrap();
    assert_eq!(backend.get(list, key(11, b"k", b"")).unwrap(), None);
    backend.remove(value, key(10, b"k", b"")).unwrap();
    assert_eq!(backend.get(value, key(12, b"k", b"")).unwrap(), Some(&b"twelve"[..]));
}

fn states_are_isolated(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut backend = make(0..=0);
    let a = backend.register_state("a", StateKind::Value).unwrap();
    let b = backend.register_state("b", StateKind::Value).unwrap();
    let m1 = backend.register_state("m1", StateKind::Map).unwrap();
    let m2 = backend.register_state("m2", StateKind::Map).unwrap();
    let k = key(0, b"k", b"");
    backend.put(a, k, b"in a").unwrap();
    assert_eq!(backend.get(b, k).unwrap(), None);
    backend.map_put(m1, k, b"u", b"1").unwrap();
    assert_eq!(scan(&mut *backend, m2, k), Vec::new());
    backend.remove(b, k).unwrap();
    backend.remove(m2, k).unwrap();
    assert_eq!(backend.get(a, k).unwrap(), Some(&b"in a"[..]));
    assert_eq!(scan(&mut *backend, m1, k), pairs(&[("u", "1")]));
}

fn out_of_range_key_groups_and_unknown_states(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut backend = make(10..=12);
    let id = backend.register_state("v", StateKind::Value).unwrap();
    let list = backend.register_state("l", StateKind::List).unwrap();
    let map = backend.register_state("m", StateKind::Map).unwrap();
    for group in [0, 9, 13, u16::MAX] {
        let k = key(group, b"k", b"");
        let err = backend.put(id, k, b"x").unwrap_err();
        assert!(matches!(err, Error::Runtime { .. }), "{err}");
        assert!(matches!(backend.get(id, k), Err(Error::Runtime { .. })));
        assert!(backend.remove(id, k).is_err());
        assert!(
            backend
                .update(id, k, &mut |_, out| {
                    out.push(1);
                    Ok(())
                })
                .is_err()
        );
        assert!(backend.append(list, k, b"x").is_err());
        assert!(backend.map_put(map, k, b"u", b"v").is_err());
        assert!(backend.map_get(map, k, b"u").is_err());
        assert!(backend.map_remove(map, k, b"u").is_err());
        assert!(backend.map_scan(map, k, &mut |_, _| true).is_err());
    }
    let k = key(10, b"k", b"");
    for unknown in [map + 1, 7, u32::MAX] {
        assert!(matches!(backend.get(unknown, k), Err(Error::Runtime { .. })));
        assert!(backend.put(unknown, k, b"x").is_err());
        assert!(backend.remove(unknown, k).is_err());
        assert!(backend.append(unknown, k, b"x").is_err());
        assert!(backend.map_put(unknown, k, b"u", b"v").is_err());
        assert!(backend.map_scan(unknown, k, &mut |_, _| true).is_err());
    }

    let (start, end) = (5, 4);
    let mut empty = make(start..=end);
    let id = empty.register_state("v", StateKind::Value).unwrap();
    assert!(empty.put(id, key(5, b"k", b""), b"x").is_err());
    assert!(empty.put(id, key(4, b"k", b""), b"x").is_err());

    let mut full = make(0..=u16::MAX);
    let id = full.register_state("v", StateKind::Value).unwrap();
    let map = full.register_state("m", StateKind::Map).unwrap();
    full.put(id, key(u16::MAX, b"k", b""), b"x").unwrap();
    full.put(id, key(0, b"k", b""), b"zero").unwrap();
    assert_eq!(full.get(id, key(u16::MAX, b"k", b"")).unwrap(), Some(&b"x"[..]));
    assert_eq!(full.get(id, key(0, b"k", b"")).unwrap(), Some(&b"zero"[..]));
    full.map_put(map, key(u16::MAX, b"\xff", b"\xff"), b"\xff", b"max").unwrap();
    assert_eq!(scan(&mut *full, map, key(u16::MAX, b"\xff", b"\xff")), vec![(b"\xff".to_vec(), b"max".to_vec())]);
    full.remove(map, key(u16::MAX, b"\xff", b"\xff")).unwrap();
    assert_eq!(scan(&mut *full, map, key(u16::MAX, b"\xff", b"\xff")), Vec::new());
}

fn registration_and_kind_mismatch(make: &dyn Fn(RangeInclusive<u16>) -> Box<dyn KeyedStateBackend>) {
    let mut backend = make(0..=1);
    let a = backend.register_state("a", StateKind::Value).unwrap();
    let b = backend.register_state("b", StateKind::Map).unwrap();
    let c = backend.register_state("c", StateKind::List).unwrap();
    assert_eq!((a, b, c), (0, 1, 2));
    assert_eq!(backend.register_state("b", StateKind::Map).unwrap(), b);
    assert_eq!(backend.register_state("a", StateKind::Value).unwrap(), a);
    let err = backend.register_state("b", StateKind::Value).unwrap_err();
    assert!(matches!(&err, Error::Runtime { .. }), "{err}");
    assert!(backend.register_state("a", StateKind::List).is_err());
    assert!(backend.register_state("c", StateKind::Map).is_err());
    // A failed registration registers nothing.
    assert_eq!(backend.register_state("d", StateKind::Value).unwrap(), 3);

    // Operations must fit the kind.
    let k = key(0, b"k", b"");
    assert!(backend.get(b, k).is_err());
    assert!(backend.put(b, k, b"x").is_err());
    assert!(backend.append(b, k, b"x").is_err());
    assert!(backend.append(a, k, b"x").is_err());
    assert!(backend.map_put(a, k, b"u", b"v").is_err());
    assert!(backend.map_get(c, k, b"u").is_err());
    assert!(backend.map_remove(a, k, b"u").is_err());
    assert!(backend.map_scan(c, k, &mut |_, _| true).is_err());
    // ... and failed operations store nothing.
    assert_eq!(backend.get(a, k).unwrap(), None);
    assert_eq!(backend.get(c, k).unwrap(), None);
    assert_eq!(scan(&mut *backend, b, k), Vec::new());
}
