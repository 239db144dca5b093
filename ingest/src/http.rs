//! HTTP-originated requests: forwarding a request into the dataflow and waiting for its reply.
//!
//! The HTTP API registers each request under a fresh id, sends it into the dataflow with
//! [`ReplyTo::Http`], and waits. The service's outputs call [`HttpReplies::complete`] when the
//! dataflow delivers the reply.
//!
//! The two halves are separate types because the dataflow's outputs hold [`HttpReplies`]: if
//! they held the request sender too, the request channel could never close and the dataflow
//! could never finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline::dataflow::{HttpReply, InFlight, Operation, ReplyTo, Request, RequestSender};
use pipeline::history::Origin;
use pipeline::shadow::ShadowKey;
use tokio::sync::oneshot;

/// Default time an HTTP request waits for the dataflow's reply.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reason an HTTP request got no reply from the dataflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The dataflow is shutting down.
    #[error("the service is shutting down")]
    Closed,
    /// The thing already has its maximum of requests in flight.
    #[error("too many requests in flight for this thing")]
    TooManyInFlight,
    /// No reply arrived in time.
    #[error("no reply from the shadow dataflow within {0:?}")]
    TimedOut(Duration),
}

/// HTTP requests waiting for their replies, by request id.
#[derive(Debug, Default)]
pub struct HttpReplies {
    // A std Mutex: it is held only to insert or remove one entry and never across an await.
    waiting: Mutex<HashMap<u64, oneshot::Sender<HttpReply>>>,
}

impl HttpReplies {
    /// Hands `reply` to the request waiting for it. A reply whose request has timed out is
    /// dropped with a DEBUG log line.
    pub fn complete(&self, reply: HttpReply) {
        let waiting = self.lock().remove(&reply.request_id);
        match waiting {
            Some(sender) => {
                let _ = sender.send(reply);
            }
            None => tracing::debug!(
                request_id = reply.request_id,
                "dropping reply of an HTTP request that stopped waiting"
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<HttpReply>>> {
        // A panic while holding this lock cannot leave the map inconsistent, so recover from poison.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sends requests from HTTP handlers into the dataflow and waits for their replies.
#[derive(Debug)]
pub struct HttpRequests {
    sender: RequestSender,
    replies: Arc<HttpReplies>,
    in_flight: Option<Arc<InFlight>>,
    next_id: AtomicU64,
    reply_timeout: Duration,
}

impl HttpRequests {
    /// Creates the request side; requests go to `sender` and replies arrive through `replies`.
    pub fn new(
        sender: RequestSender,
        replies: Arc<HttpReplies>,
        in_flight: Option<Arc<InFlight>>,
        reply_timeout: Duration,
    ) -> Self {
        HttpRequests {
            sender,
            replies,
            in_flight,
            next_id: AtomicU64::new(1),
            reply_timeout,
        }
    }

    /// Sends a request into the dataflow and waits for its reply.
    ///
    /// # Errors
    /// Returns [`SubmitError`] when the dataflow has stopped or does not reply in time.
    pub async fn submit(
        &self,
        key: ShadowKey,
        operation: Operation,
        payload: Vec<u8>,
    ) -> Result<HttpReply, SubmitError> {
        if let Some(in_flight) = &self.in_flight
            && !in_flight.try_acquire(&key.thing_name)
        {
            return Err(SubmitError::TooManyInFlight);
        }
        let thing = self.in_flight.as_ref().map(|_| key.thing_name.clone());
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_sender, reply) = oneshot::channel();
        self.replies.lock().insert(request_id, reply_sender);
        let request = Request {
            key,
            operation,
            payload,
            origin: Origin::Http,
            reply_to: ReplyTo::Http { request_id },
            received_at_ms: crate::mqtt::now_ms(),
        };
        if self.sender.send(request).await.is_err() {
            self.replies.lock().remove(&request_id);
            if let (Some(in_flight), Some(thing)) = (&self.in_flight, &thing) {
                in_flight.release(thing);
            }
            return Err(SubmitError::Closed);
        }
        match tokio::time::timeout(self.reply_timeout, reply).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(SubmitError::Closed),
            Err(_) => {
                self.replies.lock().remove(&request_id);
                Err(SubmitError::TimedOut(self.reply_timeout))
            }
        }
    }
}
