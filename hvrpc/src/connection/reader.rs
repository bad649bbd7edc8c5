//! The reader task: frames from the peer into the core, the core's timer, and the hand-over of
//! the peer's calls to the dispatcher. It never runs user code, so a handler that blocks can
//! never hold up keepalive, deadlines, or the answers to the peer's pings.

use std::sync::Arc;

use futures_util::StreamExt;
use hvrpc_transport::framing::{FrameCodec, FrameError};
use tokio::io::AsyncRead;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead};

use super::dispatch::Dispatcher;
use crate::engine::Dispatch;
use crate::link::{Shared, Write};

/// Whether the connection's reader should look again at `link.reader`'s wake-up: set by whoever
/// wakes it (an earlier deadline, the connection closing).
fn signalled(link: &Shared, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
    link.reader.register(cx.waker());
    if link.take_reader_signal() {
        std::task::Poll::Ready(())
    } else {
        std::task::Poll::Pending
    }
}

pub(crate) async fn run<R>(
    mut frames: FramedRead<R, FrameCodec>,
    max_frame: usize,
    link: Arc<Shared>,
    dispatcher: Option<Arc<Dispatcher>>,
) where
    R: AsyncRead + Unpin,
{
    // Splits further whole frames off the read buffer without another read. (The framed
    // reader's own codec is the same but cannot be borrowed beside its buffer; neither keeps
    // state between whole frames.)
    let mut buffered = FrameCodec::new(max_frame);
    let mut armed = link.lock().next_timeout();
    let timer = tokio::time::sleep_until(armed);
    tokio::pin!(timer);
    let mut dispatches: Vec<Dispatch> = Vec::new();
    // When a stuck dispatcher is looked at again (see `Dispatcher::rescue`).
    let mut rescue: Option<Instant> = None;
    loop {
        if link.is_closed() {
            break;
        }
        let next = tokio::select! {
            biased;
            frame = frames.next() => {
                let now = Instant::now();
                let mut core = link.lock();
                match frame {
                    Some(Ok(payload)) => {
                        let mut result = core.handle_frame(now, payload.freeze());
                        // Every further frame already buffered, under the same lock.
                        loop {
                            match result {
                                Ok(Some(d)) => dispatches.push(d),
                                Ok(None) => {}
                                Err(violation) => {
                                    tracing::warn!(peer = %link.peer, %violation, "protocol violation; closing");
                                    core.violation(violation);
                                    break;
                                }
                            }
                            let decoded = buffered.decode(frames.read_buffer_mut());
                            match decoded {
                                Ok(Some(p)) => result = core.handle_frame(now, p.freeze()),
                                Ok(None) => break,
                                Err(e) => {
                                    core.violation(oversized(e));
                                    break;
                                }
                            }
                        }
                    }
                    Some(Err(FrameError::TooLarge { len, max })) => {
                        tracing::warn!(peer = %link.peer, len, max, "oversized frame; closing");
                        core.violation(oversized(FrameError::TooLarge { len, max }));
                    }
                    Some(Err(e)) => core.read_ended(format!("reading from the peer failed: {e}")),
                    None => core.read_ended("the peer closed the connection".to_owned()),
                }
                // A peer that keeps sending must not starve the timer (keepalive, deadlines).
                if now >= armed {
                    core.handle_timeout(now);
                }
                let next = core.next_timeout();
                link.release(core, Write::Now);
                if !dispatches.is_empty()
                    && let Some(d) = &dispatcher
                    && d.push(&mut dispatches, now)
                {
                    rescue.get_or_insert(now + Dispatcher::STUCK);
                }
                dispatches.clear();
                next
            }
            () = &mut timer => {
                let now = Instant::now();
                let mut core = link.lock();
                core.handle_timeout(now);
                if core.is_closed() {
                    let next = core.next_timeout();
                    link.release(core, Write::Later);
                    next
                } else {
                    let next = core.next_timeout();
                    link.release(core, Write::Now);
                    if let Some(at) = rescue
                        && now >= at
                    {
                        rescue = dispatcher
                            .as_ref()
                            .filter(|d| d.rescue(now))
                            .map(|_| now + Dispatcher::STUCK);
                    }
                    if link.lock().quiet_since_tick(now) {
                        // Nothing has come for a while: give the read buffer's memory back.
                        let buf = frames.read_buffer_mut();
                        if buf.is_empty() && buf.capacity() > 0 {
                            *buf = bytes::BytesMut::new();
                        }
                    }
                    next
                }
            }
            () = std::future::poll_fn(|cx| signalled(&link, cx)) => link.lock().next_timeout(),
        };
        let next = rescue.map_or(next, |r| next.min(r));
        if next != armed {
            armed = next;
            timer.as_mut().reset(next);
        }
    }
}

fn oversized(e: FrameError) -> String {
    match e {
        FrameError::TooLarge { len, max } => {
            format!("the peer sent a frame of {len} bytes, over the limit of {max}")
        }
        other => format!("reading from the peer failed: {other}"),
    }
}
