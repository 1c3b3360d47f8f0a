//! Asynchronous I/O (Flink's `AsyncDataStream`): an operator that calls an external service for
//! each record without waiting for one answer before sending the next request.
//!
//! The function returns a future per record; the operator runs it on a small Tokio runtime of its
//! own (so futures of Tokio-based clients work), with at most `capacity` requests in flight (more
//! input waits: backpressure) and a timeout per request. Results leave in input order
//! ([`DataStream::ordered_wait`](crate::DataStream::ordered_wait)) or as they complete
//! ([`DataStream::unordered_wait`](crate::DataStream::unordered_wait)); in both modes no result
//! passes a watermark that followed its input, so event time stays correct downstream.
//!
//! The inputs of the requests in flight are part of the checkpoint: after a restore they are
//! issued again, in their order, so every input is answered exactly once in the committed output
//! (the service may see a request twice; make requests idempotent).

use crate::error::Result;
use std::future::Future;
use std::pin::Pin;

/// The future of one request: the records it produces (none, one or more).
pub type AsyncResult<O> = Pin<Box<dyn Future<Output = Result<Vec<O>>> + Send + 'static>>;

/// Boxes a future as an [`AsyncResult`].
pub fn async_result<O, F>(future: F) -> AsyncResult<O>
where
    F: Future<Output = Result<Vec<O>>> + Send + 'static,
{
    Box::pin(future)
}

/// Calls an external service for each record (Flink's `AsyncFunction`). One instance per
/// subtask, with the lifecycle of the [other functions](crate::functions).
pub trait AsyncFunction<I, O>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &crate::functions::RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Starts the request for `input`. The future runs on the operator's runtime; an error it
    /// returns fails the task.
    fn invoke(&self, input: I) -> AsyncResult<O>;

    /// The request for `input` did not complete within the timeout: the records to emit instead.
    /// The default fails the task, as Flink's does.
    fn timeout(&self, input: I) -> Result<Vec<O>> {
        let _ = input;
        Err(crate::Error::user("an async request timed out"))
    }

    /// Called once per subtask when its task is over.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}
