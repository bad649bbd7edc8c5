//! A caller's handle on one of this side's calls: it waits for the outcome, and gives the call
//! up when dropped before one.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::time::Instant;

use super::{Handle, Shared, Write};
use crate::error::Error;
use crate::protocol::Message;

/// One of this side's calls in flight. Dropping it before its outcome cancels the call: it
/// leaves the table, and the peer is told to stop if the request went out.
pub(crate) struct CallHandle {
    handle: Arc<Handle>,
    pub(crate) id: u64,
    done: bool,
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call {}", self.id)
    }
}

impl CallHandle {
    /// Starts a call whose request `frame(id)` builds (under the core's lock: no user code).
    pub(crate) fn start(
        handle: &Arc<Handle>,
        frame: impl FnOnce(u64) -> Result<Message, Error>,
        deadline: Option<Instant>,
        stream: Option<u32>,
    ) -> Result<Self, Error> {
        let link = &handle.link;
        let mut core = link.lock();
        let id = core.start_call(frame, deadline, stream)?;
        // Alone, the request is written from here; with other calls in flight the writer
        // task gathers the requests of several callers into one write.
        let write = if core.is_alone() {
            Write::Now
        } else {
            Write::Soon
        };
        link.release(core, write);
        Ok(Self {
            handle: Arc::clone(handle),
            id,
            done: false,
        })
    }

    fn link(&self) -> &Shared {
        &self.handle.link
    }

    /// The response of a unary call.
    pub(crate) fn poll_unary(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, Error>> {
        if self.done {
            return Poll::Ready(Err(self.link().lost()));
        }
        let polled = self.link().lock().poll_unary(self.id, cx.waker());
        if polled.is_ready() {
            self.done = true;
        }
        polled
    }

    /// The next item of a stream call (`None` at its successful end).
    pub(crate) fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = self.link().lock().poll_item(self.id, cx.waker());
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.done = true;
        }
        polled
    }

    /// Lets the peer send `items` more items.
    pub(crate) fn grant(&self, items: u32) {
        let link = self.link();
        let mut core = link.lock();
        core.grant(self.id, items);
        link.release(core, Write::Now);
    }
}

impl Drop for CallHandle {
    fn drop(&mut self) {
        if !self.done {
            let link = self.link();
            let mut core = link.lock();
            core.abandon(self.id);
            link.release(core, Write::Now);
        }
    }
}
