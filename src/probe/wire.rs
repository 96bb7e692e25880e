//! One probe connection on the wire: a TCP or unix-socket stream, and backend messages read
//! under a byte budget. A message's length is checked against what is left of the budget
//! before its body is read, so a probe query answering 300 MB costs the daemon at most the
//! budget, not the answer. A reader with a larger budget (the SQL snapshot) can also cap each
//! message: a longer one is read and dropped in small chunks, never held whole. Over TLS the
//! stream is rustls's (see `tls`), and the same reads apply to the decrypted bytes.

use super::{FailureClass, ProbeFailure};
use bytes::{Buf, BytesMut};
use postgres_protocol::message::backend::{Header, Message};
use std::path::Path;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Everything a probe may read from one connection, startup included. A probe answers one
/// small row; a megabyte is far more than any sensible probe query returns.
pub const READ_BUDGET: usize = 1024 * 1024;

pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What [`Wire::read_within`] got.
pub enum Incoming {
    Message(Message),
    /// A message longer than the reader's cap: read, charged to the budget, and dropped.
    Skipped {
        tag: u8,
        len: usize,
    },
    /// A message longer than what is left of the budget: nothing of it was read, and the
    /// connection is of no further use.
    OverBudget {
        len: usize,
    },
}

/// What a TLS connection proved, for the login.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The server's certificate was verified (chain, and name with verify-full).
    pub verified: bool,
    /// tls-server-end-point data; None when the certificate's signature algorithm has no
    /// defined hash (Ed25519, RSA-PSS): no channel binding is possible then.
    pub end_point: Option<Vec<u8>>,
}

/// A connection to one server, before or after login.
pub struct Wire {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    /// Bytes still allowed to be read.
    budget: usize,
    /// Set once the connection runs over TLS.
    tls: Option<TlsInfo>,
}

impl Wire {
    /// Connects over TCP (`host` a name or address) with no delay on small writes.
    pub async fn tcp(host: &str, port: u16) -> Result<Self, ProbeFailure> {
        let s = TcpStream::connect((host, port))
            .await
            .map_err(|e| ProbeFailure::from_io(&e))?;
        let _ = s.set_nodelay(true);
        Ok(Self::new(Box::new(s)))
    }

    /// Connects to the unix socket PostgreSQL opens in `dir` for `port`.
    pub async fn unix(dir: &Path, port: u16) -> Result<Self, ProbeFailure> {
        let s = UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
            .await
            .map_err(|e| ProbeFailure::from_io(&e))?;
        Ok(Self::new(Box::new(s)))
    }

    /// The connection itself, before anything was read from it (for a tokio-postgres session).
    pub(super) fn into_stream(self) -> Box<dyn Stream> {
        self.stream
    }

    fn new(stream: Box<dyn Stream>) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(512),
            budget: READ_BUDGET,
            tls: None,
        }
    }

    /// A connection over TLS, after the handshake.
    pub(super) fn over_tls(stream: Box<dyn Stream>, info: TlsInfo) -> Self {
        Self {
            tls: Some(info),
            ..Self::new(stream)
        }
    }

    /// What TLS proved, when the connection runs over it.
    pub(super) fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The server's one-byte answer to SSLRequest, consumed. After an 'S' nothing else may
    /// have come: bytes sent before the handshake are unencrypted, and taking them as the
    /// session's first would let a man in the middle inject them (CVE-2021-23222).
    pub(super) async fn ssl_answer(&mut self) -> Result<u8, ProbeFailure> {
        if self.buf.is_empty() {
            self.fill().await?;
        }
        let b = self.buf[0];
        if b == b'S' && self.buf.len() > 1 {
            return Err(ProbeFailure::new(
                FailureClass::ConnectionLost,
                format!("protocol error with the server: {} unencrypted bytes followed its 'S' to SSLRequest before the TLS handshake (refused: they could be injected by a man in the middle)", self.buf.len() - 1),
            ));
        }
        // An 'E' is an error the server sent instead (a postmaster that cannot fork): it
        // stays to be read as the startup's answer would be.
        if b != b'E' {
            self.buf.advance(1);
        }
        Ok(b)
    }

    /// Writes a whole frontend message (or several), flushed (TLS holds records until then).
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), ProbeFailure> {
        let io = async {
            self.stream.write_all(msg).await?;
            self.stream.flush().await
        };
        io.await.map_err(|e| ProbeFailure::from_io(&e))
    }

    /// Reads more bytes into the buffer; the peer closing is `connection_lost`.
    async fn fill(&mut self) -> Result<(), ProbeFailure> {
        self.buf.reserve(4096);
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| ProbeFailure::from_io(&e))?;
        if n == 0 {
            return Err(ProbeFailure::new(
                FailureClass::ConnectionLost,
                "the server closed the connection",
            ));
        }
        Ok(())
    }

    /// The first byte the server sends, without consuming it (startup needs to tell an
    /// old-style error from a message).
    pub async fn peek_header(&mut self) -> Result<(u8, i32), ProbeFailure> {
        while self.buf.len() < 5 {
            self.fill().await?;
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        Ok((self.buf[0], len))
    }

    /// Reads what is left until the server closes, up to `cap` bytes (an old-style error).
    pub async fn read_to_close(&mut self, cap: usize) -> String {
        while self.buf.len() < cap && self.fill().await.is_ok() {}
        let n = self.buf.len().min(cap);
        String::from_utf8_lossy(&self.buf[..n]).into_owned()
    }

    /// Sets the bytes still allowed to be read from here on (the login was read under
    /// [`READ_BUDGET`]; the SQL snapshot then reads under its own).
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
    }

    /// Reads one backend message, charging it to the budget before its body is read.
    pub async fn read(&mut self) -> Result<Message, ProbeFailure> {
        match self.read_within(READ_BUDGET).await? {
            Incoming::Message(m) => Ok(m),
            Incoming::Skipped { len, .. } | Incoming::OverBudget { len } => Err(ProbeFailure::new(
                FailureClass::UnexpectedResult,
                format!(
                    "the server's answer exceeds the probe's {} KiB read limit (a message of {len} bytes); a probe query should return one small row",
                    READ_BUDGET / 1024
                ),
            )),
        }
    }

    /// Reads one backend message of at most `cap` bytes; a longer one is read and dropped.
    /// Either way it is charged to the budget from its header, before its body is read, so
    /// a length field of gigabytes allocates nothing.
    pub async fn read_within(&mut self, cap: usize) -> Result<Incoming, ProbeFailure> {
        while self.buf.len() < 5 {
            self.fill().await?;
        }
        let header = Header::parse(&self.buf)
            .map_err(|e| malformed(&e))?
            .ok_or_else(|| malformed(&"short header"))?;
        let total = header.len() as usize + 1;
        if total > self.budget {
            return Ok(Incoming::OverBudget { len: total });
        }
        self.budget -= total;
        if total > cap {
            self.discard(total).await?;
            return Ok(Incoming::Skipped {
                tag: header.tag(),
                len: total,
            });
        }
        while self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            self.fill().await?;
        }
        Message::parse(&mut self.buf)
            .map_err(|e| malformed(&e))?
            .map(Incoming::Message)
            .ok_or_else(|| malformed(&"incomplete message"))
    }

    /// Reads `n` bytes and drops them, a buffer's worth at a time.
    async fn discard(&mut self, mut n: usize) -> Result<(), ProbeFailure> {
        loop {
            let k = n.min(self.buf.len());
            self.buf.advance(k);
            n -= k;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }
}

