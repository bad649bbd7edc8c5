//! Messages sent in parts (kind 10), put back together.
//!
//! Invariants (each has a test below):
//!
//! 1. **Bounded before allocating.** A message's announced length (`total`) is checked against
//!    this side's maximum message size at its first part, before anything is kept for it; and
//!    what is kept grows with the bytes received: at most [`UPFRONT`] is reserved for what
//!    the peer has only announced. Each piece is copied into the message's buffer as it
//!    arrives, so the read buffer it came in is reused at once (keeping pieces as slices of
//!    it would make every read allocate fresh memory).
//! 2. **Exact.** Every part of a message announces the same `total`; the pieces never exceed
//!    it, and with the last one (in the message's ordinary frame) they are exactly `total`
//!    bytes. Anything else is a protocol violation.

use bytes::{Bytes, BytesMut};

/// The most reserved for a message before its bytes arrive; beyond it the buffer grows as they
/// do.
pub(crate) const UPFRONT: usize = 64 << 20;

/// A message of which some parts have arrived.
#[derive(Debug)]
pub(crate) struct Partial {
    total: u64,
    buf: BytesMut,
}

impl Partial {
    /// The first part of a message of `total` bytes, for a side taking at most `max`.
    pub(crate) fn start(total: u64, max: usize, piece: &[u8]) -> Result<Partial, String> {
        check_total(total, max)?;
        let upfront = usize::try_from(total).unwrap_or(usize::MAX).min(UPFRONT);
        let mut partial = Partial {
            total,
            buf: BytesMut::with_capacity(upfront),
        };
        partial.push(total, piece)?;
        Ok(partial)
    }

    /// The next part.
    pub(crate) fn push(&mut self, total: u64, piece: &[u8]) -> Result<(), String> {
        if total != self.total {
            return Err(format!(
                "a part announces {total} bytes, an earlier part of the same message {}",
                self.total
            ));
        }
        self.check_room(piece.len())?;
        self.buf.extend_from_slice(piece);
        Ok(())
    }

    /// The message, with `last`, the body of its ordinary frame.
    pub(crate) fn finish(mut self, last: &[u8]) -> Result<Bytes, String> {
        self.check_room(last.len())?;
        self.buf.extend_from_slice(last);
        let got = self.buf.len() as u64;
        if got != self.total {
            return Err(format!(
                "a message in parts ends after {got} of its {} bytes",
                self.total
            ));
        }
        Ok(self.buf.freeze())
    }

    /// The message's announced length.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    fn check_room(&self, more: usize) -> Result<(), String> {
        let after = (self.buf.len() as u64).saturating_add(more as u64);
        if after > self.total {
            return Err(format!(
                "the parts of a message of {} bytes carry {after} bytes or more",
                self.total
            ));
        }
        Ok(())
    }
}

/// Checks a message's announced length against this side's maximum.
pub(crate) fn check_total(total: u64, max: usize) -> Result<(), String> {
    if total > max as u64 {
        return Err(format!(
            "a message of {total} bytes in parts, over the maximum message size of {max} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> &'static [u8] {
        s.as_bytes()
    }

    #[test]
    fn pieces_make_the_message_exactly() {
        let mut p = Partial::start(10, 100, b("abcd")).unwrap();
        p.push(10, b("efg")).unwrap();
        assert_eq!(&p.finish(b"hij").unwrap()[..], b"abcdefghij");
    }

    #[test]
    fn the_total_is_checked_before_anything_is_kept() {
        let e = Partial::start(101, 100, b("x")).unwrap_err();
        assert!(e.contains("over the maximum message size of 100"), "{e}");
        // A huge announcement reserves at most UPFRONT.
        let p = Partial::start(u64::from(u32::MAX) * 4, usize::MAX, b("x")).unwrap();
        assert!(p.buf.capacity() <= UPFRONT, "{}", p.buf.capacity());
        // A small one exactly what it announced.
        let p = Partial::start(1000, usize::MAX, b("x")).unwrap();
        assert_eq!(p.buf.capacity(), 1000);
    }

    #[test]
    fn parts_that_disagree_or_overflow_or_fall_short_are_violations() {
        let mut p = Partial::start(5, 100, b("ab")).unwrap();
        assert!(p.push(6, b("c")).unwrap_err().contains("announces 6 bytes"));
        assert!(p.push(5, b("cdef")).unwrap_err().contains("carry 6 bytes"));
        let short = p.finish(b"c").unwrap_err();
        assert!(short.contains("ends after 3 of its 5 bytes"), "{short}");
        let p = Partial::start(2, 100, b("ab")).unwrap();
        assert!(p.finish(b"c").unwrap_err().contains("carry 3 bytes"));
    }
}
