//! MLLP: the framing codec (`VT message FS CR`) and the TCP/TLS listener.
//!
//! The codec is tolerant the way real interface engines are: bytes between frames (stray CR/LF,
//! garbage, a lost half-frame) are skipped and counted, a frame may arrive in many reads or
//! several frames in one read, a lone FS ends a frame (the CR after it is then just inter-frame
//! noise), and a frame bigger than the limit is discarded as it streams in — memory stays bounded
//! by the limit — and reported as [`Frame::Oversized`] so the listener can answer AR and keep the
//! connection.

use crate::ingest::{self, Pipeline, Source};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::SinkExt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::codec::{Decoder, Encoder, Framed};

/// Start block.
pub const VT: u8 = 0x0b;
/// End block.
pub const FS: u8 = 0x1c;
/// Carriage return after FS.
pub const CR: u8 = 0x0d;

/// Bytes of an oversized frame kept to answer it (enough for any MSH).
const HEAD_KEEP: usize = 4096;

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The bytes between VT and FS.
    Message(Bytes),
    /// A frame longer than the limit, discarded; `head` is its beginning, `len` the bytes seen.
    Oversized {
        /// First bytes of the frame (up to 4 KiB).
        head: Bytes,
        /// Bytes discarded.
        len: usize,
    },
    /// A new VT arrived before the FS of the frame in progress: the earlier, unterminated frame
    /// (its first bytes in `head`) was dropped.
    Unterminated {
        /// First bytes of the dropped frame.
        head: Bytes,
        /// Its length.
        len: usize,
    },
}

/// The MLLP codec.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_frame: usize,
    /// Inside an oversized frame: bytes discarded so far, and its head.
    discarding: Option<(usize, Bytes)>,
    /// Bytes skipped between frames (noise), for the listener to log.
    skipped: usize,
}

impl MllpCodec {
    /// A codec accepting frames up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> MllpCodec {
        MllpCodec {
            max_frame,
            discarding: None,
            skipped: 0,
        }
    }

    /// Bytes of noise skipped between frames since the last call (resets the count). CR and LF
    /// are not counted.
    pub fn take_skipped(&mut self) -> usize {
        std::mem::take(&mut self.skipped)
    }
}

