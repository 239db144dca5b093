//! Requests that enter the dataflow, and where their responses go.

use serde::{Deserialize, Serialize};

use crate::history::Origin;
use crate::shadow::ShadowKey;

/// Shadow operation named by a request topic or HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Merge the payload's `state` into the shadow.
    Update,
    /// Read the shadow with its delta.
    Get,
    /// Delete the shadow (its version numbering continues on re-creation).
    Delete,
    /// List the named shadows of the request's thing (REST only; the payload is a
    /// [`ListRequest`] as JSON).
    ListNamed,
}

/// Paging parameters of a list request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRequest {
    /// Names per page, 1 to [`MAX_LIST_PAGE_SIZE`]; `None` means [`DEFAULT_LIST_PAGE_SIZE`].
    pub page_size: Option<usize>,
    /// Token from the previous page: the page starts after this shadow name.
    pub next_token: Option<String>,
}

/// Names per page when a list request sets none (the AWS IoT Greengrass default).
pub const DEFAULT_LIST_PAGE_SIZE: usize = 25;

/// Largest page size AWS IoT accepts for `ListNamedShadowsForThing`.
pub const MAX_LIST_PAGE_SIZE: usize = 100;

impl Operation {
    /// Returns the topic segment of the operation (`update`, `get`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Update => "update",
            Operation::Get => "get",
            Operation::Delete => "delete",
            Operation::ListNamed => "list",
        }
    }
}

/// Destination of the response to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyTo {
    /// The `/accepted` or `/rejected` topic of the request topic.
    Mqtt,
    /// A waiting HTTP request, identified by the id its handler registered.
    Http {
        /// Id under which the HTTP handler waits for the reply.
        request_id: u64,
    },
    /// No response is sent (in-process replay).
    Nobody,
}

/// One shadow request, with its payload still encoded.
///
/// Payloads are decoded on the worker that owns the shadow, so JSON parsing spreads over all
/// workers instead of running on the thread that receives MQTT messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Shadow addressed by the request; names are validated by the ingest before this point.
    pub key: ShadowKey,
    /// Requested operation.
    pub operation: Operation,
    /// Raw request body (JSON for updates; empty or `{"clientToken":..}` for get and delete).
    pub payload: Vec<u8>,
    /// Channel the request arrived on.
    pub origin: Origin,
    /// Destination of the response.
    pub reply_to: ReplyTo,
    /// When the service received the request, in milliseconds since the Unix epoch. Metadata
    /// timestamps derive from it, so replaying the same requests gives the same shadows.
    pub received_at_ms: i64,
}
