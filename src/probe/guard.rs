//! tokio-postgres sessions (the SQL snapshot, the healer's "accepting connections" check) under
//! the same `require_auth` as the probe's own login. tokio-postgres answers whatever the
//! server asks, a cleartext password included, and knows no `require_auth`; so its connection
//! reads the server through `Guarded`, which holds back every message until it is checked
//! and ends the connection at a refused request. tokio-postgres sends a password only after
//! reading the request for it, so a request that never reaches it is never answered.

use super::login::{open, Endpoint};
use super::wire::Stream;
use super::{FailureClass, ProbeFailure};
use crate::require_auth::{AuthRequest, RequireAuth};
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Connection, NoTls};

/// Longest message accepted while authentication goes on (SASL messages are a few hundred
/// bytes; an error a few KiB).
const AUTH_MESSAGE_MAX: usize = 64 * 1024;

/// Why the guard ended a connection, for the caller to report.
type Refusal = Arc<Mutex<Option<ProbeFailure>>>;

/// A connection whose authentication requests are checked before tokio-postgres sees them.
pub struct Guarded {
    inner: Box<dyn Stream>,
    require: RequireAuth,
    /// Read from the server, not yet checked (part of a message, while authentication goes on).
    held: BytesMut,
    /// Checked, for tokio-postgres to read.
    ready: BytesMut,
    /// The server asked for some authentication before AuthenticationOk.
    asked: bool,
    /// AuthenticationOk passed: the rest goes straight through.
    open: bool,
    refusal: Refusal,
}

impl Guarded {
    /// Moves every complete message from `held` to `ready`, checking authentication requests.
    fn sift(&mut self) -> Result<(), ProbeFailure> {
        while !self.open && self.held.len() >= 5 {
            let len = u32::from_be_bytes([self.held[1], self.held[2], self.held[3], self.held[4]])
                as usize;
            if !(4..=AUTH_MESSAGE_MAX).contains(&len) {
                return Err(ProbeFailure::new(
                    FailureClass::ConnectionLost,
                    format!(
                        "malformed message from the server during authentication (length {len})"
                    ),
                ));
            }
            if self.held.len() < len + 1 {
                break;
            }
            if self.held[0] == b'R' && len >= 8 {
                let code =
                    i32::from_be_bytes([self.held[5], self.held[6], self.held[7], self.held[8]]);
                let request = match code {
                    0 if !self.asked => Some(AuthRequest::OkWithoutAuth),
                    3 => Some(AuthRequest::Cleartext),
                    5 => Some(AuthRequest::Md5),
                    10 => Some(AuthRequest::Sasl),
                    _ => None,
                };
                if let Some(r) = request {
                    // No TLS yet: the connection is unencrypted.
                    self.require.check(r, false).map_err(|e| {
                        ProbeFailure::new(FailureClass::InsecureAuth, e.to_string())
                    })?;
                }
                self.asked |= matches!(code, 3 | 5 | 10);
                self.open = code == 0;
            }
            let msg = self.held.split_to(len + 1);
            self.ready.extend_from_slice(&msg);
        }
        if self.open {
            let rest = self.held.split();
            self.ready.extend_from_slice(&rest);
        }
        Ok(())
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.open {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(())); // the server closed
            }
            this.held.extend_from_slice(rb.filled());
            if let Err(f) = this.sift() {
                let text = f.detail.clone();
                *this.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::PermissionDenied, text)));
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A tokio-postgres session with `cfg`'s settings, on the first of `dsn`'s addresses that
/// accepts a connection, under `dsn`'s `require_auth`.
pub async fn connect(
    cfg: &tokio_postgres::Config,
    dsn: &crate::config::Dsn,
) -> Result<(Client, Connection<Guarded, NoTlsStream>), ProbeFailure> {
    let ep = Endpoint::new(dsn, Duration::ZERO);
    let (wire, require) = open(&ep).await?;
    let refusal = Refusal::default();
    let guarded = Guarded {
        inner: wire.into_stream(),
        require,
        held: BytesMut::new(),
        ready: BytesMut::new(),
        asked: false,
        open: false,
        refusal: refusal.clone(),
    };
    match cfg.connect_raw(guarded, NoTls).await {
        Ok(c) => Ok(c),
        Err(e) => {
            let refused = refusal.lock().unwrap_or_else(|e| e.into_inner()).take();
            Err(refused.unwrap_or_else(|| ProbeFailure::from_pg(&e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(require: RequireAuth) -> Guarded {
        let (a, _b) = tokio::io::duplex(64);
        Guarded {
            inner: Box::new(a),
            require,
            held: BytesMut::new(),
            ready: BytesMut::new(),
            asked: false,
            open: false,
            refusal: Refusal::default(),
        }
    }

    /// An authentication message with this code and body.
    fn auth(code: i32, body: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Feeds `bytes` one at a time, as the slowest server would send them.
    fn feed(g: &mut Guarded, bytes: &[u8]) -> Result<(), ProbeFailure> {
        for b in bytes {
            g.held.extend_from_slice(&[*b]);
            g.sift()?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_cleartext_request_is_never_handed_on_however_it_is_split() {
        let mut g = guarded(RequireAuth::scram_or_trust());
        let f = feed(&mut g, &auth(3, b"")).unwrap_err();
        assert_eq!(f.class, FailureClass::InsecureAuth);
        assert!(g.ready.is_empty(), "tokio-postgres never saw the request");
        let mut g = guarded(RequireAuth::scram_or_trust());
        assert!(feed(&mut g, &auth(5, b"salt")).is_err());
        assert!(g.ready.is_empty());
    }

    #[tokio::test]
    async fn scram_passes_and_after_authentication_ok_everything_goes_through() {
        let mut g = guarded(RequireAuth::parse("scram-sha-256").unwrap());
        let mut stream = auth(10, b"SCRAM-SHA-256\0\0");
        stream.extend(auth(11, b"r=abc,s=c2FsdA==,i=4096"));
        stream.extend(auth(12, b"v=xyz"));
        stream.extend(auth(0, b""));
        stream.extend(b"S\0\0\0\x04Z\0\0\0\x05I"); // ParameterStatus, ReadyForQuery
        feed(&mut g, &stream).unwrap();
        assert!(g.open);
        assert_eq!(&g.ready[..], &stream[..]);
        // Without any request, AuthenticationOk is refused where 'none' is not listed.
        let mut g = guarded(RequireAuth::parse("scram-sha-256").unwrap());
        assert!(feed(&mut g, &auth(0, b"")).is_err());
        let mut g = guarded(RequireAuth::scram_or_trust());
        feed(&mut g, &auth(0, b"")).unwrap();
        assert!(g.open, "trust is allowed by default");
    }
}
