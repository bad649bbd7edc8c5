//! [`Channel`]: a fixed connection, or an endpoint that is dialled again when the connection
//! breaks — one dial at a time, shared by every caller waiting for it, with a backoff after a
//! failed one.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use hvrpc_transport::Endpoint;
use tokio::time::Instant;
use tracing::Instrument;

use crate::connection::Connection;
use crate::error::Error;
use crate::link::lock;

/// The first pause after a failed dial; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between dials.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A client's way to its server: a fixed connection, or an endpoint that is re-dialled when the
/// connection breaks. Calls in flight on a broken connection fail with
/// [`Error::ConnectionLost`]; they are never re-sent.
///
/// Callers that find no usable connection share one dial and all get its result; a call's
/// deadline covers its wait for the dial. After a failed dial the next one waits for a pause
/// (200 ms, doubling with each failure in a row up to 10 s): callers arriving meanwhile wait for
/// it (within their deadlines), so a peer that is down is not dialled on every call.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

#[allow(clippy::large_enum_variant, reason = "one per channel, behind an Arc")]
enum Inner {
    Fixed(Connection),
    Dial(Dialer),
}

/// Makes a new connection (a `Connector` dialling its endpoint).
pub(crate) type DialFn =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Connection, Error>> + Send + Sync>;

struct Dialer {
    endpoint: Endpoint,
    default_deadline: Option<Duration>,
    dial: DialFn,
    state: Mutex<State>,
}

type Dial = Shared<BoxFuture<'static, Result<Connection, Error>>>;

enum State {
    Idle { failures: u32 },
    Ready(Connection),
    Dialling(Dial),
    Backoff { until: Instant, failures: u32 },
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Fixed(c) => f.debug_tuple("Channel").field(c).finish(),
            Inner::Dial(d) => write!(f, "Channel({})", d.endpoint),
        }
    }
}

impl From<Connection> for Channel {
    fn from(conn: Connection) -> Self {
        Channel {
            inner: Arc::new(Inner::Fixed(conn)),
        }
    }
}

fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(MAX_BACKOFF)
}

impl Channel {
    pub(crate) fn dialling(
        endpoint: Endpoint,
        default_deadline: Option<Duration>,
        dial: DialFn,
    ) -> Self {
        Channel {
            inner: Arc::new(Inner::Dial(Dialer {
                endpoint,
                default_deadline,
                dial,
                state: Mutex::new(State::Idle { failures: 0 }),
            })),
        }
    }

    /// The usable connection, if there is one now (no waiting).
    pub(crate) fn ready(&self) -> Option<Connection> {
        match &*self.inner {
            Inner::Fixed(conn) => Some(conn.clone()),
            Inner::Dial(d) => match &*lock(&d.state) {
                State::Ready(c) if c.is_usable() => Some(c.clone()),
                _ => None,
            },
        }
    }

    /// The current connection, dialling (again) if there is none or it broke.
    pub async fn connection(&self) -> Result<Connection, Error> {
        let dialer = match &*self.inner {
            Inner::Fixed(conn) if conn.is_closed() => return Err(conn.lost()),
            Inner::Fixed(conn) => return Ok(conn.clone()),
            Inner::Dial(d) => d,
        };
        let dial = loop {
            let wait = {
                let mut state = lock(&dialer.state);
                let failures = match &*state {
                    State::Ready(c) if c.is_usable() => return Ok(c.clone()),
                    State::Dialling(dial) => break dial.clone(),
                    State::Backoff { until, .. } if Instant::now() < *until => Err(*until),
                    State::Backoff { failures, .. } | State::Idle { failures } => Ok(*failures),
                    State::Ready(_) => Ok(0),
                };
                match failures {
                    Ok(failures) => {
                        let dial = self.start_dial(dialer, failures);
                        *state = State::Dialling(dial.clone());
                        break dial;
                    }
                    Err(until) => until,
                }
            };
            // A dial failed a moment ago: wait for the pause to end (within the caller's
            // deadline), then dial — or join the dial someone else started.
            tokio::time::sleep_until(wait).await;
        };
        dial.await
    }

    /// Starts a dial in a task of its own (it goes on if every caller gives up waiting; a
    /// connection made is kept for the next call).
    fn start_dial(&self, dialer: &Dialer, failures: u32) -> Dial {
        let inner = Arc::clone(&self.inner);
        let endpoint = dialer.endpoint.clone();
        let task = tokio::spawn(async move {
            let Inner::Dial(d) = &*inner else {
                return Err(Error::Protocol("a fixed channel does not dial".into()));
            };
            let result = (d.dial)()
                .instrument(tracing::debug_span!("hvrpc.dial", %endpoint))
                .await;
            *lock(&d.state) = match &result {
                Ok(conn) => State::Ready(conn.clone()),
                Err(e) => {
                    let pause = backoff(failures);
                    tracing::debug!(endpoint = %d.endpoint, error = %e, ?pause, "dial failed");
                    State::Backoff {
                        until: Instant::now() + pause,
                        failures: failures.saturating_add(1),
                    }
                }
            };
            result
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(Error::Connect(Arc::new(std::io::Error::other(format!(
                    "the dial task failed: {e}"
                )))))
            })
        }
        .boxed()
        .shared()
    }

    /// The default deadline of unary calls over this channel.
    pub(crate) fn default_deadline(&self) -> Option<Duration> {
        match &*self.inner {
            Inner::Dial(d) => d.default_deadline,
            Inner::Fixed(conn) => conn.default_deadline(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_after_a_failed_dial_doubles_up_to_a_limit() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(6400));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
