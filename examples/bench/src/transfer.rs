//! Large transfers: 1 GiB down and up, raw against hvrpc (a server or client stream of 1 MiB
//! items, and unary messages of 256 MiB in parts), and the head-of-line figure: `add`'s p99 on a
//! connection while 1 GiB streams down it, against its p99 on the same connection idle.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hvrpc::Endpoint;
use hvrpc::transport::{OwnedReadHalf, OwnedWriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::client::Conn;
use crate::model::{Lat, TransferRow};
use crate::proto::{Impl, MAX_FRAME, hv, raw};

/// Bytes moved per transfer.
pub(crate) const TOTAL: u64 = 1 << 30;
/// Stream items and raw frames.
const CHUNK: u64 = 1 << 20;
/// Unary messages (four make the total).
const MESSAGE: u64 = 256 << 20;

/// A raw connection's halves.
struct Raw {
    r: BufReader<OwnedReadHalf>,
    w: BufWriter<OwnedWriteHalf>,
}

impl Raw {
    async fn connect(ep: &Endpoint) -> Result<Raw, String> {
        let stream = hvrpc::transport::connect(ep)
            .await
            .map_err(|e| format!("connecting raw to {ep}: {e}"))?;
        let (r, w) = stream.into_split();
        Ok(Raw {
            r: BufReader::with_capacity(64 * 1024, r),
            w: BufWriter::with_capacity(64 * 1024, w),
        })
    }

    async fn send(&mut self, op: u8, payload: &[u8]) -> std::io::Result<()> {
        self.w.write_u32((raw::HEAD + payload.len()) as u32).await?;
        self.w.write_u64_le(0).await?;
        self.w.write_u8(op).await?;
        self.w.write_all(payload).await
    }

    /// Reads a frame into `buf`; returns its op.
    async fn read(&mut self, buf: &mut Vec<u8>) -> std::io::Result<u8> {
        let len = self.r.read_u32().await? as usize;
        if !(raw::HEAD..=MAX_FRAME).contains(&len) {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let _id = self.r.read_u64_le().await?;
        let op = self.r.read_u8().await?;
        buf.resize(len - raw::HEAD, 0);
        self.r.read_exact(buf).await?;
        Ok(op)
    }

    /// Downloads `TOTAL` bytes; returns the bytes received.
    async fn download(&mut self) -> std::io::Result<u64> {
        let mut req = TOTAL.to_le_bytes().to_vec();
        req.extend_from_slice(&CHUNK.to_le_bytes());
        self.send(raw::OP_DOWNLOAD, &req).await?;
        self.w.flush().await?;
        let mut buf = Vec::new();
        let mut got = 0;
        while self.read(&mut buf).await? != raw::OP_END {
            got += buf.len() as u64;
        }
        Ok(got)
    }

    /// Uploads `TOTAL` bytes; returns what the server counted.
    async fn upload(&mut self, data: &[u8]) -> std::io::Result<u64> {
        let mut left = TOTAL;
        while left > 0 {
            let n = (CHUNK.min(left)) as usize;
            self.send(raw::OP_UPLOAD, &data[..n]).await?;
            left -= n as u64;
        }
        self.send(raw::OP_END, &[]).await?;
        self.w.flush().await?;
        let mut buf = Vec::new();
        self.read(&mut buf).await?;
        let count: [u8; 8] = buf
            .as_slice()
            .try_into()
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        Ok(u64::from_le_bytes(count))
    }
}

async fn hvrpc_client(ep: &Endpoint) -> Result<hv::BenchClient, String> {
    match Conn::connect(Impl::Hvrpc, ep).await? {
        Conn::Hvrpc(c) => Ok(c.with_timeout(Duration::from_secs(600))),
        _ => Err("not an hvrpc connection".into()),
    }
}

/// A stream download of `TOTAL` bytes.
async fn stream_down(c: &hv::BenchClient) -> Result<u64, String> {
    let mut s = c
        .download(TOTAL, CHUNK as u32)
        .await
        .map_err(|e| e.to_string())?;
    let mut got = 0;
    while let Some(item) = s.next().await {
        got += item.map_err(|e| e.to_string())?.len() as u64;
    }
    Ok(got)
}

/// A client-stream upload of `TOTAL` bytes: 1 MiB slices of `data`, made as the server grants
/// credit.
async fn stream_up(c: &hv::BenchClient, data: &hvrpc::Bytes) -> Result<u64, String> {
    let chunk = data.slice(..CHUNK as usize);
    let items = futures_util::stream::iter(std::iter::repeat_n(chunk, (TOTAL / CHUNK) as usize));
    c.put(hvrpc::Streaming::new(items))
        .await
        .map_err(|e| e.to_string())
}

fn check(what: &str, got: u64) -> Result<(), String> {
    if got == TOTAL {
        Ok(())
    } else {
        Err(format!("{what}: {got} bytes instead of {TOTAL}"))
    }
}

/// MB/s (10^6 bytes) of one timed transfer.
fn rate(t: Duration) -> f64 {
    TOTAL as f64 / t.as_secs_f64() / 1e6
}

/// Every transfer once: raw down, hvrpc stream down, hvrpc unary down, raw up, hvrpc unary
/// up, hvrpc stream up — in MB/s, in that order.
pub(crate) async fn round(raw_ep: &Endpoint, hv_ep: &Endpoint) -> Result<[f64; 6], String> {
    let io = |e: std::io::Error| e.to_string();
    let mut r = Raw::connect(raw_ep).await?;
    let c = hvrpc_client(hv_ep).await?;
    let data = hvrpc::Bytes::from(vec![0x3c; MESSAGE as usize]);
    let t = Instant::now();
    check("raw download", r.download().await.map_err(io)?)?;
    let raw_down = rate(t.elapsed());
    let t = Instant::now();
    check("hvrpc stream download", stream_down(&c).await?)?;
    let stream_down = rate(t.elapsed());
    let t = Instant::now();
    let mut got = 0;
    for _ in 0..TOTAL / MESSAGE {
        got += c.fetch(MESSAGE).await.map_err(|e| e.to_string())?.len() as u64;
    }
    check("hvrpc unary download", got)?;
    let unary_down = rate(t.elapsed());
    let t = Instant::now();
    check("raw upload", r.upload(&data).await.map_err(io)?)?;
    let raw_up = rate(t.elapsed());
    let t = Instant::now();
    let mut got = 0;
    for _ in 0..TOTAL / MESSAGE {
        got += c.upload(data.clone()).await.map_err(|e| e.to_string())?;
    }
    check("hvrpc unary upload", got)?;
    let unary_up = rate(t.elapsed());
    let t = Instant::now();
    check("hvrpc stream upload", stream_up(&c, &data).await?)?;
    let stream_up = rate(t.elapsed());
    Ok([
        raw_down,
        stream_down,
        unary_down,
        raw_up,
        unary_up,
        stream_up,
    ])
}

/// `add`'s latency on one connection: for `idle` with nothing else on it, then while a
/// `TOTAL`-byte stream download runs on the same connection (a second handle to it).
pub(crate) async fn head_of_line(ep: &Endpoint, idle: Duration) -> Result<(Lat, Lat), String> {
    let c = hvrpc_client(ep).await?;
    let mut n = 0u64;
    let mut add = async |c: &hv::BenchClient, samples: &mut Vec<u32>| -> Result<(), String> {
        let t = Instant::now();
        let got = c.add(n, 1).await.map_err(|e| e.to_string())?;
        samples.push(u32::try_from(t.elapsed().as_nanos()).unwrap_or(u32::MAX));
        if got != n + 1 {
            return Err(format!("add({n}, 1) returned {got}"));
        }
        n += 1;
        Ok(())
    };
    let mut quiet = Vec::new();
    let start = Instant::now();
    while start.elapsed() < idle || quiet.len() < 100 {
        add(&c, &mut quiet).await?;
    }
    let bulk = {
        let c = c.clone();
        tokio::spawn(async move { stream_down(&c).await })
    };
    let mut busy = Vec::new();
    while !bulk.is_finished() {
        add(&c, &mut busy).await?;
    }
    let got = bulk.await.map_err(|e| e.to_string())??;
    check("the stream under the tiny calls", got)?;
    Ok((Lat::from_ns(&mut quiet), Lat::from_ns(&mut busy)))
}

/// The transfer rows: `rounds` rounds of [`round`], then the head-of-line measurement.
pub(crate) async fn measure(
    raw_ep: Endpoint,
    hv_ep: Endpoint,
    rounds: usize,
) -> Result<TransferRow, String> {
    let mut sums = [0f64; 6];
    for _ in 0..rounds.max(1) {
        let r = round(&raw_ep, &hv_ep).await?;
        for (s, v) in sums.iter_mut().zip(r) {
            *s += v;
        }
    }
    let n = rounds.max(1) as f64;
    let [
        raw_down,
        stream_down,
        unary_down,
        raw_up,
        unary_up,
        stream_up,
    ] = sums.map(|s| s / n);
    let (idle, busy) = head_of_line(&hv_ep, Duration::from_secs(1)).await?;
    Ok(TransferRow {
        bytes: TOTAL,
        raw_down_mb_s: raw_down,
        stream_down_mb_s: stream_down,
        unary_down_mb_s: unary_down,
        raw_up_mb_s: raw_up,
        unary_up_mb_s: unary_up,
        stream_up_mb_s: stream_up,
        idle,
        busy,
    })
}