impl Decoder for MllpCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        loop {
            if let Some((seen, head)) = &mut self.discarding {
                // Streaming through an oversized frame: look for its end, keep nothing.
                match memchr::memchr(FS, buf) {
                    Some(end) => {
                        let len = *seen + end;
                        let head = std::mem::take(head);
                        buf.advance(end + 1);
                        self.discarding = None;
                        return Ok(Some(Frame::Oversized { head, len }));
                    }
                    None => {
                        *seen += buf.len();
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            // Skip noise up to the next VT.
            match memchr::memchr(VT, buf) {
                None => {
                    self.skipped += buf.iter().filter(|&&b| b != CR && b != b'\n').count();
                    buf.clear();
                    return Ok(None);
                }
                Some(start) if start > 0 => {
                    self.skipped += buf[..start]
                        .iter()
                        .filter(|&&b| b != CR && b != b'\n')
                        .count();
                    buf.advance(start);
                }
                Some(_) => {}
            }
            // buf[0] == VT. Find the end (FS), or another VT that abandons this frame.
            let body = &buf[1..];
            match memchr::memchr2(FS, VT, body) {
                Some(i) if body[i] == FS => {
                    if i > self.max_frame {
                        let head = Bytes::copy_from_slice(&body[..HEAD_KEEP.min(i)]);
                        buf.advance(i + 2);
                        return Ok(Some(Frame::Oversized { head, len: i }));
                    }
                    let frame = buf.split_to(i + 2);
                    return Ok(Some(Frame::Message(frame.freeze().slice(1..i + 1))));
                }
                Some(i) => {
                    // Another VT: the frame in progress never ended.
                    let head = Bytes::copy_from_slice(&body[..HEAD_KEEP.min(i)]);
                    buf.advance(i + 1);
                    return Ok(Some(Frame::Unterminated { head, len: i }));
                }
                None => {
                    if body.len() > self.max_frame {
                        let head = Bytes::copy_from_slice(&body[..HEAD_KEEP.min(body.len())]);
                        self.discarding = Some((body.len(), head));
                        buf.clear();
                        continue;
                    }
                    // Wait for more; reserve what a typical message needs.
                    buf.reserve(4096);
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        match self.decode(buf)? {
            Some(f) => Ok(Some(f)),
            None => {
                // The peer closed mid-frame: nothing to answer, the caller logs it.
                let pending = buf.len() + self.discarding.as_ref().map_or(0, |d| d.0);
                buf.clear();
                self.discarding = None;
                if pending > 0 {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed inside a frame ({pending} bytes without FS)"),
                    ))
                } else {
                    Ok(None)
                }
            }
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = io::Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), io::Error> {
        let b = item.as_ref();
        dst.reserve(b.len() + 3);
        dst.extend_from_slice(&[VT]);
        dst.extend_from_slice(b);
        dst.extend_from_slice(&[FS, CR]);
        Ok(())
    }
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct MllpConfig {
    /// Largest accepted frame in bytes.
    pub max_frame: usize,
    /// Close a connection after this long without a byte.
    pub idle_timeout: Duration,
    /// Most concurrent connections; more wait in the accept backlog.
    pub max_connections: usize,
}

impl Default for MllpConfig {
    fn default() -> Self {
        MllpConfig {
            max_frame: 16 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
        }
    }
}

/// Serve MLLP on `listener` until `shutdown` turns true; then stop accepting, let every
/// connection finish the message it is processing (and ACK it), and return.
pub async fn serve(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    cfg: MllpConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pipeline = pipeline.clone();
        let cfg = cfg.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(stream, peer, pipeline, &cfg, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(cfg.idle_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, peer, pipeline, &cfg, shutdown).await,
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "MLLP TLS handshake failed")
                        }
                        Err(_) => tracing::warn!(%peer, "MLLP TLS handshake timed out"),
                    }
                }
            }
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    pipeline: Arc<Pipeline>,
    cfg: &MllpConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    tracing::debug!(%peer, "MLLP connection opened");
    metrics::gauge!("v2fhir_mllp_connections").increment(1.0);
    let activity = Activity::new(stream);
    let last = activity.last.clone();
    let mut framed = Framed::new(activity, MllpCodec::new(cfg.max_frame));
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Idle means no byte at all for `idle_timeout` (a slow, big frame is not idle).
        let next = loop {
            let deadline = last.deadline(cfg.idle_timeout);
            tokio::select! {
                n = framed.next() => break Ok(n),
                _ = tokio::time::sleep_until(deadline) => {
                    if last.deadline(cfg.idle_timeout) <= tokio::time::Instant::now() {
                        break Err(());
                    }
                }
                _ = shutdown.changed() => break Ok(None),
            }
        };
        let skipped = framed.codec_mut().take_skipped();
        if skipped > 0 {
            tracing::warn!(%peer, bytes = skipped, "MLLP: skipped bytes outside frames");
        }
        let frame = match next {
            Err(_) => {
                tracing::info!(%peer, "MLLP connection idle; closing");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::warn!(%peer, error = %e, "MLLP connection ended");
                break;
            }
            Ok(Some(Ok(f))) => f,
        };
        // From here on the message is finished even if shutdown starts: no work is half-done.
        let acks: Vec<String> = match frame {
            Frame::Message(raw) => match pipeline.submit(raw, Source::Mllp).await {
                Ok(reply) => reply.acks().cloned().collect(),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "MLLP message not processed");
                    break;
                }
            },
            Frame::Oversized { head, len } => {
                tracing::warn!(%peer, bytes = len, limit = cfg.max_frame, "MLLP frame too large; discarded");
                metrics::counter!("v2fhir_mllp_oversized_total").increment(1);
                vec![ingest::reject_oversized(&head, len, cfg.max_frame)]
            }
            Frame::Unterminated { len, .. } => {
                // No answer: the sender abandoned it and is sending the next frame.
                tracing::warn!(%peer, bytes = len, "MLLP frame without FS dropped (a new frame began)");
                continue;
            }
        };
        let mut failed = false;
        for a in acks {
            if let Err(e) = framed.feed(a).await {
                tracing::warn!(%peer, error = %e, "MLLP: could not send the acknowledgment");
                failed = true;
                break;
            }
        }
        if failed || SinkExt::<String>::flush(&mut framed).await.is_err() {
            break;
        }
    }
    metrics::gauge!("v2fhir_mllp_connections").decrement(1.0);
    tracing::debug!(%peer, "MLLP connection closed");
}

