//! The client side: server processes, connections of each implementation, and the measured
//! loops.

use std::io::{BufRead, BufReader as StdBufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hvrpc::Endpoint;
use hvrpc::transport::{OwnedReadHalf, OwnedWriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::proto::{Impl, MAX_FRAME, hv, raw, tp};

/// A server process started by [`ServerProc::spawn`]; killed when dropped.
pub(crate) struct ServerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: StdBufReader<ChildStdout>,
    /// The endpoint clients dial.
    pub(crate) dial: Endpoint,
}

/// What a server process reports about itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerStats {
    /// Resident memory, KiB.
    pub(crate) rss_kib: u64,
    /// Connections accepted (hvrpc: handshakes completed) since it started.
    pub(crate) conns: usize,
    /// Calls answered since it started.
    pub(crate) served: u64,
    /// CPU time used since it started, µs.
    pub(crate) cpu_us: u64,
}

impl ServerProc {
    /// Starts `hvrpc-bench serve IMPL LISTEN` and waits until it listens.
    pub(crate) fn spawn(imp: Impl, listen: &Endpoint, dial: Endpoint) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg(imp.name())
            .arg(listen.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the {imp} server: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the server's pipes are missing".into());
        };
        let mut server = ServerProc {
            child,
            stdin: Some(stdin),
            stdout: StdBufReader::new(stdout),
            dial,
        };
        let line = server.line()?;
        if line != "ready" {
            return Err(format!("the {imp} server said {line:?} instead of ready"));
        }
        Ok(server)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the server process exited".into()),
            Ok(_) => Ok(line.trim().to_owned()),
            Err(e) => Err(format!("reading from the server process: {e}")),
        }
    }

    /// Asks the server for its memory and connection count.
    pub(crate) fn stats(&mut self) -> Result<ServerStats, String> {
        let stdin = self.stdin.as_mut().ok_or("the server's input is closed")?;
        writeln!(stdin, "stats")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to the server process: {e}"))?;
        let line = self.line()?;
        let mut words = line.split_whitespace();
        let bad = || format!("bad stats line {line:?}");
        match (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) {
            (Some("stats"), Some(rss), Some(conns), Some(served), Some(cpu)) => Ok(ServerStats {
                rss_kib: rss.parse().map_err(|_| bad())?,
                conns: conns.parse().map_err(|_| bad())?,
                served: served.parse().map_err(|_| bad())?,
                cpu_us: cpu.parse().map_err(|_| bad())?,
            }),
            _ => Err(format!("bad stats line {line:?}")),
        }
    }
}

impl Drop for ServerProc {
    /// Closes the server's input, which ends it (letting a profiler it runs under write its
    /// data); kills it if it is still there after a few seconds.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client connection of one implementation.
pub(crate) enum Conn {
    /// Raw framed echo.
    Raw(Box<RawConn>),
    /// hvrpc's generated client.
    Hvrpc(hv::BenchClient),
    /// tarpc's generated client.
    Tarpc(tp::BenchClient),
}

/// A call to make.
#[derive(Clone, Debug)]
pub(crate) enum Call {
    /// `add(a, b)`.
    Add,
    /// `echo(payload)`: hvrpc passes a `Bytes` (a reference-counted clone, no copy), tarpc a
    /// `Vec<u8>` copy of it, raw writes it from the slice.
    Echo(hvrpc::Bytes),
    /// The same, but hvrpc calls `echo_vec` with a `Vec<u8>` copy, like tarpc.
    EchoVec(hvrpc::Bytes),
}

impl Conn {
    /// Connects (and, for hvrpc, completes the handshake).
    pub(crate) async fn connect(imp: Impl, ep: &Endpoint) -> Result<Conn, String> {
        let err = |e: &dyn std::fmt::Display| format!("connecting {imp} to {ep}: {e}");
        Ok(match imp {
            Impl::Raw => {
                let stream = hvrpc::transport::connect(ep).await.map_err(|e| err(&e))?;
                let (r, w) = stream.into_split();
                Conn::Raw(Box::new(RawConn {
                    r: BufReader::with_capacity(64 * 1024, r),
                    w: BufWriter::with_capacity(64 * 1024, w),
                    next_id: 0,
                    buf: Vec::new(),
                }))
            }
            Impl::Hvrpc => {
                let mut config = hvrpc::Config::default();
                config.max_frame = MAX_FRAME;
                if std::env::var_os("HVRPC_BENCH_NO_DEADLINE").is_some() {
                    config.default_deadline = None;
                }
                let connector = hvrpc::Connector::new().config(config);
                Conn::Hvrpc(
                    hv::BenchClient::connect_with(ep, connector)
                        .await
                        .map_err(|e| err(&e))?,
                )
            }
            Impl::Tarpc => {
                let stream = hvrpc::transport::connect(ep).await.map_err(|e| err(&e))?;
                let framed = tarpc::tokio_util::codec::Framed::new(stream, tp::codec());
                let transport = tarpc::serde_transport::new(
                    framed,
                    tarpc::tokio_serde::formats::Bincode::default(),
                );
                Conn::Tarpc(
                    tp::BenchClient::new(tarpc::client::Config::default(), transport).spawn(),
                )
            }
        })
    }

