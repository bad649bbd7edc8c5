//! The timer task: the one timer of a connection, for what the core's clock makes happen —
//! keepalive pings and the dead-peer check, this side's and the peer's deadlines, the idle
//! timeout, the end of going away. It never runs user code, so nothing a handler does can
//! delay it.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::link::{Shared, Write};

/// Ready when someone asked the timer to look again (an earlier deadline, a new phase, the
/// connection closing).
fn signalled(link: &Shared, cx: &mut Context<'_>) -> Poll<()> {
    link.timer.register(cx.waker());
    if link.take_timer_signal() {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

pub(crate) async fn run(link: Arc<Shared>) {
    let mut armed = link.lock().next_timeout();
    let sleep = tokio::time::sleep_until(armed);
    tokio::pin!(sleep);
    loop {
        if link.is_closed() {
            return;
        }
        let next = tokio::select! {
            biased;
            () = &mut sleep => {
                let mut core = link.lock();
                core.handle_timeout(Instant::now());
                let next = core.next_timeout();
                link.release(core, Write::Now);
                next
            }
            () = std::future::poll_fn(|cx| signalled(&link, cx)) => link.lock().next_timeout(),
        };
        if next != armed {
            armed = next;
            sleep.as_mut().reset(next);
        }
    }
}
