//! A task's input channels: combines their watermarks (the minimum over active channels, as in
//! Flink's status watermark valve), tracks idleness and end of stream.

use weir_api::time::{MAX_WATERMARK, MIN_WATERMARK, Timestamp};

/// State of one input channel.
#[derive(Debug, Clone)]
pub(crate) struct ChannelState {
    /// Which input of the head operator it feeds.
    pub(crate) input: usize,
    watermark: Timestamp,
    idle: bool,
    ended: bool,
}

/// What the task must tell its chain after an event.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GateUpdate {
    /// The combined watermark advanced to this value.
    pub(crate) watermark: Option<Timestamp>,
    /// The task became idle (`true`) or active (`false`).
    pub(crate) idleness: Option<bool>,
}

/// Watermark and idleness bookkeeping over a task's input channels.
#[derive(Debug)]
pub(crate) struct InputGate {
    channels: Vec<ChannelState>,
    combined: Timestamp,
    idle: bool,
    open: usize,
    /// The job is being stopped with a savepoint without draining: event time is frozen at the
    /// savepoint. Neither the ends of the channels (which would release the maximum watermark or
    /// an open channel's higher one) nor idleness advance it, so no window fires after the
    /// savepoint whose state the restored job fires again.
    stopping: bool,
}

impl InputGate {
    /// A gate over channels feeding the given head inputs.
    pub(crate) fn new(inputs: impl IntoIterator<Item = usize>) -> Self {
        let channels: Vec<ChannelState> = inputs
            .into_iter()
            .map(|input| ChannelState { input, watermark: MIN_WATERMARK, idle: false, ended: false })
            .collect();
        let open = channels.len();
        Self { channels, combined: MIN_WATERMARK, idle: false, open, stopping: false }
    }

    /// Channels that have not ended.
    pub(crate) fn open_channels(&self) -> usize {
        self.open
    }

    pub(crate) fn input_of(&self, channel: usize) -> usize {
        self.channels[channel].input
    }

    /// Whether `channel` delivered its end of stream.
    pub(crate) fn is_ended(&self, channel: usize) -> bool {
        self.channels[channel].ended
    }

    /// A watermark arrived on `channel`.
    pub(crate) fn on_watermark(&mut self, channel: usize, watermark: Timestamp) -> GateUpdate {
        let state = &mut self.channels[channel];
        state.watermark = state.watermark.max(watermark);
        self.update()
    }

    /// `channel` became idle or active.
    pub(crate) fn on_idleness(&mut self, channel: usize, idle: bool) -> GateUpdate {
        self.channels[channel].idle = idle;
        self.update()
    }

    /// Whether the ends of the channels are a stop without drain (see [`Self::stopping`]).
    /// Ending a stop (its savepoint was aborted) releases what the stop held back.
    pub(crate) fn set_stopping(&mut self, stopping: bool) -> GateUpdate {
        self.stopping = stopping;
        if stopping { GateUpdate::default() } else { self.update() }
    }

    /// `channel` ended.
    pub(crate) fn on_end(&mut self, channel: usize) -> GateUpdate {
        let state = &mut self.channels[channel];
        if !state.ended {
            state.ended = true;
            self.open -= 1;
        }
        self.update()
    }

    fn update(&mut self) -> GateUpdate {
        let mut update = GateUpdate::default();
        if self.stopping {
            return update;
        }
        let active = self.channels.iter().filter(|c| !c.ended && !c.idle);
        let combined = match self.open {
            0 => Some(MAX_WATERMARK),
            _ => active.map(|c| c.watermark).min(),
        };
        if let Some(watermark) = combined
            && watermark > self.combined
        {
            self.combined = watermark;
            update.watermark = Some(watermark);
        }
        let idle = self.open > 0 && self.channels.iter().all(|c| c.ended || c.idle);
        if idle != self.idle {
            self.idle = idle;
            update.idleness = Some(idle);
        }
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_without_drain_freezes_event_time_at_the_savepoint() {
        let mut gate = InputGate::new([0, 0]);
        assert_eq!(gate.on_watermark(0, 10).watermark, None);
        assert_eq!(gate.on_watermark(1, 20).watermark, Some(10));
        assert_eq!(gate.set_stopping(true), GateUpdate::default());
        // The lagging channel ends first: the other one's higher watermark would fire windows
        // after the savepoint (their state is in it, so the restored job fires them again).
        assert_eq!(gate.on_end(0), GateUpdate::default(), "no watermark from the open channel");
        assert_eq!(gate.on_end(1), GateUpdate::default(), "no maximum watermark for a stop");
    }

    #[test]
    fn a_stop_without_drain_ignores_idleness_and_a_failed_stop_releases_what_it_held() {
        let mut gate = InputGate::new([0, 0]);
        gate.on_watermark(0, 10);
        gate.on_watermark(1, 20);
        gate.set_stopping(true);
        assert_eq!(gate.on_idleness(0, true), GateUpdate::default());
        assert_eq!(gate.on_watermark(1, 30), GateUpdate::default());
        // The stop's savepoint failed: the job reads on from where the channels are.
        assert_eq!(gate.set_stopping(false), GateUpdate { watermark: Some(30), idleness: None });
    }

    #[test]
    fn the_watermark_is_the_minimum_over_active_channels() {
        let mut gate = InputGate::new([0, 0, 1]);
        assert_eq!(gate.on_watermark(0, 10).watermark, None);
        assert_eq!(gate.on_watermark(1, 5).watermark, None);
        assert_eq!(gate.on_watermark(2, 7).watermark, Some(5));
        assert_eq!(gate.on_watermark(1, 20).watermark, Some(7));
        // Watermarks never go back.
        assert_eq!(gate.on_watermark(2, 3).watermark, None);
        assert_eq!(gate.on_watermark(2, 30).watermark, Some(10));
    }

    #[test]
    fn idle_channels_are_ignored_until_active_again() {
        let mut gate = InputGate::new([0, 0]);
        gate.on_watermark(0, 100);
        assert_eq!(gate.on_idleness(1, true), GateUpdate { watermark: Some(100), idleness: None });
        assert_eq!(gate.on_idleness(0, true), GateUpdate { watermark: None, idleness: Some(true) });
        assert_eq!(gate.on_idleness(1, false).idleness, Some(false));
    }

    #[test]
    fn ended_channels_stop_holding_the_watermark_back() {
        let mut gate = InputGate::new([0, 0]);
        gate.on_watermark(0, 50);
        gate.on_watermark(1, 10);
        assert_eq!(gate.on_end(1).watermark, Some(50));
        assert_eq!(gate.open_channels(), 1);
        assert_eq!(gate.on_end(0).watermark, Some(MAX_WATERMARK));
        assert_eq!(gate.open_channels(), 0);
    }
}
