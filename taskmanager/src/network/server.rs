//! The producing side of the data plane: accepts the connections of consuming taskmanagers and
//! forwards each requested channel's queue to its socket.

use super::BUFFER_SIZE;
use super::frame::{self, FrameError};
use crate::exchange::{ChannelEvent, LocalExchange};
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::{debug, error, warn};
use weir_runtime::ChannelId;

/// How long a consumer has to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle forwarder checks whether the server is shutting down.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Serves this taskmanager's channels to the taskmanagers that consume them. Dropping it stops
/// accepting and breaks the open connections (their consumers see a failed channel), as if this
/// taskmanager had died.
pub(crate) struct DataServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DataServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataServer").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

struct Shared {
    exchange: Arc<LocalExchange>,
    shutdown: AtomicBool,
    /// The open connections (clones of their sockets), to break them on shutdown.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

impl Shared {
    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an open connection until the returned guard drops; `None` if shutting down.
    fn register(self: &Arc<Self>, stream: &TcpStream) -> Option<Registration> {
        let clone = stream.try_clone().ok()?;
        let mut connections = self.connections();
        if self.shutdown.load(Ordering::SeqCst) {
            return None;
        }
        let key = self.next_connection.fetch_add(1, Ordering::Relaxed);
        connections.insert(key, clone);
        Some(Registration { shared: self.clone(), key })
    }
}

struct Registration {
    shared: Arc<Shared>,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.connections().remove(&self.key);
    }
}

impl DataServer {
    /// Listens on `bind` (port 0 picks a free port, see [`DataServer::local_addr`]) and serves
    /// the channels of `exchange`.
    ///
    /// # Errors
    /// The address cannot be bound, or the accepting thread cannot be started.
    pub(crate) fn start(bind: SocketAddr, exchange: Arc<LocalExchange>) -> std::io::Result<DataServer> {
        let listener = TcpListener::bind(bind)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            exchange,
            shutdown: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("weir-net-accept-{}", local_addr.port()))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        debug!(%local_addr, "data server listening");
        Ok(DataServer { local_addr, shared, acceptor: Some(acceptor) })
    }

    /// The address the server listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for DataServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Unblock `accept` with a connection of our own; the acceptor sees the flag and exits.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        match TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            Ok(_) => {
                if let Some(acceptor) = self.acceptor.take() {
                    let _ = acceptor.join();
                }
            }
            Err(err) => warn!(addr = %self.local_addr, "could not wake the data server's accepting thread: {err}"),
        }
        for (_, stream) in self.shared.connections().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        debug!(addr = %self.local_addr, "data server stopped");
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("weir-net-send-{peer}"))
                    .spawn(move || serve(stream, peer, &shared));
                if let Err(err) = spawned {
                    warn!(%peer, "dropping a data connection: cannot start its thread: {err}");
                }
            }
            Err(err) => {
                // For example out of file descriptors: don't spin.
                warn!(addr = ?listener.local_addr().ok(), "data server cannot accept: {err}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// How forwarding a channel ended without a socket error.
#[derive(Debug)]
enum Ending {
    /// The end of the stream was sent.
    EndOfStream,
    /// Every sender of the queue is gone (the job was released and its producer ended).
    Disconnected,
    /// The server is shutting down.
    Shutdown,
}

fn serve(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let Some(_registration) = shared.register(&stream) else {
        return;
    };
    let id = match handshake(&stream) {
        Ok(id) => id,
        Err(err) => {
            warn!(%peer, "dropping a data connection: bad handshake: {err}");
            return;
        }
    };
    let channel = format!("{}/{}/{}->{}#{}", id.job, id.edge, id.producer, id.consumer, id.attempt);
    let Some(receiver) = shared.exchange.take_receiver(id) else {
        error!(%peer, channel, "dropping a data connection: the channel is already consumed");
        return;
    };
    debug!(%peer, channel, "forwarding a channel");
    match forward(&receiver, stream, shared) {
        Ok(ending) => debug!(%peer, channel, ?ending, "stopped forwarding a channel"),
        // The consumer is gone: dropping the receiver fails the producing task's next send.
        Err(err) => warn!(%peer, channel, "stopped forwarding a channel: {err}"),
    }
}

fn handshake(stream: &TcpStream) -> Result<ChannelId, FrameError> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut reader = stream;
    let id = frame::read_handshake(&mut reader)?;
    stream.set_read_timeout(None)?;
    super::configure(stream)?;
    Ok(id)
}

/// Writes the queue's events to the socket, flushing whenever the queue has nothing more ready.
fn forward(receiver: &Receiver<ChannelEvent>, stream: TcpStream, shared: &Shared) -> Result<Ending, FrameError> {
    let mut writer = BufWriter::with_capacity(BUFFER_SIZE, stream);
    loop {
        let event = match receiver.try_recv() {
            Ok(event) => event,
            Err(TryRecvError::Disconnected) => return Ok(Ending::Disconnected),
            Err(TryRecvError::Empty) => {
                writer.flush()?;
                loop {
                    match receiver.recv_timeout(SHUTDOWN_POLL) {
                        Ok(event) => break event,
                        Err(RecvTimeoutError::Disconnected) => return Ok(Ending::Disconnected),
                        Err(RecvTimeoutError::Timeout) => {
                            if shared.shutdown.load(Ordering::SeqCst) {
                                return Ok(Ending::Shutdown);
                            }
                        }
                    }
                }
            }
        };
        frame::write_event(&mut writer, &event)?;
        if matches!(event, ChannelEvent::EndOfStream) {
            writer.flush()?;
            writer.get_ref().shutdown(Shutdown::Write)?;
            return Ok(Ending::EndOfStream);
        }
    }
}
