//! Broker addresses: `mqtt://HOST:PORT`, as given on the command line and in config files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Broker host used when no address is given.
pub const DEFAULT_BROKER_HOST: &str = "127.0.0.1";

/// Broker port used when no address is given, or the address has no port.
pub const DEFAULT_BROKER_PORT: u16 = 1883;

/// A broker address that is not of the form `mqtt://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid broker URL `{url}`: {reason}; expected mqtt://HOST:PORT")]
pub struct InvalidBrokerAddress {
    /// URL as given.
    pub url: String,
    /// Problem found in the URL.
    pub reason: &'static str,
}

/// Address of an MQTT broker, parsed from `mqtt://HOST:PORT`.
///
/// # Example
///
/// ```
/// use ingest::mqtt::BrokerAddress;
///
/// let broker: BrokerAddress = "mqtt://127.0.0.1:1884".parse().expect("valid URL");
/// assert_eq!(broker.host, "127.0.0.1");
/// assert_eq!(broker.port, 1884);
/// assert_eq!(broker.to_string(), "mqtt://127.0.0.1:1884");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BrokerAddress {
    /// Host name or IP address. An IPv6 address is stored without brackets.
    pub host: String,

    /// TCP port.
    pub port: u16,
}

impl Default for BrokerAddress {
    fn default() -> Self {
        Self {
            host: DEFAULT_BROKER_HOST.to_owned(),
            port: DEFAULT_BROKER_PORT,
        }
    }
}

impl FromStr for BrokerAddress {
    type Err = InvalidBrokerAddress;

    /// Parses `mqtt://HOST:PORT`, `mqtt://HOST` (port 1883) or `mqtt://[IPv6]:PORT`.
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidBrokerAddress {
            url: url.to_owned(),
            reason,
        };

        let Some(authority) = url.strip_prefix("mqtt://") else {
            if url.starts_with("mqtts://") {
                return Err(invalid("TLS (mqtts://) is not supported"));
            }
            return Err(invalid("the scheme must be mqtt://"));
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        if authority.contains('/') || authority.contains('@') {
            return Err(invalid("a path or user name is not allowed"));
        }

        let (host, port) =
            split_host_port(authority).ok_or_else(|| invalid("bad IPv6 brackets"))?;
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        let port = match port {
            None => DEFAULT_BROKER_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(invalid("the port must be a number from 1 to 65535")),
            },
        };

        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Splits `host:port`, `host` or `[v6]:port` into host and optional port text.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, rest) = bracketed.split_once(']')?;
        return match rest {
            "" => Some((host, None)),
            _ => Some((host, Some(rest.strip_prefix(':')?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "mqtt://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "mqtt://{}:{}", self.host, self.port)
        }
    }
}

impl TryFrom<String> for BrokerAddress {
    type Error = InvalidBrokerAddress;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<BrokerAddress> for String {
    fn from(address: BrokerAddress) -> String {
        address.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<BrokerAddress, InvalidBrokerAddress> {
        url.parse()
    }

    fn broker(host: &str, port: u16) -> BrokerAddress {
        BrokerAddress {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn broker_url_forms_parse() {
        assert_eq!(
            parse("mqtt://127.0.0.1:1884"),
            Ok(broker("127.0.0.1", 1884))
        );
        assert_eq!(parse("mqtt://localhost"), Ok(broker("localhost", 1883)));
        assert_eq!(
            parse("mqtt://localhost:1885/"),
            Ok(broker("localhost", 1885))
        );
        assert_eq!(parse("mqtt://[::1]:1886"), Ok(broker("::1", 1886)));
        assert_eq!(parse("mqtt://[::1]"), Ok(broker("::1", 1883)));
    }

    #[test]
    fn broker_url_errors_name_the_problem() {
        let cases = [
            ("127.0.0.1:1883", "the scheme must be mqtt://"),
            ("mqtts://host:8883", "TLS (mqtts://) is not supported"),
            ("mqtt://:1883", "the host is empty"),
            ("mqtt://host:0", "the port must be a number from 1 to 65535"),
            (
                "mqtt://host:70000",
                "the port must be a number from 1 to 65535",
            ),
            (
                "mqtt://host:port",
                "the port must be a number from 1 to 65535",
            ),
            (
                "mqtt://host:1883/topic",
                "a path or user name is not allowed",
            ),
            ("mqtt://[::1", "bad IPv6 brackets"),
        ];
        for (url, expected_reason) in cases {
            match parse(url) {
                Err(InvalidBrokerAddress { reason, .. }) => {
                    assert_eq!(reason, expected_reason, "URL {url}");
                }
                other => panic!("URL {url} gave {other:?}"),
            }
        }
    }

    #[test]
    fn broker_display_round_trips() {
        for url in [
            "mqtt://127.0.0.1:1883",
            "mqtt://[::1]:1886",
            "mqtt://broker.local:1",
        ] {
            assert_eq!(parse(url).expect("valid URL").to_string(), url);
        }
    }
}
