//! Operator implementations. Each is generic over the user's types and functions, so it is
//! compiled into the job plugin and calls user code without dynamic dispatch per record.

/// Implements the `Downstream` methods that only forward to `self.$out` (an `Output`).
macro_rules! forward_control {
    ($out:ident) => {
        fn open(&mut self, rt: &mut dyn $crate::runtime::TaskRuntime) -> $crate::Result<()> {
            self.$out.open(rt)
        }
        $crate::operators::forward_control!($out, except_open);
    };
    ($out:ident, except_open) => {
        fn snapshot(
            &mut self,
            checkpoint: $crate::runtime::CheckpointId,
            into: &mut Vec<$crate::runtime::OperatorSnapshot>,
            rt: &mut dyn $crate::runtime::TaskRuntime,
        ) -> $crate::Result<()> {
            self.$out.snapshot(checkpoint, into, rt)
        }
        $crate::operators::forward_control!($out, control_only);
    };
    ($out:ident, control_only) => {
        fn close(&mut self, rt: &mut dyn $crate::runtime::TaskRuntime) -> $crate::Result<()> {
            self.$out.close(rt)
        }
        $crate::operators::forward_control!($out, events);
    };
    ($out:ident, events) => {
        fn watermark(
            &mut self,
            w: $crate::time::Timestamp,
            rt: &mut dyn $crate::runtime::TaskRuntime,
        ) -> $crate::Result<()> {
            self.$out.watermark(w, rt)
        }
        fn idleness(&mut self, idle: bool, rt: &mut dyn $crate::runtime::TaskRuntime) -> $crate::Result<()> {
            self.$out.idleness(idle, rt)
        }
        fn time(
            &mut self,
            now: $crate::time::Timestamp,
            rt: &mut dyn $crate::runtime::TaskRuntime,
        ) -> $crate::Result<()> {
            self.$out.time(now, rt)
        }
        fn next_time(&self) -> Option<$crate::time::Timestamp> {
            self.$out.next_time()
        }
        fn end(&mut self, rt: &mut dyn $crate::runtime::TaskRuntime) -> $crate::Result<()> {
            self.$out.end(rt)
        }
    };
}
pub(crate) use forward_control;

/// Implements the `Downstream` methods a sink has nothing to do for: it ignores watermarks,
/// idleness and processing time, and has no timers.
macro_rules! sink_events {
    () => {
        fn watermark(
            &mut self,
            _watermark: $crate::time::Timestamp,
            _rt: &mut dyn $crate::runtime::TaskRuntime,
        ) -> $crate::Result<()> {
            Ok(())
        }
        fn idleness(&mut self, _idle: bool, _rt: &mut dyn $crate::runtime::TaskRuntime) -> $crate::Result<()> {
            Ok(())
        }
        fn time(
            &mut self,
            _now: $crate::time::Timestamp,
            _rt: &mut dyn $crate::runtime::TaskRuntime,
        ) -> $crate::Result<()> {
            Ok(())
        }
        fn next_time(&self) -> Option<$crate::time::Timestamp> {
            None
        }
    };
}
pub(crate) use sink_events;

/// Implements the `HeadOperator` methods every source head shares: it has no inputs, ignores
/// upstream watermarks and idleness (it makes its own), forwards processing time to
/// `self.out`, and on a stop with a savepoint emits nothing more (`self.finished`), first the
/// maximum watermark when draining.
macro_rules! source_control {
    () => {
        fn process_batch(
            &mut self,
            _input: usize,
            _batch: $crate::runtime::InputBatch<'_>,
            _rt: &mut dyn $crate::runtime::TaskRuntime,
        ) -> $crate::Result<()> {
            Err($crate::Error::InvalidJob(format!("source '{}' has no inputs", self.name)))
        }
        fn watermark(
            &mut self,
            _watermark: $crate::time::Timestamp,
            _rt: &mut dyn $crate::runtime::TaskRuntime,
        ) -> $crate::Result<()> {
            Ok(())
        }
        fn idleness(&mut self, _idle: bool, _rt: &mut dyn $crate::runtime::TaskRuntime) -> $crate::Result<()> {
            Ok(())
        }
        fn time(
            &mut self,
            now: $crate::time::Timestamp,
            rt: &mut dyn $crate::runtime::TaskRuntime,
        ) -> $crate::Result<()> {
            self.out.time(now, rt)
        }
        fn next_time(&self) -> Option<$crate::time::Timestamp> {
            self.out.next_time()
        }
        fn stop(&mut self, drain: bool, rt: &mut dyn $crate::runtime::TaskRuntime) -> $crate::Result<()> {
            self.finished = true;
            self.out.flush(rt)?;
            if drain {
                self.out.watermark($crate::time::MAX_WATERMARK, rt)?;
            }
            Ok(())
        }
    };
}
pub(crate) use source_control;

pub(crate) mod async_wait;
pub(crate) mod basic;
pub(crate) mod broadcast;
pub(crate) mod custom_sink;
pub(crate) mod exchange;
pub(crate) mod interval_join;
pub(crate) mod interval_join_heap;
pub(crate) mod keyed;
pub(crate) mod process;
pub(crate) mod side_outputs;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod split_source;
pub(crate) mod split_watermarks;
pub(crate) mod table_join;
#[cfg(test)]
mod testing;
pub(crate) mod triggered_window;
#[cfg(test)]
mod ttl_tests;
pub(crate) mod two_input;
pub(crate) mod watermarks;
pub(crate) mod window;
pub(crate) mod window_heap;
pub(crate) mod window_progress;
#[cfg(test)]
mod window_tests;
