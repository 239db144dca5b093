//! The in-process request intake: takes the requests that devices publish to the embedded
//! broker straight from the broker's connection tasks, without a loopback MQTT client.
//!
//! # Notes
//! - Topics, names, limits and rejections are checked by the same code as in
//!   [`run_source`](super::run_source), so both paths reply to a request alike.
//! - A device's connection awaits the hand-over of its request to the dataflow's queue before
//!   it sends the PUBACK and reads the device's next message. A full queue therefore slows
//!   the devices that publish down, and each device's requests enter it in the order sent.
//! - After [`RequestIntake::close`], requests are acknowledged and dropped, as when the
//!   service's request client has disconnected from a broker.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use pipeline::dataflow::{InFlight, RequestSender};
use pipeline::protocol::ShadowTopic;
use pipeline::shadow::Limits;
use rumqttc::QoS;

use super::source::{Admission, admit, send_request};
use crate::broker::{Delivery, EmbeddedBroker, LocalPublisher, LocalSubscriber};

/// Delivers shadow requests from the embedded broker to the dataflow in the same process.
pub struct RequestIntake {
    /// `None` once closed.
    requests: Mutex<Option<Arc<RequestSender>>>,
    limits: Limits,
    in_flight: Option<Arc<InFlight>>,
    /// Publishes rejections into the broker.
    publisher: LocalPublisher,
}

impl std::fmt::Debug for RequestIntake {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RequestIntake")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RequestIntake {
    /// Registers an intake for every shadow request topic with `broker`, at QoS 1 like the
    /// subscription of [`run_source`](super::run_source).
    ///
    /// # Errors
    /// Returns [`BrokerError`](crate::broker::BrokerError) when the broker has a local
    /// subscriber already.
    pub fn subscribe(
        broker: &EmbeddedBroker,
        limits: Limits,
        requests: RequestSender,
        in_flight: Option<Arc<InFlight>>,
    ) -> Result<Arc<RequestIntake>, crate::broker::BrokerError> {
        let intake = Arc::new(RequestIntake {
            requests: Mutex::new(Some(Arc::new(requests))),
            limits,
            in_flight,
            publisher: broker.local_publisher(),
        });
        broker.subscribe_local(
            ShadowTopic::request_filters(),
            Arc::clone(&intake) as Arc<dyn LocalSubscriber>,
        )?;
        Ok(intake)
    }

    /// Stops taking requests and releases the intake's hold on the request channel. Requests
    /// that connections are handing over still reach the dataflow.
    pub fn close(&self) {
        let closed = self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if closed.is_some() {
            tracing::info!("request intake closed");
        }
    }

    fn sender(&self) -> Option<Arc<RequestSender>> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl LocalSubscriber for RequestIntake {
    fn deliver(&self, topic: &str, payload: &Bytes) -> Option<Delivery> {
        // Checked first, so that a closed intake takes no in-flight slot.
        let requests = self.sender()?;
        match admit(topic, payload, &self.limits, self.in_flight.as_deref()) {
            Admission::Ignored => None,
            Admission::Rejected { topic, body } => {
                if let Err(error) =
                    self.publisher
                        .publish_without_waiting(&topic, body, QoS::AtLeastOnce)
                {
                    tracing::warn!(error = %error, "publishing a rejection failed");
                }
                None
            }
            Admission::Admitted(request) => {
                let in_flight = self.in_flight.clone();
                Some(Box::pin(async move {
                    if send_request(&requests, in_flight.as_deref(), request)
                        .await
                        .is_err()
                    {
                        tracing::debug!("dataflow stopped; dropping a request");
                    }
                }))
            }
        }
    }
}