/// The time of the last byte read, shared between the stream wrapper and the connection loop.
#[derive(Clone)]
struct LastRead(Arc<std::sync::Mutex<tokio::time::Instant>>);

impl LastRead {
    fn touch(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = tokio::time::Instant::now();
        }
    }

    fn deadline(&self, idle: Duration) -> tokio::time::Instant {
        let t = self
            .0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| tokio::time::Instant::now());
        t + idle
    }
}

/// A stream that records when it last delivered bytes.
struct Activity<S> {
    inner: S,
    last: LastRead,
}

impl<S> Activity<S> {
    fn new(inner: S) -> Self {
        Activity {
            inner,
            last: LastRead(Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = vec![];
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(f) = codec.decode(&mut buf).unwrap_or(None) {
                out.push(f);
            }
        }
        out
    }

    fn msg(s: &str) -> Frame {
        Frame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn table() {
        // (name, chunks as read, frames expected, noise bytes expected)
        type Case<'a> = (&'a str, Vec<&'a [u8]>, Vec<Frame>, usize);
        let cases: Vec<Case> = vec![
            (
                "one frame",
                vec![b"\x0bMSH|a\r\x1c\r"],
                vec![msg("MSH|a\r")],
                0,
            ),
            (
                "two in one read",
                vec![b"\x0bA\x1c\r\x0bB\x1c\r"],
                vec![msg("A"), msg("B")],
                0,
            ),
            (
                "split everywhere",
                vec![b"\x0b", b"MS", b"H|", b"x\x1c", b"\r"],
                vec![msg("MSH|x")],
                0,
            ),
            (
                "noise between frames",
                vec![b"junk\r\n\x0bA\x1c\rxx\x0bB\x1c\r"],
                vec![msg("A"), msg("B")],
                6,
            ),
            (
                "FS without CR",
                vec![b"\x0bA\x1c\x0bB\x1c"],
                vec![msg("A"), msg("B")],
                0,
            ),
            (
                "a new VT abandons a frame",
                vec![b"\x0bAAA\x0bB\x1c\r"],
                vec![
                    Frame::Unterminated {
                        head: Bytes::from_static(b"AAA"),
                        len: 3,
                    },
                    msg("B"),
                ],
                0,
            ),
            ("empty frame", vec![b"\x0b\x1c\r"], vec![msg("")], 0),
        ];
        for (name, chunks, want, noise) in cases {
            let mut c = MllpCodec::new(1024);
            let got = decode_all(&mut c, &chunks);
            assert_eq!(got, want, "{name}");
            assert_eq!(c.take_skipped(), noise, "{name}: noise");
        }
    }

    #[test]
    fn oversized_frames_are_discarded_in_bounded_memory() {
        let mut c = MllpCodec::new(16);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"\x0bMSH|^~\\&|APP|");
        assert_eq!(c.decode(&mut buf).ok().flatten(), None);
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 1000]);
            assert_eq!(c.decode(&mut buf).ok().flatten(), None);
            assert!(buf.len() <= 1000, "buffer must not grow with the frame");
        }
        buf.extend_from_slice(b"end\x1c\r\x0bok\x1c\r");
        match c.decode(&mut buf).ok().flatten() {
            Some(Frame::Oversized { head, len }) => {
                assert!(head.starts_with(b"MSH|^~\\&|APP|"));
                assert_eq!(len, b"MSH|^~\\&|APP|".len() + 100_000 + b"end".len());
            }
            other => panic!("expected Oversized, got {other:?}"),
        }
        assert_eq!(c.decode(&mut buf).ok().flatten(), Some(msg("ok")));
    }

    #[test]
    fn eof_inside_a_frame_is_an_error_not_a_frame() {
        let mut c = MllpCodec::new(1024);
        let mut buf = BytesMut::from(&b"\x0bMSH|partial"[..]);
        assert!(c.decode_eof(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert!(matches!(c.decode_eof(&mut buf), Ok(None)));
    }

    #[test]
    fn encoder_wraps() {
        let mut c = MllpCodec::new(10);
        let mut dst = BytesMut::new();
        c.encode("MSA|AA", &mut dst).unwrap_or(());
        assert_eq!(&dst[..], b"\x0bMSA|AA\x1c\r");
    }
}
