//! The one place where CONNECT, SUBSCRIBE and PUBLISH are authorised.
//!
//! The broker calls an [`Authorizer`] for every CONNECT, every filter of a SUBSCRIBE and every
//! PUBLISH. Today it uses [`AllowAll`]. Username/password checks and per-thing topic rules
//! (a device may only use `$aws/things/{its own name}/...`) belong in another implementation.

use rumqttc::mqttbytes::v4::{ConnectReturnCode, Login};

/// Decides what a client may do.
///
/// Implementations run while the broker holds its router lock (SUBSCRIBE, PUBLISH) or on the
/// connection's task (CONNECT), so they must return quickly and must not block.
pub(crate) trait Authorizer: Send + Sync {
    /// Returns `Ok` to accept the connection, or the CONNACK code that rejects it
    /// (`BadUserNamePassword` or `NotAuthorized`).
    fn authorize_connect(
        &self,
        client_id: &str,
        login: Option<&Login>,
    ) -> Result<(), ConnectReturnCode>;

    /// Returns whether `client_id` may subscribe to `filter`; a rejected filter gets the
    /// SUBACK return code 0x80.
    fn authorize_subscribe(&self, client_id: &str, filter: &str) -> bool;

    /// Returns whether `client_id` may publish to `topic`. MQTT 3.1.1 has no negative PUBACK,
    /// so the broker closes the connection of a client that is not allowed, as AWS IoT does.
    fn authorize_publish(&self, client_id: &str, topic: &str) -> bool;
}

/// Authorizer that accepts every client, filter and topic.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize_connect(&self, _: &str, _: Option<&Login>) -> Result<(), ConnectReturnCode> {
        Ok(())
    }

    fn authorize_subscribe(&self, _: &str, _: &str) -> bool {
        true
    }

    fn authorize_publish(&self, _: &str, _: &str) -> bool {
        true
    }
}
