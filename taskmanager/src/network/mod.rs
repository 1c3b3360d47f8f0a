//! The data plane between taskmanagers: carries a channel whose producing and consuming subtasks
//! run on different taskmanagers, feeding the same bounded queues of the
//! [`LocalExchange`](crate::exchange::LocalExchange) that local channels use. Tasks never know whether a channel
//! is local or remote.
//!
//! # Design
//!
//! - **One TCP connection per remote channel** (`ChannelId`: job, attempt, edge, producer
//!   subtask, consumer subtask). No multiplexing, so no head-of-line blocking between channels
//!   and no credit protocol: flow control is TCP's own window.
//! - **The consumer connects.** On deploying a consuming task whose producer subtask runs
//!   elsewhere, its taskmanager calls [`connect_channel`] with the producer taskmanager's data
//!   address. A `weir-net-recv-…` thread connects (retrying for up to 10 s with backoff from
//!   50 ms to 1 s, since the producer's taskmanager may still be starting), sends the handshake,
//!   then reads frames and pushes the events into the local queue of that channel with a
//!   blocking send. The consuming task takes the queue's receiver as for a local channel.
//! - **The producer side needs nothing.** The producing task sends into its local queue as
//!   always. The [`DataServer`] of its taskmanager accepts the consumer's connection, reads the
//!   handshake and takes the receiver of that queue; a `weir-net-send-…` thread forwards the
//!   events to the socket (64 KiB `BufWriter`, flushed whenever the queue has nothing more
//!   ready, so latency stays low at low rates) until it wrote the end of the stream, then shuts
//!   down its side of the connection.
//! - **Backpressure and bounded memory.** A slow consuming task leaves its queue full; the
//!   receiving thread blocks on the queue and stops reading the socket; TCP's window closes; the
//!   forwarding thread blocks writing and stops draining the producer's queue; that fills up and
//!   blocks the producing task, exactly as for a local channel. Per remote channel, memory is
//!   bounded by the producer-side queue, the two sockets' buffers (plus the 64 KiB user-space
//!   buffer on each end), and the consumer-side queue.
//! - **Blocking sockets on plain threads** (`std::net`, `std::thread`), like the tasks
//!   themselves; `TCP_NODELAY` is on.
//!
//! # Failures
//!
//! - Connecting fails after the retry window, the connection breaks, or the producer sends
//!   garbage: the receiving thread pushes `ChannelEvent::Failed("channel {edge}/{producer}->
//!   {consumer}: lost the connection to producer {address}: {error}")`, which fails the
//!   consuming task.
//! - The consuming task is gone (its queue has no receiver): the receiving thread exits
//!   quietly and closes the connection; the forwarding thread's next write fails, it drops the
//!   producer queue's receiver, and the producing task's next send fails with "the downstream
//!   task is gone", failing the job.
//! - The producer queue's senders are all gone before the end of the stream (the job was
//!   released): the forwarding thread closes the connection; the consumer sees a failed channel.
//! - A bad handshake (wrong magic, version, or none within 5 s) is logged with the peer's
//!   address and the connection dropped; so is a handshake for a channel whose receiver was
//!   already taken (a second consumer for one channel).
//! - Dropping the [`DataServer`] stops accepting and breaks every open connection, as if the
//!   taskmanager had died.
//!
//! # Wire format
//!
//! All integers little-endian.
//!
//! Handshake, consumer to producer, once, 37 bytes:
//!
//! | bytes | field                                  |
//! |-------|----------------------------------------|
//! | 4     | magic `WEIR`                           |
//! | 1     | protocol version, `1`                  |
//! | 16    | job id (uuid, raw bytes)               |
//! | 4     | attempt (u32)                          |
//! | 4     | edge (u32)                             |
//! | 4     | producer subtask (u32)                 |
//! | 4     | consumer subtask (u32)                 |
//!
//! Then frames, producer to consumer: u8 tag, u32 payload length, payload. Payloads over
//! 64 MiB are rejected.
//!
//! | tag | event       | payload                    |
//! |-----|-------------|----------------------------|
//! | 0   | Batch       | the serialized batch       |
//! | 1   | Watermark   | 8 bytes, i64               |
//! | 2   | Idle        | 1 byte, 0 (active) or 1    |
//! | 3   | EndOfStream | empty; the producer closes |
//!
//! The consumer sends nothing after the handshake.

