//! The task thread: drives one operator chain from its source or input channels until the end
//! of input, cancellation or failure.

use crate::context::{TaskContext, now_ms};
use crate::exchange::ChannelEvent;
use crate::input_gate::{GateUpdate, InputGate};
use crossbeam_channel::{Receiver, Select};
use std::sync::atomic::Ordering;
use std::time::Duration;
use weir_api::runtime::{InputBatch, SourceStatus, TaskChain};
use weir_api::{Error, Result};

/// The longest a task waits without checking for cancellation.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How a task ended without error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TaskOutcome {
    Finished,
    Canceled,
}

/// Runs a source chain: polls it until it is exhausted.
pub(crate) fn run_source(chain: &mut dyn TaskChain, cx: &mut TaskContext) -> Result<TaskOutcome> {
    loop {
        if cx.cancel.load(Ordering::Relaxed) {
            return Ok(TaskOutcome::Canceled);
        }
        fire_due_timers(chain, cx)?;
        match chain.poll_source(cx)? {
            SourceStatus::Ready => {}
            SourceStatus::Finished => break,
            SourceStatus::WaitUntil(until) => loop {
                if cx.cancel.load(Ordering::Relaxed) {
                    return Ok(TaskOutcome::Canceled);
                }
                let now = now_ms();
                if now >= until {
                    break;
                }
                let wake = chain.next_processing_time().map_or(until, |t| t.min(until));
                if wake <= now {
                    fire_due_timers(chain, cx)?;
                    continue;
                }
                std::thread::sleep(Duration::from_millis((wake - now) as u64).min(POLL_INTERVAL));
            },
        }
    }
    finish(chain, cx)
}

/// Runs a chain fed by input channels until all of them ended.
pub(crate) fn run_inputs(
    chain: &mut dyn TaskChain,
    cx: &mut TaskContext,
    receivers: Vec<Receiver<ChannelEvent>>,
    mut gate: InputGate,
) -> Result<TaskOutcome> {
    let mut select = Select::new();
    for receiver in &receivers {
        select.recv(receiver);
    }
    while gate.open_channels() > 0 {
        if cx.cancel.load(Ordering::Relaxed) {
            return Ok(TaskOutcome::Canceled);
        }
        let now = now_ms();
        let wait = match chain.next_processing_time() {
            Some(t) if t <= now => {
                chain.process_time(now, cx)?;
                continue;
            }
            Some(t) => Duration::from_millis((t - now) as u64).min(POLL_INTERVAL),
            None => POLL_INTERVAL,
        };
        let Ok(operation) = select.select_timeout(wait) else {
            continue;
        };
        let channel = operation.index();
        let event = operation
            .recv(&receivers[channel])
            .map_err(|_| Error::runtime("exchange", "an upstream task is gone without ending its stream"))?;
        let update = match event {
            ChannelEvent::Batch(data) => {
                chain.process_batch(gate.input_of(channel), InputBatch::Bytes(&data), cx)?;
                GateUpdate::default()
            }
            ChannelEvent::Records(records) => {
                chain.process_batch(gate.input_of(channel), InputBatch::Records(records), cx)?;
                GateUpdate::default()
            }
            ChannelEvent::Watermark(watermark) => gate.on_watermark(channel, watermark),
            ChannelEvent::Idle(idle) => gate.on_idleness(channel, idle),
            ChannelEvent::Failed(message) => return Err(Error::runtime("exchange", message)),
            ChannelEvent::EndOfStream => {
                select.remove(channel);
                gate.on_end(channel)
            }
        };
        // Active before the watermark that activity brings; idle after the last watermark.
        if update.idleness == Some(false) {
            chain.process_idleness(false, cx)?;
        }
        if let Some(watermark) = update.watermark {
            chain.process_watermark(watermark, cx)?;
        }
        if update.idleness == Some(true) {
            chain.process_idleness(true, cx)?;
        }
    }
    finish(chain, cx)
}

fn fire_due_timers(chain: &mut dyn TaskChain, cx: &mut TaskContext) -> Result<()> {
    let now = now_ms();
    if chain.next_processing_time().is_some_and(|t| t <= now) {
        chain.process_time(now, cx)?;
    }
    Ok(())
}

/// End of input: flush the chain, then end every output channel.
fn finish(chain: &mut dyn TaskChain, cx: &mut TaskContext) -> Result<TaskOutcome> {
    chain.end_input(cx)?;
    cx.broadcast_all(|| ChannelEvent::EndOfStream)?;
    Ok(TaskOutcome::Finished)
}