fn malformed(e: &dyn std::fmt::Display) -> ProbeFailure {
    ProbeFailure::new(
        FailureClass::ConnectionLost,
        format!("malformed message from the server: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DataRow header announcing `len` body bytes, then the body streamed by a writer task.
    fn serve_row(len: usize) -> Wire {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        actix_rt::spawn(async move {
            let mut head = vec![b'D'];
            head.extend_from_slice(&(len as i32 + 4).to_be_bytes());
            theirs.write_all(&head).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = len;
            while left > 0 {
                let k = left.min(chunk.len());
                if theirs.write_all(&chunk[..k]).await.is_err() {
                    return;
                }
                left -= k;
            }
            // ReadyForQuery after it: the reader is in step again.
            let _ = theirs.write_all(&[b'Z', 0, 0, 0, 5, b'I']).await;
        });
        Wire::new(Box::new(ours))
    }

    #[actix_rt::test]
    async fn a_message_over_the_cap_is_read_and_dropped_without_being_held() {
        let mut w = serve_row(8 << 20);
        w.set_budget(16 << 20);
        match w.read_within(1 << 20).await.unwrap() {
            Incoming::Skipped { tag: b'D', len } => assert_eq!(len, (8 << 20) + 5),
            _ => panic!("the 8 MiB row is skipped"),
        }
        assert!(
            w.buf.capacity() < 256 * 1024,
            "buffer grew to {} bytes",
            w.buf.capacity()
        );
        assert!(matches!(
            w.read_within(1 << 20).await.unwrap(),
            Incoming::Message(Message::ReadyForQuery(_))
        ));
    }

    #[actix_rt::test]
    async fn bytes_after_the_s_to_sslrequest_are_refused_not_taken_as_the_session() {
        // CVE-2021-23222: a man in the middle appends an AuthenticationOk to the 'S'.
        let (ours, mut theirs) = tokio::io::duplex(1024);
        theirs.write_all(b"SR\0\0\0\x08\0\0\0\0").await.unwrap();
        let mut w = Wire::new(Box::new(ours));
        let e = w.ssl_answer().await.unwrap_err();
        assert!(e.detail.contains("unencrypted bytes"), "{}", e.detail);
        // A lone 'S' is the answer; after an 'N' the plain session goes on.
        let (ours, mut theirs) = tokio::io::duplex(1024);
        theirs.write_all(b"S").await.unwrap();
        assert_eq!(Wire::new(Box::new(ours)).ssl_answer().await.unwrap(), b'S');
        let (ours, mut theirs) = tokio::io::duplex(1024);
        theirs.write_all(b"NZ\0\0\0\x05I").await.unwrap();
        let mut w = Wire::new(Box::new(ours));
        assert_eq!(w.ssl_answer().await.unwrap(), b'N');
        assert!(matches!(w.read().await.unwrap(), Message::ReadyForQuery(_)));
    }

    #[actix_rt::test]
    async fn a_message_over_the_budget_is_not_read_at_all() {
        let mut w = serve_row(32 << 20);
        w.set_budget(16 << 20);
        assert!(matches!(
            w.read_within(1 << 20).await.unwrap(),
            Incoming::OverBudget { len } if len == (32 << 20) + 5
        ));
        assert!(w.buf.capacity() < 256 * 1024);
        // The probe's own reads keep failing as before.
        let mut w = serve_row(2 << 20);
        let e = w.read().await.err().expect("over the probe's budget");
        assert!(e.detail.contains("read limit"), "{}", e.detail);
    }
}
