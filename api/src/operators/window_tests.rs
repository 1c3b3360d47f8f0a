//! Recovery of the two implementations of tumbling and sliding windows: the typed in-memory one
//! (`window_heap.rs`, used with heap state) and the generic one (`window.rs`, state in the keyed
//! state backend, used with RocksDB). The same input goes through each, with a snapshot and a
//! restore in the middle, and must give the output written below by hand, which is also the
//! output of a run without a failure.

use crate::chain::{Downstream, StreamRecord};
use crate::operators::keyed::KeyedHarness;
use crate::operators::testing::{Collecting, Received, ReceivedLog, TestRuntime};
use crate::operators::window::{Aggregating, EmitResult, ReduceAcc, WindowOperator};
use crate::operators::window_heap::HeapWindowOperator;
use crate::runtime::{OperatorSnapshot, state_entries};
use crate::time::{MAX_WATERMARK, Timestamp};
use crate::window::{SlidingEventTimeWindows, TumblingEventTimeWindows, WindowAssigner};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// `(key, value)`; windows sum the values per key.
type Rec = (u32, u64);
/// A snapshot entry: `(key group, state, key, namespace, user key, value)`.
type Entry = (u16, String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

const UID: &str = "window";
const LATENESS: Timestamp = 1500;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Heap,
    Generic,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Record(Timestamp, Rec),
    Watermark(Timestamp),
}
use Step::{Record as R, Watermark as W};

/// An operator under test with its outputs.
struct Window {
    operator: Box<dyn Downstream<Rec>>,
    rt: TestRuntime,
    out: ReceivedLog<Rec>,
    late: ReceivedLog<Rec>,
}

impl Window {
    /// A window operator of `kind` summing values per key, with allowed lateness and a late
    /// side output, opened in `rt`.
    fn open(kind: Kind, assigner: WindowAssigner, mut rt: TestRuntime) -> Self {
        let (out, out_handle) = Collecting::output();
        let (late, late_handle) = Collecting::output();
        let key_fn = Arc::new(|r: &Rec| r.0);
        let acc = Arc::new(ReduceAcc(Arc::new(|a: Rec, b: Rec| (a.0, a.1 + b.1))));
        let mut operator: Box<dyn Downstream<Rec>> = match kind {
            Kind::Heap => {
                let mut operator = HeapWindowOperator::new(
                    key_fn,
                    assigner,
                    LATENESS,
                    acc,
                    Arc::new(EmitResult),
                    (out, Some(late)),
                    UID,
                );
                operator.uid = UID.to_owned();
                Box::new(operator)
            }
            Kind::Generic => Box::new(WindowOperator {
                key_fn,
                assigner,
                allowed_lateness: LATENESS,
                contents: Aggregating {
                    acc,
                    window_fn: Arc::new(EmitResult),
                    scratch: Vec::new(),
                    _types: PhantomData,
                },
                harness: KeyedHarness::new(UID, UID),
                state: 0,
                sessions: 0,
                out,
                late: Some(late),
                windows: Vec::new(),
                dropped_late: 0,
                side: crate::operators::side_outputs::SideOutputs::default(),
            }),
        };
        operator.open(&mut rt).unwrap();
        Self { operator, rt, out: out_handle, late: late_handle }
    }

    fn run(&mut self, steps: &[Step]) {
        for step in steps {
            match *step {
                Step::Record(timestamp, value) => {
                    let mut batch = vec![StreamRecord { timestamp, value }];
                    self.operator.push(&mut batch, &mut self.rt).unwrap();
                }
                Step::Watermark(watermark) => self.operator.watermark(watermark, &mut self.rt).unwrap(),
            }
        }
    }

    fn snapshot(&mut self) -> OperatorSnapshot {
        let mut into = Vec::new();
        self.operator.snapshot(7, &mut into, &mut self.rt).unwrap();
        into.into_iter().find(|s| s.uid == UID).expect("the window operator has state")
    }

    /// The records emitted so far, sorted (keys of one window fire in no particular order).
    fn output(&self) -> Vec<(Timestamp, Rec)> {
        records(&self.out)
    }

    fn late_output(&self) -> Vec<(Timestamp, Rec)> {
        records(&self.late)
    }
}

fn records(received: &ReceivedLog<Rec>) -> Vec<(Timestamp, Rec)> {
    let mut records: Vec<(Timestamp, Rec)> = received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| match r {
            Received::Record(timestamp, value) => Some((*timestamp, *value)),
            Received::Watermark(_) | Received::Idle(_) => None,
        })
        .collect();
    records.sort();
    records
}