mod client;
mod frame;
mod server;

pub(crate) use client::connect_channel;
pub(crate) use server::DataServer;

/// Configures a data-plane connection: no Nagle delay (batches are already large, and small
/// ones must not wait), and TCP keepalive so that a peer machine that vanished without closing
/// the connection is noticed within about a minute instead of blocking a thread forever.
pub(crate) fn configure(stream: &std::net::TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(15))
        .with_interval(std::time::Duration::from_secs(5))
        .with_retries(6);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// User-space buffer of each connection end.
const BUFFER_SIZE: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::client::connect_channel_with;
    use super::*;
    use crate::exchange::{ChannelEvent, LocalExchange};
    use crossbeam_channel::{Receiver, SendTimeoutError};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use weir_runtime::{ChannelId, JobId};

    fn channel() -> ChannelId {
        ChannelId { job: JobId::random(), attempt: 2, edge: 5, producer: 1, consumer: 3 }
    }

    fn server(exchange: &Arc<LocalExchange>) -> DataServer {
        DataServer::start("127.0.0.1:0".parse().unwrap(), exchange.clone()).unwrap()
    }

    fn recv(receiver: &Receiver<ChannelEvent>) -> ChannelEvent {
        receiver.recv_timeout(Duration::from_secs(10)).expect("no event within 10 s")
    }

    fn expect_failed(receiver: &Receiver<ChannelEvent>, within: Duration) -> String {
        match receiver.recv_timeout(within) {
            Ok(ChannelEvent::Failed(message)) => message,
            other => panic!("expected a failed channel, got {other:?}"),
        }
    }

    #[test]
    fn events_arrive_in_order() {
        let producer_side = Arc::new(LocalExchange::new(4));
        let consumer_side = Arc::new(LocalExchange::new(4));
        let server = server(&producer_side);
        let id = channel();
        let events = || {
            vec![
                ChannelEvent::Batch(b"first".to_vec()),
                ChannelEvent::Watermark(i64::MIN),
                ChannelEvent::Batch(Vec::new()),
                ChannelEvent::Idle(true),
                ChannelEvent::Idle(false),
                ChannelEvent::Batch((0..200_000u32).map(|i| (i % 251) as u8).collect()),
                ChannelEvent::Watermark(42),
                ChannelEvent::Batch(b"last".to_vec()),
                ChannelEvent::Watermark(i64::MAX),
                ChannelEvent::EndOfStream,
            ]
        };
        let sender = producer_side.sender(id);
        let feeder = std::thread::spawn(move || {
            for event in events() {
                sender.send(event).unwrap();
            }
        });
        connect_channel(id, server.local_addr().to_string(), consumer_side.clone());
        let receiver = consumer_side.take_receiver(id).unwrap();
        let received: Vec<ChannelEvent> = (0..events().len()).map(|_| recv(&receiver)).collect();
        assert_eq!(format!("{received:?}"), format!("{:?}", events()));
        feeder.join().unwrap();
        assert!(receiver.recv_timeout(Duration::from_millis(200)).is_err(), "nothing after the end of the stream");
    }

    #[test]
    fn slow_consumers_block_the_producer() {
        const BATCHES: usize = 10_000;
        const SIZE: usize = 32 * 1024;
        let producer_side = Arc::new(LocalExchange::new(2));
        let consumer_side = Arc::new(LocalExchange::new(2));
        let server = server(&producer_side);
        let id = channel();
        let sender = producer_side.sender(id);
        let pushed = Arc::new(AtomicUsize::new(0));
        let feeder = {
            let pushed = pushed.clone();
            std::thread::spawn(move || {
                for i in 0..BATCHES {
                    let mut batch = vec![0; SIZE];
                    batch[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    batch[SIZE - 1] = i as u8;
                    sender.send(ChannelEvent::Batch(batch)).unwrap();
                    pushed.fetch_add(1, Ordering::SeqCst);
                }
                sender.send(ChannelEvent::EndOfStream).unwrap();
            })
        };
        connect_channel(id, server.local_addr().to_string(), consumer_side.clone());
        std::thread::sleep(Duration::from_secs(1));
        let blocked_at = pushed.load(Ordering::SeqCst);
        assert!(blocked_at < 1000, "the producer pushed {blocked_at} batches past a consumer that does not read");
        let receiver = consumer_side.take_receiver(id).unwrap();
        for i in 0..BATCHES {
            match recv(&receiver) {
                ChannelEvent::Batch(batch) => {
                    assert_eq!(batch.len(), SIZE);
                    assert_eq!(u64::from_le_bytes(batch[..8].try_into().unwrap()), i as u64);
                    assert_eq!(batch[SIZE - 1], i as u8);
                }
                other => panic!("expected batch {i}, got {other:?}"),
            }
        }
        assert!(matches!(recv(&receiver), ChannelEvent::EndOfStream));
        feeder.join().unwrap();
    }

    #[test]
    fn unreachable_producers_fail_the_channel() {
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let consumer_side = Arc::new(LocalExchange::new(2));
        let id = channel();
        let started = Instant::now();
        connect_channel_with(id, address.to_string(), consumer_side.clone(), Duration::from_millis(500));
        let receiver = consumer_side.take_receiver(id).unwrap();
        let message = expect_failed(&receiver, Duration::from_secs(12));
        assert!(started.elapsed() >= Duration::from_millis(500), "gave up after {:?}", started.elapsed());
        assert!(
            message.starts_with(&format!("channel 5/1->3: lost the connection to producer {address}: ")),
            "{message}"
        );
        assert!(message.contains("could not connect"), "{message}");
    }

    #[test]
    fn a_vanishing_producer_fails_the_channel() {
        let producer_side = Arc::new(LocalExchange::new(4));
        let consumer_side = Arc::new(LocalExchange::new(4));
        let server = server(&producer_side);
        let address = server.local_addr();
        let id = channel();
        let sender = producer_side.sender(id);
        for i in 0..3u8 {
            sender.send(ChannelEvent::Batch(vec![i])).unwrap();
        }
        connect_channel(id, address.to_string(), consumer_side.clone());
        let receiver = consumer_side.take_receiver(id).unwrap();
        for i in 0..3u8 {
            assert!(matches!(recv(&receiver), ChannelEvent::Batch(b) if b == [i]));
        }
        drop(server);
        let message = expect_failed(&receiver, Duration::from_secs(5));
        assert!(
            message.starts_with(&format!("channel 5/1->3: lost the connection to producer {address}: ")),
            "{message}"
        );
        // The forwarder dropped the producer queue's receiver: the producing task fails.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match sender.send_timeout(ChannelEvent::Batch(vec![9]), Duration::from_millis(50)) {
                Err(SendTimeoutError::Disconnected(_)) => break,
                _ => assert!(Instant::now() < deadline, "the producer's queue is still being read"),
            }
        }
    }

    #[test]
    fn bad_and_duplicate_handshakes_are_dropped() {
        let producer_side = Arc::new(LocalExchange::new(4));
        let server = server(&producer_side);
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: weir\r\n\r\n....").unwrap();
        let mut buf = [0; 16];
        assert_eq!(stream.read(&mut buf).unwrap_or(0), 0, "the server answers garbage with nothing but a close");

        let id = channel();
        assert!(producer_side.take_receiver(id).is_some(), "taken by someone else");
        let consumer_side = Arc::new(LocalExchange::new(4));
        connect_channel(id, server.local_addr().to_string(), consumer_side.clone());
        let receiver = consumer_side.take_receiver(id).unwrap();
        let message = expect_failed(&receiver, Duration::from_secs(10));
        assert!(message.contains("closed before the end of the stream"), "{message}");
    }
}
