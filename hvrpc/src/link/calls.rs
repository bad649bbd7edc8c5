//! A caller's handle on one of this side's calls: it waits for the outcome, and gives the call
//! up when dropped before one; and the pump that feeds a call's input stream.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Handle, Shared, Write};
use crate::body::Body;
use crate::error::Error;
use crate::protocol::{Header, Message, PeerLimits};

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
        input: bool,
    ) -> Result<Self, Error> {
        let link = &handle.link;
        let mut core = link.lock();
        let id = core.start_call(frame, deadline, stream, input)?;
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

    /// What feeds this call's input stream (a call started with `input`).
    pub(crate) fn input_sink(&self, peer: PeerLimits) -> InputSink {
        InputSink {
            handle: Arc::clone(&self.handle),
            id: self.id,
            peer,
        }
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

/// Feeds the input stream of one of this side's calls. It holds the connection, not the call:
/// dropping it gives nothing up (the call's [`CallHandle`] does that).
pub(crate) struct InputSink {
    handle: Arc<Handle>,
    pub(crate) id: u64,
    peer: PeerLimits,
}

impl InputSink {
    fn link(&self) -> &Shared {
        &self.handle.link
    }

    /// `Ready(true)` when an item may be sent; `Ready(false)` once the call has ended.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.link().lock().poll_input_ready(self.id, cx.waker())
    }

    /// Sends an item (after [`poll_ready`](Self::poll_ready) said yes); `Ok(false)` if the
    /// call has ended, `Err` if the item cannot be sent (too large for the peer).
    pub(crate) fn send(&self, item: Body) -> Result<bool, Error> {
        let msg = item.into_message(&Header::Input { id: self.id }, &self.peer)?;
        let link = self.link();
        let mut core = link.lock();
        let sent = core.send_input(self.id, msg);
        link.release(core, Write::Now);
        Ok(sent)
    }

    /// `Ready` once the call has ended.
    pub(crate) fn poll_gone(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.link().lock().poll_input_gone(self.id, cx.waker())
    }

    /// Ends the call with `err` (the input stream failed).
    pub(crate) fn fail(&self, err: Error) {
        let link = self.link();
        let mut core = link.lock();
        core.fail_input(self.id, err);
        link.release(core, Write::Now);
    }

    /// Ends the input; `false` if the call has ended.
    pub(crate) fn end(&self) -> bool {
        let link = self.link();
        let mut core = link.lock();
        let sent = core.end_input(self.id);
        link.release(core, Write::Now);
        sent
    }
}

/// Feeds a call's input stream: pulls an item from `input` only with credit and room in hand
/// (so neither side buffers more than the peer granted), until the input ends (InputEnd), the
/// call ends (the rest of `input` is dropped unread), or `input` fails (the call fails).
pub(crate) async fn pump<T, St>(
    sink: InputSink,
    mut input: St,
    encode: fn(T) -> Result<Body, Error>,
) where
    St: futures_util::Stream<Item = Result<T, Error>> + Unpin + Send + 'static,
{
    let panicked =
        |what: &str| Error::Encode(format!("the call's input stream panicked while {what}").into());
    loop {
        if !std::future::poll_fn(|cx| sink.poll_ready(cx)).await {
            return;
        }
        // The caller's stream is user code: a panic fails the call, never leaves it hanging.
        let next = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| input.poll_next_unpin(cx))) {
                Err(_) => Poll::Ready(Some(Some(Err(panicked("producing an item"))))),
                Ok(Poll::Ready(item)) => Poll::Ready(Some(item)),
                Ok(Poll::Pending) => sink.poll_gone(cx).map(|()| None),
            }
        })
        .await;
        let item = match next {
            // The call ended while the caller's stream had nothing ready.
            None => return,
            // The caller's stream is dropped before the peer can learn that it ended or failed,
            // so a caller that has the call's outcome in hand also has its stream back, dropped.
            Some(None) => {
                drop(input);
                sink.end();
                return;
            }
            Some(Some(Ok(item))) => item,
            Some(Some(Err(e))) => {
                drop(input);
                return sink.fail(e);
            }
        };
        let body = match std::panic::catch_unwind(AssertUnwindSafe(|| encode(item))) {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                drop(input);
                return sink.fail(e);
            }
            Err(_) => {
                drop(input);
                return sink.fail(panicked("being encoded"));
            }
        };
        match sink.send(body) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return sink.fail(e),
        }
    }
}