    /// Makes one call and checks its answer.
    pub(crate) async fn call(&mut self, call: &Call, n: u64) -> Result<(), String> {
        match call {
            Call::Add => {
                let got = match self {
                    Conn::Raw(c) => c.add(n, 1).await.map_err(|e| e.to_string())?,
                    Conn::Hvrpc(c) => c.add(n, 1).await.map_err(|e| e.to_string())?,
                    Conn::Tarpc(c) => c
                        .add(tarpc::context::current(), n, 1)
                        .await
                        .map_err(|e| e.to_string())?,
                };
                if got != n.wrapping_add(1) {
                    return Err(format!("add({n}, 1) returned {got}"));
                }
            }
            Call::Echo(data) | Call::EchoVec(data) => {
                let len = match self {
                    Conn::Raw(c) => c.echo(data).await.map_err(|e| e.to_string())?,
                    // Both RPC APIs take the argument by value: a `Vec<u8>` copy is what a
                    // caller pays; a `Bytes` clone costs nothing.
                    Conn::Hvrpc(c) if matches!(call, Call::EchoVec(_)) => c
                        .echo_vec(data.to_vec())
                        .await
                        .map_err(|e| e.to_string())?
                        .len(),
                    Conn::Hvrpc(c) => c.echo(data.clone()).await.map_err(|e| e.to_string())?.len(),
                    Conn::Tarpc(c) => c
                        .echo(tarpc::context::current(), data.to_vec())
                        .await
                        .map_err(|e| e.to_string())?
                        .len(),
                };
                if len != data.len() {
                    return Err(format!("echo of {} bytes returned {len}", data.len()));
                }
            }
        }
        Ok(())
    }

    /// Checks that both methods work and return the right values.
    pub(crate) async fn check(&mut self) -> Result<(), String> {
        self.call(&Call::Add, 41).await?;
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let echoed = match self {
            Conn::Raw(c) => {
                c.echo(&data).await.map_err(|e| e.to_string())?;
                c.buf.clone()
            }
            Conn::Hvrpc(c) => {
                let vec = c.echo_vec(data.clone()).await.map_err(|e| e.to_string())?;
                if vec != data {
                    return Err("echo_vec returned different bytes".into());
                }
                c.echo(data.clone().into())
                    .await
                    .map_err(|e| e.to_string())?
                    .to_vec()
            }
            Conn::Tarpc(c) => c
                .echo(tarpc::context::current(), data.clone())
                .await
                .map_err(|e| e.to_string())?,
        };
        if echoed != data {
            return Err("echo returned different bytes".into());
        }
        Ok(())
    }
}

/// A raw framed connection (see [`crate::proto::raw`]).
pub(crate) struct RawConn {
    r: BufReader<OwnedReadHalf>,
    w: BufWriter<OwnedWriteHalf>,
    next_id: u64,
    /// The last response's payload.
    buf: Vec<u8>,
}

impl RawConn {
    async fn queue(&mut self, op: u8, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = raw::HEAD + parts.iter().map(|p| p.len()).sum::<usize>();
        self.w.write_u32(len as u32).await?;
        self.w.write_u64_le(self.next_id).await?;
        self.next_id += 1;
        self.w.write_u8(op).await?;
        for p in parts {
            self.w.write_all(p).await?;
        }
        Ok(())
    }

