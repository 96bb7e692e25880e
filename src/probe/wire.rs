//! One probe connection on the wire: a TCP or unix-socket stream, and backend messages read
//! under a byte budget. A message's length is checked against what is left of the budget
//! before its body is read, so a probe query answering 300 MB costs the daemon at most the
//! budget, not the answer.

use super::{FailureClass, ProbeFailure};
use bytes::BytesMut;
use postgres_protocol::message::backend::{Header, Message};
use std::path::Path;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Everything a probe may read from one connection, startup included. A probe answers one
/// small row; a megabyte is far more than any sensible probe query returns.
pub const READ_BUDGET: usize = 1024 * 1024;

pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection to one server, before or after login.
pub struct Wire {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    /// Bytes still allowed to be read.
    budget: usize,
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
        }
    }

    /// Writes a whole frontend message (or several).
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), ProbeFailure> {
        self.stream
            .write_all(msg)
            .await
            .map_err(|e| ProbeFailure::from_io(&e))
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

    /// Reads one backend message, charging it to the budget before its body is read.
    pub async fn read(&mut self) -> Result<Message, ProbeFailure> {
        while self.buf.len() < 5 {
            self.fill().await?;
        }
        let header = Header::parse(&self.buf)
            .map_err(|e| malformed(&e))?
            .ok_or_else(|| malformed(&"short header"))?;
        let total = header.len() as usize + 1;
        if total > self.budget {
            return Err(ProbeFailure::new(
                FailureClass::UnexpectedResult,
                format!(
                    "the server's answer exceeds the probe's {} KiB read limit; a probe query should return one small row",
                    READ_BUDGET / 1024
                ),
            ));
        }
        self.budget -= total;
        while self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            self.fill().await?;
        }
        Message::parse(&mut self.buf)
            .map_err(|e| malformed(&e))?
            .ok_or_else(|| malformed(&"incomplete message"))
    }
}

fn malformed(e: &dyn std::fmt::Display) -> ProbeFailure {
    ProbeFailure::new(
        FailureClass::ConnectionLost,
        format!("malformed message from the server: {e}"),
    )
}