/// The entries of a snapshot, sorted: `(key group, state, key, namespace, user key, value)`.
fn entries(snapshot: &OperatorSnapshot) -> Vec<Entry> {
    let mut all = Vec::new();
    for group in &snapshot.keyed {
        for entry in state_entries(&group.entries) {
            let e = entry.unwrap();
            let owned = (e.key.to_vec(), e.namespace.to_vec(), e.user_key.to_vec(), e.value.to_vec());
            all.push((group.key_group, e.state.to_owned(), owned.0, owned.1, owned.2, owned.3));
        }
    }
    all.sort();
    all
}

fn tumbling() -> WindowAssigner {
    TumblingEventTimeWindows::of(Duration::from_secs(1))
}

// One-second tumbling windows, allowed lateness 1.5 s: window [0, 1000) fires at watermark 999
// with `max_timestamp` 999, and is dropped once the watermark reaches 2499.
const BEFORE: &[Step] = &[
    R(100, (1, 1)),
    R(200, (2, 10)),
    R(1100, (1, 2)),
    W(1000),        // fires [0, 1000): (1, 1) and (2, 10)
    R(300, (1, 5)), // within the lateness: fires [0, 1000) of key 1 again, (1, 6)
    W(1500),
];
const AFTER: &[Step] = &[
    R(400, (2, 100)), // within the lateness of the last watermark (1500): (2, 110) at once
    R(1200, (1, 3)),
    W(1200),           // behind the watermark before the failure: changes nothing
    W(2000),           // fires [1000, 2000): (1, 5); [0, 1000) fired before the snapshot
    R(500, (2, 1000)), // within the lateness: (2, 1110)
    W(2500),           // drops [0, 1000)
    R(600, (1, 7)),    // after the lateness: late side output
    R(2100, (2, 1)),
    W(MAX_WATERMARK), // fires [2000, 3000): (2, 1); [1000, 2000) fired already
];
const OUTPUT_BEFORE: &[(Timestamp, Rec)] = &[(999, (1, 1)), (999, (1, 6)), (999, (2, 10))];
const OUTPUT_AFTER: &[(Timestamp, Rec)] = &[(999, (2, 110)), (999, (2, 1110)), (1999, (1, 5)), (2999, (2, 1))];
const LATE_AFTER: &[(Timestamp, Rec)] = &[(600, (1, 7))];

fn sorted(parts: &[&[(Timestamp, Rec)]]) -> Vec<(Timestamp, Rec)> {
    let mut all: Vec<(Timestamp, Rec)> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    all.sort();
    all
}

#[test]
fn restored_windows_that_fired_do_not_fire_again_and_late_records_fire_them_once() {
    for kind in [Kind::Heap, Kind::Generic] {
        let mut before = Window::open(kind, tumbling(), TestRuntime::new(0, 1, true));
        before.run(BEFORE);
        assert_eq!(before.output(), sorted(&[OUTPUT_BEFORE]), "{kind:?} before the snapshot");
        let snapshot = before.snapshot();

        let mut after = Window::open(kind, tumbling(), TestRuntime::new(0, 1, true).restoring([snapshot.clone()]));
        // Restore, then snapshot: the same entries.
        assert_eq!(entries(&after.snapshot()), entries(&snapshot), "{kind:?} snapshot round trip");
        after.run(AFTER);
        assert_eq!(after.output(), sorted(&[OUTPUT_AFTER]), "{kind:?} after the restore");
        assert_eq!(after.late_output(), sorted(&[LATE_AFTER]), "{kind:?} late records after the restore");

        // Without a failure: the same output.
        let mut whole = Window::open(kind, tumbling(), TestRuntime::new(0, 1, true));
        whole.run(BEFORE);
        whole.run(AFTER);
        assert_eq!(whole.output(), sorted(&[OUTPUT_BEFORE, OUTPUT_AFTER]), "{kind:?} without a failure");
        assert_eq!(whole.late_output(), sorted(&[LATE_AFTER]), "{kind:?} late records without a failure");
    }
}

#[test]
fn restored_sliding_windows_fire_once() {
    // Windows of 2 s every 1 s: a record at 1500 is in [0, 2000) and [1000, 3000).
    let sliding = || SlidingEventTimeWindows::of(Duration::from_secs(2), Duration::from_secs(1));
    let before: &[Step] = &[R(500, (1, 1)), R(1500, (1, 2)), W(2000)];
    let after: &[Step] = &[R(1600, (1, 4)), W(3000), W(MAX_WATERMARK)];
    for kind in [Kind::Heap, Kind::Generic] {
        let mut first = Window::open(kind, sliding(), TestRuntime::new(0, 1, true));
        first.run(before);
        // [-1000, 1000) and [0, 2000) fired.
        assert_eq!(first.output(), vec![(999, (1, 1)), (1999, (1, 3))], "{kind:?}");
        let snapshot = first.snapshot();
        let mut second = Window::open(kind, sliding(), TestRuntime::new(0, 1, true).restoring([snapshot]));
        second.run(after);
        // The late record refires [0, 2000) at once; [1000, 3000) fires at 3000 with it.
        assert_eq!(second.output(), vec![(1999, (1, 7)), (2999, (1, 6))], "{kind:?}");
    }
}

