//! State with a time-to-live loses the entries of keys that are never read again: on a
//! checkpoint and in the background (processing time), at most once per time-to-live.

use crate::chain::{Downstream, StreamRecord};
use crate::functions::{KeyedContext, KeyedProcessFunction};
use crate::operators::keyed::{KeyedHarness, KeyedProcessOperator};
use crate::operators::side_outputs::SideOutputs;
use crate::operators::testing::{Collecting, TestRuntime};
use crate::runtime::state_entries;
use crate::state::{StateTtlConfig, ValueStateDescriptor};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

const SEEN: ValueStateDescriptor<u64> =
    ValueStateDescriptor::new("seen").with_ttl(StateTtlConfig::new(Duration::from_secs(2)));

/// Writes the state of each key once, never reads it.
#[derive(Clone)]
struct WriteOnce;

impl KeyedProcessFunction<u64, u64, ()> for WriteOnce {
    fn process_element(&mut self, value: u64, ctx: &mut KeyedContext<'_, u64, ()>) -> crate::Result<()> {
        ctx.value_state(&SEEN)?.update(&value)
    }
}

fn operator() -> KeyedProcessOperator<u64, u64, (), impl Fn(&u64) -> u64 + Send + Sync + 'static, WriteOnce> {
    let (out, _) = Collecting::output();
    KeyedProcessOperator {
        key_fn: Arc::new(|v: &u64| *v),
        function: WriteOnce,
        harness: KeyedHarness::new("ttl", "ttl"),
        out,
        side: SideOutputs::default(),
        _input: PhantomData,
    }
}

/// The number of `seen` entries in a snapshot of `op`.
fn seen_entries(op: &mut impl Downstream<u64>, rt: &mut TestRuntime) -> usize {
    let mut snapshots = Vec::new();
    op.snapshot(1, &mut snapshots, rt).unwrap();
    snapshots
        .iter()
        .flat_map(|s| &s.keyed)
        .map(|g| state_entries(&g.entries).map(Result::unwrap).filter(|e| e.state == "seen").count())
        .sum()
}

#[test]
fn entries_of_keys_never_read_again_are_removed_in_the_background() {
    let mut rt = TestRuntime::new(0, 1, true);
    rt.now = 10_000;
    let mut op = operator();
    op.open(&mut rt).unwrap();
    // Keys 1..=5 written at 10 000 (the first cleanup is scheduled 2 s later), key 6 at 11 000.
    op.push(&mut (1..=5).map(|v| StreamRecord { timestamp: 0, value: v }).collect(), &mut rt).unwrap();
    rt.now = 11_000;
    op.push(&mut vec![StreamRecord { timestamp: 0, value: 6 }], &mut rt).unwrap();
    assert_eq!(op.next_time(), Some(12_000), "the cleanup asks for processing time");
    // At 12 000 keys 1..=5 are 2 s old: removed; key 6 (1 s old) stays.
    rt.now = 12_000;
    op.time(12_000, &mut rt).unwrap();
    assert_eq!(seen_entries(&mut op, &mut rt), 1);
    assert_eq!(op.next_time(), Some(14_000));
}

#[test]
fn expired_entries_are_removed_when_a_checkpoint_is_taken() {
    let mut rt = TestRuntime::new(0, 1, true);
    rt.now = 10_000;
    let mut op = operator();
    op.open(&mut rt).unwrap();
    op.push(&mut (1..=3).map(|v| StreamRecord { timestamp: 0, value: v }).collect(), &mut rt).unwrap();
    assert_eq!(seen_entries(&mut op, &mut rt), 3, "not expired yet");
    // No record and no processing-time call in between: the checkpoint itself cleans up.
    rt.now = 13_000;
    assert_eq!(seen_entries(&mut op, &mut rt), 0);
}
