//! One request at a time for pingora's proxy. `fast.rs` parses and checks every request head
//! (`head.rs`); a request it does not serve itself goes to pingora with its head (and the body
//! bytes already read) as pingora's pipelined prefix, and with the client stream wrapped in
//! `OneRequest`, which lets pingora read the rest of that request's body and nothing after it.
//! When pingora is done and the connection may go on, `fast.rs` takes the stream back with the
//! bytes that came after the request and parses the next head itself. So pingora never reads a
//! request head from a client: every head on every HTTP/1 connection passes the same checks and
//! the same header timeout, whichever path serves it. Knows nothing of routing or the proxy.

use crate::fast::Chunks;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What pingora may still read of the request it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rest {
    /// This many body bytes.
    Length(u64),
    /// The rest of a chunked body (`Chunks::Done` once it has all passed).
    Chunked(Chunks),
    /// Everything: an `Upgrade` request becomes a tunnel if the instance agrees, and a body whose
    /// chunks lb could not follow has no end lb knows. The connection ends with the request.
    All,
}

/// Bytes of the next request kept while pingora finishes this one; beyond this, lb stops
/// reading from the client until pingora is done (the client then waits on TCP flow control).
const HOLD_MAX: usize = 64 * 1024;

/// The client stream while pingora's proxy serves one request on it.
#[derive(Debug)]
pub(crate) struct OneRequest {
    inner: Stream,
    rest: Rest,
    /// Bytes the client sent after the request: the start of the next one, for `fast.rs`.
    held: BytesMut,
    /// The client closed its side after the request.
    closed: bool,
}

impl OneRequest {
    pub(crate) fn new(inner: Stream, rest: Rest) -> OneRequest {
        OneRequest { inner, rest, held: BytesMut::new(), closed: false }
    }

    fn at_end(&self) -> bool {
        matches!(self.rest, Rest::Length(0) | Rest::Chunked(Chunks::Done))
    }

    /// The client stream and the bytes read past the request, if the connection can go on: the
    /// request ended exactly where lb knows it ends, and the client has not closed.
    pub(crate) fn finish(self) -> Option<(Stream, BytesMut)> {
        (self.at_end() && !self.closed).then_some((self.inner, self.held))
    }

    /// Moves what `buf` received past the request's end (from `end` on) to `held`.
    fn keep_after(&mut self, buf: &mut ReadBuf<'_>, end: usize) {
        if buf.filled().len() > end {
            self.held.extend_from_slice(&buf.filled()[end..]);
            buf.set_filled(end);
        }
    }

    /// A read once the request is complete. pingora reads the client while it waits for the
    /// instance only to notice a client that goes away: a close is passed on, so pingora aborts
    /// the request as it would have; bytes are the next request and are kept, not given.
    fn poll_after_end(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 4096];
        while self.held.len() < HOLD_MAX {
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    self.closed = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => self.held.extend_from_slice(rb.filled()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }
}

impl AsyncRead for OneRequest {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at_end() {
            return this.poll_after_end(cx);
        }
        let start = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let got = buf.filled().len() - start;
        match this.rest {
            Rest::All => {}
            Rest::Length(left) => {
                let take = (got as u64).min(left);
                this.rest = Rest::Length(left - take);
                this.keep_after(buf, start + take as usize);
            }
            Rest::Chunked(mut chunks) => match chunks.feed(&buf.filled()[start..]) {
                Ok(n) => {
                    this.rest = Rest::Chunked(chunks);
                    this.keep_after(buf, start + n);
                }
                // pingora will refuse the body; where it ends is unknown, so nothing after it
                // is read as a request.
                Err(_) => this.rest = Rest::All,
            },
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for OneRequest {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for OneRequest {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for OneRequest {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for OneRequest {}

impl GetTimingDigest for OneRequest {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for OneRequest {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for OneRequest {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

/// No peeking: it would show pingora bytes past the request.
impl Peek for OneRequest {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client stream over a socket pair: what the client wrote, read through `OneRequest`.
    async fn wrapped(client_sends: &[u8], rest: Rest) -> (OneRequest, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(client_sends).await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        (OneRequest::new(stream, rest), client)
    }

    async fn read_some(one: &mut OneRequest) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let n = one.read(&mut buf).await.unwrap();
        buf[..n].to_vec()
    }

    #[tokio::test]
    async fn a_length_body_is_given_and_what_follows_is_kept() {
        let (mut one, client) = wrapped(b"helloGET /next", Rest::Length(5)).await;
        let mut got = Vec::new();
        while got.len() < 5 {
            got.extend(read_some(&mut one).await);
        }
        assert_eq!(got, b"hello");
        // The next read does not return the next request; it waits, holding what came.
        let more = tokio::time::timeout(Duration::from_millis(50), read_some(&mut one)).await;
        assert!(more.is_err(), "{more:?}");
        drop(client);
        // A close after the request is passed on, and the connection cannot go on.
        assert_eq!(read_some(&mut one).await, b"");
        assert_eq!(one.held, &b"GET /next"[..]);
        assert!(one.finish().is_none());
    }

    #[tokio::test]
    async fn a_chunked_body_ends_at_its_last_chunk() {
        let body = b"3\r\nabc\r\n0\r\nT: 1\r\n\r\n";
        let mut sent = body.to_vec();
        sent.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let (mut one, _client) = wrapped(&sent, Rest::Chunked(Chunks::new())).await;
        let mut got = Vec::new();
        while got.len() < body.len() {
            got.extend(read_some(&mut one).await);
        }
        assert_eq!(got, body);
        let more = tokio::time::timeout(Duration::from_millis(50), read_some(&mut one)).await;
        assert!(more.is_err(), "{more:?}");
        let (_, held) = one.finish().expect("the connection can go on");
        assert_eq!(held, &b"GET /next HTTP/1.1\r\n"[..]);
    }

    #[tokio::test]
    async fn a_tunnel_passes_everything_and_ends_the_connection() {
        let (mut one, _client) = wrapped(b"anything", Rest::All).await;
        let mut got = Vec::new();
        while got.len() < 8 {
            got.extend(read_some(&mut one).await);
        }
        assert_eq!(got, b"anything");
        assert!(one.finish().is_none());
    }
}