/// A key whose key group lies in `groups`.
fn key_in(groups: std::ops::RangeInclusive<u16>, skip: usize) -> u32 {
    (0u32..)
        .filter(|k| {
            let mut bytes = Vec::new();
            crate::codec::encode_into(k, &mut bytes, "key").unwrap();
            groups.contains(&crate::keygroup::key_group_for_key_bytes(&bytes, crate::keygroup::DEFAULT_MAX_PARALLELISM))
        })
        .nth(skip)
        .unwrap()
}

/// Key groups of two subtasks whose watermarks differ are restored into one subtask: it goes on
/// from the lower watermark, and a window that fired for the keys of the subtask that was ahead
/// fires for them again only with new records, once.
#[test]
fn key_groups_restored_from_subtasks_at_different_watermarks_fire_once() {
    let (a1, a2, b) = (key_in(0..=63, 0), key_in(0..=63, 1), key_in(64..=127, 0));
    for kind in [Kind::Heap, Kind::Generic] {
        // Subtask 0 of 2 reached watermark 1000 (fired [0, 1000)); subtask 1 only 500.
        let mut ahead = Window::open(kind, tumbling(), TestRuntime::new(0, 2, true));
        ahead.run(&[R(100, (a1, 1)), R(150, (a2, 2)), W(1000)]);
        assert_eq!(ahead.output(), sorted(&[&[(999, (a1, 1)), (999, (a2, 2))]]), "{kind:?}");
        let mut behind = Window::open(kind, tumbling(), TestRuntime::new(1, 2, true));
        behind.run(&[R(200, (b, 10)), W(500)]);
        assert!(behind.output().is_empty());
        let (ahead, behind) = (ahead.snapshot(), behind.snapshot());
        let mut keyed = ahead.keyed.clone();
        keyed.extend(behind.keyed.iter().cloned());
        keyed.sort_by_key(|g| g.key_group);
        let merged = OperatorSnapshot { uid: UID.into(), keyed, operator_state: Vec::new() };

        let steps: &[Step] = &[R(300, (a1, 5)), R(250, (b, 20)), W(1000), W(MAX_WATERMARK)];
        let expected = sorted(&[&[(999, (a1, 6)), (999, (b, 30))]]);
        let mut restored = Window::open(kind, tumbling(), TestRuntime::new(0, 1, true).restoring([merged]));
        // A snapshot before the watermark caught up keeps the key groups' own watermarks.
        let again = restored.snapshot();
        restored.run(steps);
        assert_eq!(restored.output(), expected, "{kind:?} after merging key groups");
        let mut restored_again = Window::open(kind, tumbling(), TestRuntime::new(0, 1, true).restoring([again]));
        restored_again.run(&steps[..1]);
        // ... and one after a record for a key whose window fired ahead: it fires again.
        let after_record = restored_again.snapshot();
        restored_again.run(&steps[1..]);
        assert_eq!(restored_again.output(), expected, "{kind:?} after a second restore");
        let mut third = Window::open(kind, tumbling(), TestRuntime::new(0, 1, true).restoring([after_record]));
        third.run(&steps[1..]);
        assert_eq!(third.output(), expected, "{kind:?} after a restore of a window due to fire again");
    }
}

/// Records far ahead of the watermark arrive first (a fast partition read before a slow one, the
/// watermark held back by the slow one): every window keeps them and fires them with the rest.
#[test]
fn records_far_ahead_of_the_watermark_wait_in_their_windows() {
    let mut steps = Vec::new();
    // The fast partition: every hundredth timestamp of [0, 60000), read first.
    for t in (100..60_000).step_by(100) {
        steps.push(R(t, ((t % 7) as u32, 1)));
    }
    // The slow one: the rest, in order, the watermark following it.
    for t in 1..60_000i64 {
        if t % 100 != 0 {
            steps.push(R(t, ((t % 7) as u32, 1)));
        }
        if t % 1000 == 0 {
            steps.push(W(t - 501));
        }
    }
    steps.push(W(MAX_WATERMARK));
    let mut expected = std::collections::BTreeMap::new();
    for t in 1..60_000i64 {
        *expected.entry((t - t % 1000 + 999, (t % 7) as u32)).or_insert(0u64) += 1;
    }
    let expected: Vec<(Timestamp, Rec)> = expected.into_iter().map(|((w, k), n)| (w, (k, n))).collect();
    for kind in [Kind::Heap, Kind::Generic] {
        let mut window = Window::open(kind, tumbling(), TestRuntime::new(0, 1, true));
        window.run(&steps);
        assert_eq!(window.output(), expected, "{kind:?}");
        assert!(window.late_output().is_empty(), "{kind:?}");
    }
}
