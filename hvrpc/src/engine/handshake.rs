//! The handshake's rules: what each side announces, and what makes it refuse the other.
//!
//! Invariants (each has a test below):
//!
//! 1. A peer that is not hvrpc, or speaks another major version, is refused with a message
//!    saying which.
//! 2. A Hello whose `max_frame` is below [`MIN_MAX_FRAME`] is refused: every frame this side
//!    must be able to send (an error response, a GoAway) fits in that minimum.
//! 3. Every service one side wants must be served by the other with the same fingerprint; the
//!    refusal names the service. Both Hellos carry both lists, so both sides see a mismatch.
//! 4. The reason of a refusal is sent to the peer (in a GoAway) before closing.

use crate::error::Error;
use crate::protocol::{MAGIC, PREAMBLE, PROTOCOL_VERSION, ServiceInfo};

/// The largest Hello payload accepted (the frame's payload, after its 4-byte length).
pub(crate) const MAX_HELLO: usize = 64 * 1024;

/// The smallest `max_frame` a peer may announce.
pub(crate) const MIN_MAX_FRAME: u32 = 1024;

/// Checks the peer's preamble.
pub(crate) fn check_preamble(p: &[u8; PREAMBLE.len()]) -> Result<(), Error> {
    if p.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(Error::Handshake(
            format!(
                "the peer is not an hvrpc endpoint (it sent {:?})",
                String::from_utf8_lossy(p)
            )
            .into(),
        ));
    }
    let version = p.get(MAGIC.len()).copied().unwrap_or(0);
    if version != PROTOCOL_VERSION {
        return Err(Error::Handshake(
            format!(
                "protocol version mismatch: the peer speaks version {version}, this side \
                 version {PROTOCOL_VERSION}"
            )
            .into(),
        ));
    }
    Ok(())
}

/// Checks the limits the peer announced.
pub(crate) fn check_limits(max_frame: u32) -> Result<(), Error> {
    if max_frame < MIN_MAX_FRAME {
        return Err(Error::Handshake(
            format!(
                "the peer's max_frame of {max_frame} bytes is below the minimum of \
                 {MIN_MAX_FRAME}"
            )
            .into(),
        ));
    }
    Ok(())
}

pub(crate) fn mismatch(name: &str, theirs: u64, ours: u64) -> String {
    format!(
        "service {name} is defined differently on the two sides (fingerprint {theirs:016x} \
         there, {ours:016x} here): build both from the same service definition"
    )
}

pub(crate) fn not_served(name: &str, offered: &[ServiceInfo]) -> String {
    let names: Vec<&str> = offered.iter().map(|s| s.name.as_str()).collect();
    format!(
        "the peer does not serve {name} (it serves: {})",
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    )
}

/// Who offers the services being checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offerer {
    ThePeer,
    ThisSide,
}

/// Checks that everything in `wanted` is in `offered` with the same fingerprint.
pub(crate) fn check_services(
    wanted: &[ServiceInfo],
    offered: &[ServiceInfo],
    offerer: Offerer,
) -> Result<(), Error> {
    for want in wanted {
        match offered.iter().find(|s| s.name == want.name) {
            Some(s) if s.fingerprint == want.fingerprint => {}
            Some(s) => {
                return Err(Error::Handshake(
                    mismatch(&want.name, s.fingerprint, want.fingerprint).into(),
                ));
            }
            None if offerer == Offerer::ThePeer => {
                return Err(Error::Handshake(not_served(&want.name, offered).into()));
            }
            None => {
                return Err(Error::Handshake(
                    format!(
                        "the peer wants service {}, which this side does not serve",
                        want.name
                    )
                    .into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, fingerprint: u64) -> ServiceInfo {
        ServiceInfo {
            name: name.into(),
            fingerprint,
        }
    }

    #[test]
    fn other_protocols_and_versions_are_named() {
        assert!(check_preamble(&PREAMBLE).is_ok());
        let e = check_preamble(b"GET / HT").unwrap_err();
        assert!(e.to_string().contains("not an hvrpc endpoint"), "{e}");
        let mut v9 = PREAMBLE;
        v9[5] = 9;
        let e = check_preamble(&v9).unwrap_err();
        assert!(e.to_string().contains("the peer speaks version 9"), "{e}");
    }

    #[test]
    fn a_frame_limit_below_the_minimum_is_refused() {
        assert!(check_limits(MIN_MAX_FRAME).is_ok());
        let e = check_limits(MIN_MAX_FRAME - 1).unwrap_err();
        assert!(e.to_string().contains("max_frame of 1023 bytes"), "{e}");
    }

    #[test]
    fn wanted_services_must_be_served_alike() {
        let offered = [info("A", 1), info("B", 2)];
        assert!(check_services(&[info("B", 2)], &offered, Offerer::ThePeer).is_ok());
        let e = check_services(&[info("B", 3)], &offered, Offerer::ThePeer).unwrap_err();
        assert!(
            e.to_string().contains("service B is defined differently"),
            "{e}"
        );
        let e = check_services(&[info("C", 1)], &offered, Offerer::ThePeer).unwrap_err();
        assert!(
            e.to_string().contains("does not serve C (it serves: A, B)"),
            "{e}"
        );
        let e = check_services(&[info("C", 1)], &offered, Offerer::ThisSide).unwrap_err();
        assert!(e.to_string().contains("the peer wants service C"), "{e}");
    }
}