    /// Reads one response into `buf`.
    async fn read_response(&mut self) -> std::io::Result<()> {
        let len = self.r.read_u32().await? as usize;
        if !(raw::HEAD..=MAX_FRAME).contains(&len) {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let _id = self.r.read_u64_le().await?;
        let _op = self.r.read_u8().await?;
        self.buf.resize(len - raw::HEAD, 0);
        self.r.read_exact(&mut self.buf).await?;
        Ok(())
    }

    /// Whether a whole response is already buffered.
    fn response_buffered(&self) -> bool {
        let b = self.r.buffer();
        match b.get(..4) {
            Some(h) => {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                b.len() >= 4 + len
            }
            None => false,
        }
    }

    async fn add(&mut self, a: u64, b: u64) -> std::io::Result<u64> {
        self.queue(raw::OP_ADD, &[&a.to_le_bytes(), &b.to_le_bytes()])
            .await?;
        self.w.flush().await?;
        self.read_response().await?;
        let sum: [u8; 8] = self
            .buf
            .as_slice()
            .try_into()
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        Ok(u64::from_le_bytes(sum))
    }

    async fn echo(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.queue(raw::OP_ECHO, &[data]).await?;
        self.w.flush().await?;
        self.read_response().await?;
        Ok(self.buf.len())
    }

    /// Keeps `in_flight` adds outstanding until `stop`, counting answers: requests are
    /// written in batches and answers read as they come (pipelining on one connection).
    async fn pipelined(
        &mut self,
        in_flight: usize,
        done: &AtomicU64,
        stop: &AtomicBool,
    ) -> std::io::Result<()> {
        let mut outstanding = 0;
        loop {
            while outstanding < in_flight && !stop.load(Ordering::Relaxed) {
                let a = self.next_id;
                self.queue(raw::OP_ADD, &[&a.to_le_bytes(), &1u64.to_le_bytes()])
                    .await?;
                outstanding += 1;
            }
            if outstanding == 0 {
                return Ok(());
            }
            self.w.flush().await?;
            loop {
                self.read_response().await?;
                outstanding -= 1;
                done.fetch_add(1, Ordering::Relaxed);
                if !self.response_buffered() {
                    break;
                }
            }
        }
    }
}

/// What a latency loop measured.
pub(crate) struct Timed {
    /// Each call's time, ns.
    pub(crate) samples: Vec<u32>,
    /// The loop's wall time.
    pub(crate) wall: Duration,
}

/// Calls `call` one at a time for `dur` (after a short warm-up) on a fresh connection.
pub(crate) async fn latency(
    imp: Impl,
    ep: &Endpoint,
    call: &Call,
    dur: Duration,
) -> Result<Timed, String> {
    let mut conn = Conn::connect(imp, ep).await?;
    let warm = Instant::now();
    let mut n = 0u64;
    while warm.elapsed() < dur / 10 || n < 3 {
        conn.call(call, n).await?;
        n += 1;
    }
    let mut samples = Vec::with_capacity(4096);
    let start = Instant::now();
    loop {
        let t = Instant::now();
        conn.call(call, n).await?;
        samples.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
        n += 1;
        if start.elapsed() >= dur {
            break;
        }
    }
    Ok(Timed {
        samples,
        wall: start.elapsed(),
    })
}

/// Counts calls answered by `tasks` while `dur` passes, after a warm-up; then stops them.
async fn count_while<F>(dur: Duration, done: &AtomicU64, stop: &AtomicBool, tasks: F) -> f64
where
    F: Future<Output = ()>,
{
    let measure = async {
        tokio::time::sleep(dur / 5).await;
        let (c0, t0) = (done.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(dur).await;
        let (c1, t1) = (done.load(Ordering::Relaxed), Instant::now());
        stop.store(true, Ordering::Relaxed);
        (c1 - c0) as f64 / (t1 - t0).as_secs_f64()
    };
    let (rate, ()) = tokio::join!(measure, tasks);
    rate
}

/// A minimal hand-written multiplexer over the raw framing: what any RPC layer does at least
/// when independent callers share one connection. Callers queue requests to one writer task,
/// which writes whatever has gathered in one write; a reader task hands each answer to its
/// caller by id (a oneshot per call).
#[derive(Clone)]
pub(crate) struct RawMux {
    tx: tokio::sync::mpsc::UnboundedSender<(u64, u64, tokio::sync::oneshot::Sender<u64>)>,
}

type Waiting =
    Arc<std::sync::Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<u64>>>>;

impl RawMux {
    pub(crate) async fn connect(ep: &Endpoint) -> Result<RawMux, String> {
        let stream = hvrpc::transport::connect(ep)
            .await
            .map_err(|e| format!("connecting raw to {ep}: {e}"))?;
        let (r, w) = stream.into_split();
        let waiting: Waiting = Arc::default();
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(u64, u64, tokio::sync::oneshot::Sender<u64>)>();
        let pending = Arc::clone(&waiting);
        tokio::spawn(async move {
            let mut w = BufWriter::with_capacity(64 * 1024, w);
            let mut next_id = 0u64;
            while let Some(first) = rx.recv().await {
                let mut item = Some(first);
                while let Some((a, b, done)) = item.take() {
                    next_id += 1;
                    pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(next_id, done);
                    let mut frame = [0u8; 4 + raw::HEAD + 16];
                    frame[..4].copy_from_slice(&((raw::HEAD + 16) as u32).to_be_bytes());
                    frame[4..12].copy_from_slice(&next_id.to_le_bytes());
                    frame[12] = raw::OP_ADD;
                    frame[13..21].copy_from_slice(&a.to_le_bytes());
                    frame[21..29].copy_from_slice(&b.to_le_bytes());
                    if w.write_all(&frame).await.is_err() {
                        return;
                    }
                    item = rx.try_recv().ok();
                }
                if w.flush().await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut r = BufReader::with_capacity(64 * 1024, r);
            loop {
                let Ok(len) = r.read_u32().await else { return };
                let (Ok(id), Ok(_op)) = (r.read_u64_le().await, r.read_u8().await) else {
                    return;
                };
                if len as usize != raw::HEAD + 8 {
                    return;
                }
                let Ok(sum) = r.read_u64_le().await else {
                    return;
                };
                let done = waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(done) = done {
                    let _ = done.send(sum);
                }
            }
        });
        Ok(RawMux { tx })
    }

    async fn add(&self, a: u64, b: u64) -> Result<u64, String> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((a, b, done))
            .map_err(|_| "the raw connection is gone".to_owned())?;
        answer
            .await
            .map_err(|_| "the raw connection is gone".to_owned())
    }
}

/// Calls/s of `add` with one raw task keeping `in_flight` requests written ahead: the stream's
/// own limit, with no callers to multiplex.
pub(crate) async fn throughput_pipelined(
    ep: &Endpoint,
    in_flight: usize,
    dur: Duration,
) -> Result<f64, String> {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let Conn::Raw(mut c) = Conn::connect(Impl::Raw, ep).await? else {
        return Err("not a raw connection".into());
    };
    let mut failed = None;
    let tasks = async {
        if let Err(e) = c.pipelined(in_flight, &done, &stop).await {
            stop.store(true, Ordering::Relaxed);
            failed = Some(e.to_string());
        }
    };
    let rate = count_while(dur, &done, &stop, tasks).await;
    match failed {
        Some(e) => Err(format!("raw pipelined with {in_flight} in flight: {e}")),
        None => Ok(rate),
    }
}

/// Calls/s of `add` with `in_flight` calls outstanding on one connection.
pub(crate) async fn throughput(
    imp: Impl,
    ep: &Endpoint,
    in_flight: usize,
    dur: Duration,
) -> Result<f64, String> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    enum Caller {
        Conn(Conn),
        Mux(RawMux),
    }
    let conn = match imp {
        // Raw callers share one connection through the minimal multiplexer, as hvrpc's and
        // tarpc's share one client.
        Impl::Raw => Caller::Mux(RawMux::connect(ep).await?),
        _ => Caller::Conn(Conn::connect(imp, ep).await?),
    };
    let rate = {
        let handles: Vec<_> = (0..in_flight)
            .map(|i| {
                let mut c = match &conn {
                    Caller::Conn(Conn::Hvrpc(c)) => Caller::Conn(Conn::Hvrpc(c.clone())),
                    Caller::Conn(Conn::Tarpc(c)) => Caller::Conn(Conn::Tarpc(c.clone())),
                    Caller::Mux(m) => Caller::Mux(m.clone()),
                    Caller::Conn(Conn::Raw(_)) => unreachable!("raw callers use the multiplexer"),
                };
                let (done, stop, failed) =
                    (Arc::clone(&done), Arc::clone(&stop), Arc::clone(&failed));
                tokio::spawn(async move {
                    let mut n = i as u64;
                    while !stop.load(Ordering::Relaxed) {
                        let r = match &mut c {
                            Caller::Conn(c) => c.call(&Call::Add, n).await,
                            Caller::Mux(m) => m.add(n, 1).await.and_then(|sum| {
                                if sum == n.wrapping_add(1) {
                                    Ok(())
                                } else {
                                    Err(format!("add({n}, 1) returned {sum}"))
                                }
                            }),
                        };
                        if let Err(e) = r {
                            stop.store(true, Ordering::Relaxed);
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                })
            })
            .collect();
        let tasks = async {
            for h in handles {
                let _ = h.await;
            }
        };
        count_while(dur, &done, &stop, tasks).await
    };
    let failed = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(e) => Err(format!("{imp} throughput with {in_flight} in flight: {e}")),
        None => Ok(rate),
    }
}

/// Opens `n` connections (sequentially, as idle clients would arrive).
pub(crate) async fn open(imp: Impl, ep: &Endpoint, n: usize) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::connect(imp, ep).await?);
    }
    Ok(conns)
}

/// Calls/s of `add` over all of `conns` at once, one call in flight on each.
pub(crate) async fn active(conns: Vec<Conn>, dur: Duration) -> (Result<f64, String>, Vec<Conn>) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut n = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = c.call(&Call::Add, n).await {
                        stop.store(true, Ordering::Relaxed);
                        return (Err(e), c);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                (Ok(()), c)
            })
        })
        .collect();
    let mut back = Vec::with_capacity(handles.len());
    let mut failed = None;
    let tasks = async {
        for h in handles {
            match h.await {
                Ok((r, c)) => {
                    if let Err(e) = r {
                        failed.get_or_insert(e);
                    }
                    back.push(c);
                }
                Err(e) => {
                    failed.get_or_insert(e.to_string());
                }
            }
        }
    };
    let rate = count_while(dur, &done, &stop, tasks).await;
    match failed {
        Some(e) => (Err(e), back),
        None => (Ok(rate), back),
    }
}
