//! Fleet queries over all shadows: AWS fleet-indexing requests, continuous views and watches.
//!
//! Every result comes from a view in the dataflow (see `pipeline::dataflow::ViewControl`): a
//! continuous view lives until it is deleted, a one-off query (`/indices/...`) installs a
//! temporary view, reads it once and drops it, and a watch of one shadow lives as long as its
//! event stream.
//!
//! | method and path | what it does |
//! |---|---|
//! | `POST /indices/search` | SearchIndex: the matching things, a page at a time |
//! | `POST /indices/statistics`, `/cardinality`, `/percentiles`, `/buckets` | AWS's aggregations |
//! | `POST /views` | registers a view: `{"queryString", "aggregation"?}` |
//! | `GET /views` | lists the views |
//! | `GET /views/{id}` | returns the view's current answer |
//! | `GET /views/{id}/changes` | streams the view's changes as Server-Sent Events |
//! | `DELETE /views/{id}` | drops the view |
//! | `GET /things/{thing}/shadow/changes[?name=]` | streams the shadow's accepted updates |
//!
//! # Consistency
//! A read of a view or a one-off query waits until the view reflects every change acknowledged
//! before the request arrived. Change streams send each change once, in dataflow time order
//! per thing, from the moment they are opened.

mod registry;
mod routes;
mod view;

pub use registry::{FleetViews, OUT_OF_SYNC_VIEW, OpenTime, ViewError, render};
pub use routes::routes;
pub use view::{Aggregation, LiveView, ViewChange, ViewDefinition};
