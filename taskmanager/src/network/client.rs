//! The consuming side of the data plane: connects to the producer's taskmanager and feeds the
//! channel's local queue from the socket.

use super::BUFFER_SIZE;
use super::frame::{self, FrameError};
use crate::exchange::{ChannelEvent, LocalExchange};
use crossbeam_channel::Sender;
use std::io::{self, BufReader, ErrorKind};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};
use weir_runtime::ChannelId;

/// How long a consumer keeps trying to reach a producer's taskmanager that may still be starting.
pub(crate) const CONNECT_RETRY: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The longest a single connection attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Feeds channel `id` of `exchange` from the producer's taskmanager at `producer` (`host:port`,
/// its data address) on a new thread. The consuming task takes the channel's receiver from
/// `exchange` as for a local channel; if the connection cannot be made within
/// [`CONNECT_RETRY`] or breaks before the end of the stream, the channel delivers
/// [`ChannelEvent::Failed`].
pub(crate) fn connect_channel(id: ChannelId, producer: String, exchange: Arc<LocalExchange>) {
    connect_channel_with(id, producer, exchange, CONNECT_RETRY);
}

/// [`connect_channel`], retrying failed connection attempts (refused, timed out, unresolvable
/// host; not an invalid address) for `retry_for` instead of [`CONNECT_RETRY`].
pub(crate) fn connect_channel_with(id: ChannelId, producer: String, exchange: Arc<LocalExchange>, retry_for: Duration) {
    let sender = exchange.sender(id);
    let on_spawn_failure = sender.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("weir-net-recv-{}-{}-{}", id.edge, id.producer, id.consumer))
        .spawn(move || receive(id, &producer, &sender, retry_for));
    if let Err(err) = spawned {
        let message = format!(
            "channel {}/{}->{}: cannot start the thread receiving from the producer: {err}",
            id.edge, id.producer, id.consumer
        );
        warn!("{message}");
        // The queue is new or drained by its task; never block the deploying caller.
        let _ = on_spawn_failure.try_send(ChannelEvent::Failed(message));
    }
}

/// Why receiving stopped before the end of the stream.
enum Stop {
    /// The consuming task is gone: nobody to tell.
    ConsumerGone,
    /// The connection failed.
    Failed(FrameError),
}

fn receive(id: ChannelId, producer: &str, sender: &Sender<ChannelEvent>, retry_for: Duration) {
    let channel = format!("{}/{}->{}", id.edge, id.producer, id.consumer);
    match run(id, producer, sender, retry_for) {
        Ok(()) => debug!(job = %id.job, channel, producer, "remote channel ended"),
        Err(Stop::ConsumerGone) => debug!(job = %id.job, channel, producer, "remote channel's consumer is gone"),
        Err(Stop::Failed(err)) => {
            let message = format!("channel {channel}: lost the connection to producer {producer}: {err}");
            warn!(job = %id.job, "{message}");
            let _ = sender.send(ChannelEvent::Failed(message));
        }
    }
}

fn run(id: ChannelId, producer: &str, sender: &Sender<ChannelEvent>, retry_for: Duration) -> Result<(), Stop> {
    let failed = |err: FrameError| Stop::Failed(err);
    let mut stream = connect(producer, retry_for).map_err(|err| failed(err.into()))?;
    super::configure(&stream).map_err(|err| failed(err.into()))?;
    frame::write_handshake(&mut stream, &id).map_err(|err| failed(err.into()))?;
    let mut reader = BufReader::with_capacity(BUFFER_SIZE, stream);
    loop {
        let event = frame::read_event(&mut reader).map_err(failed)?;
        let end = matches!(event, ChannelEvent::EndOfStream);
        // Blocks while the consuming task is behind: the socket stops being read and TCP's
        // window pushes back on the producer.
        sender.send(event).map_err(|_| Stop::ConsumerGone)?;
        if end {
            return Ok(());
        }
    }
}

/// Connects to `addr`, retrying everything but an invalid address for `retry_for` with
/// exponential backoff.
fn connect(addr: &str, retry_for: Duration) -> io::Result<TcpStream> {
    let started = Instant::now();
    let deadline = started + retry_for;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let err = match try_connect(addr, deadline) {
            Ok(stream) => return Ok(stream),
            Err(err) => err,
        };
        let now = Instant::now();
        if err.kind() == ErrorKind::InvalidInput {
            return Err(err);
        }
        if now >= deadline {
            let waited = now.duration_since(started);
            return Err(io::Error::new(err.kind(), format!("could not connect within {waited:.1?}: {err}")));
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn try_connect(addr: &str, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = None;
    for resolved in addr.to_socket_addrs()? {
        let timeout =
            deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(100), ATTEMPT_TIMEOUT);
        match TcpStream::connect_timeout(&resolved, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(ErrorKind::NotFound, format!("{addr} resolves to no address"))))
}
