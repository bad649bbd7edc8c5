//! The handshake's rules: what each side announces, and what makes it refuse the other.
//!
//! Invariants (each has a test below):
//!
//! 1. A peer that is not hvrpc, or speaks another major version, is refused with a message
//!    saying which.
//! 2. A Hello whose `max_frame` is below [`MIN_MAX_FRAME`] is refused: every frame this side
//!    must be able to send (an error response, a GoAway) fits in that minimum.
//! 3. The reason of a refusal is sent to the peer (in a GoAway) before closing.
//!
//! What the two sides' services decide (which methods are called how, strict wants) is
//! `crate::skew`'s.

use crate::error::Error;
use crate::protocol::{MAGIC, PREAMBLE, PROTOCOL_VERSION};

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
        let which = match version {
            1 => " (hvrpc 0.1, which predates per-method versioning: upgrade it)",
            _ => "",
        };
        return Err(Error::Handshake(
            format!(
                "protocol version mismatch: the peer speaks version {version}{which}, this side \
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_protocols_and_versions_are_named() {
        assert!(check_preamble(&PREAMBLE).is_ok());
        let e = check_preamble(b"GET / HT").unwrap_err();
        assert!(e.to_string().contains("not an hvrpc endpoint"), "{e}");
        let mut v9 = PREAMBLE;
        v9[5] = 9;
        let e = check_preamble(&v9).unwrap_err();
        assert!(
            e.to_string()
                .contains("the peer speaks version 9, this side version 2"),
            "{e}"
        );
        let mut v1 = PREAMBLE;
        v1[5] = 1;
        let e = check_preamble(&v1).unwrap_err();
        assert!(e.to_string().contains("version 1 (hvrpc 0.1"), "{e}");
    }

    #[test]
    fn a_frame_limit_below_the_minimum_is_refused() {
        assert!(check_limits(MIN_MAX_FRAME).is_ok());
        let e = check_limits(MIN_MAX_FRAME - 1).unwrap_err();
        assert!(e.to_string().contains("max_frame of 1023 bytes"), "{e}");
    }
}
