//! TLS on a probe connection, as libpq does it: SSLRequest, the server's one-byte answer, then
//! the rustls handshake with the target's client configuration (built once per target, see
//! `crate::config::tls`), then the normal startup over TLS.
//!
//! The answer to SSLRequest is a single byte. A server (or whatever holds the port) that sends
//! more behind an 'S' before the handshake is refused: those bytes were not encrypted, and a
//! client that read them as the first bytes of the session would let a man in the middle
//! inject them (CVE-2021-23222). Handshake failures are classed by what the operator must
//! fix: an untrusted, expired or misnamed certificate, or a refused handshake.
//!
//! Also here: the tls-server-end-point channel binding data (RFC 5929) for SCRAM-SHA-256-PLUS,
//! the only binding type PostgreSQL supports: a hash of the server's certificate, with the
//! hash of the certificate's signature algorithm (SHA-256 for MD5 and SHA-1).

use super::wire::{TlsInfo, Wire};
use super::{FailureClass, ProbeFailure};
use crate::config::tls::{SslMode, Tls};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError};
use sha2::Digest;

/// The SSLRequest code (1234.5679).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// What the server made of SSLRequest.
pub enum Negotiated {
    /// The connection to log in on: over TLS, or plain after an 'N' where that is allowed.
    Ready(Wire),
    /// The server sent an error instead of an answer; it waits in the wire to be read.
    ServerError(Wire),
}

/// Asks the server for TLS and, when it agrees, runs the handshake. `required`: an 'N' is a
/// failure (`tls_refused`) rather than the plain connection handed back.
pub async fn negotiate(
    mut w: Wire,
    tls: &Tls,
    host: &str,
    required: bool,
) -> Result<Negotiated, ProbeFailure> {
    let Some(config) = tls.config.clone() else {
        return Ok(Negotiated::Ready(w));
    };
    w.send(&SSL_REQUEST).await?;
    match w.ssl_answer().await? {
        b'S' => {}
        b'N' if required => {
            return Err(ProbeFailure::new(
                FailureClass::TlsRefused,
                format!(
                    "the server refused TLS (answered 'N' to SSLRequest) and the target's sslmode={} requires it: set ssl = on on the server, or check what listens on the port",
                    tls.mode.name()
                ),
            ))
        }
        b'N' => return Ok(Negotiated::Ready(w)),
        // Not an answer to SSLRequest: an error sent to any client (a postmaster that cannot
        // fork, a server out of slots), for the login to read as the startup's answer.
        b'E' => return Ok(Negotiated::ServerError(w)),
        other => {
            return Err(ProbeFailure::new(
                FailureClass::ConnectionLost,
                format!("protocol error with the server: it answered SSLRequest with byte {other:#04x}, not 'S' or 'N'"),
            ))
        }
    }
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        ProbeFailure::new(
            FailureClass::TlsHandshake,
            format!("'{host}' is not a host name or address TLS can check"),
        )
    })?;
    let stream = w.into_stream();
    let connector = tokio_rustls::TlsConnector::from(config);
    let s = connector
        .connect(name, stream)
        .await
        .map_err(|e| classify(&e, tls.mode, host))?;
    let end_point = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| end_point(c.as_ref()));
    Ok(Negotiated::Ready(Wire::over_tls(
        Box::new(s),
        TlsInfo {
            verified: tls.verified,
            end_point,
        },
    )))
}

/// A failed handshake, classed by what must be fixed.
fn classify(e: &std::io::Error, mode: SslMode, host: &str) -> ProbeFailure {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return ProbeFailure::from_io(e);
    };
    use CertificateError as C;
    let (class, text) = match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => (FailureClass::TlsExpired, format!("the server's certificate has expired ({c:?}); renew ssl_cert_file on the server")),
            C::NotValidYet | C::NotValidYetContext { .. } => (FailureClass::TlsExpired, format!("the server's certificate is not valid yet ({c:?}); check the server's and the daemon's clocks")),
            C::NotValidForName | C::NotValidForNameContext { .. } => (FailureClass::TlsNameMismatch, format!("the server's certificate is not valid for '{host}' (sslmode={}): add it to the certificate's subjectAltName, or connect by a name the certificate holds", mode.name())),
            C::UnknownIssuer => (FailureClass::TlsUntrusted, "the server's certificate is not signed by a CA in sslrootcert (unknown issuer): set sslrootcert to the CA that signed it, or check what listens on the port".to_string()),
            C::Revoked => (FailureClass::TlsUntrusted, "the server's certificate is revoked by sslcrl".to_string()),
            other => (FailureClass::TlsUntrusted, format!("the server's certificate does not verify against sslrootcert: {other:?}")),
        },
        rustls::Error::AlertReceived(a) => {
            let why = match a {
                AlertDescription::CertificateRequired => "the server requires a client certificate: set sslcert and sslkey in the DSN",
                AlertDescription::UnknownCA | AlertDescription::BadCertificate | AlertDescription::CertificateUnknown => "the server does not accept the client certificate (not signed by its ssl_ca_file?)",
                AlertDescription::CertificateExpired => "the server says the client certificate has expired",
                AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure => "no TLS version or cipher in common with the server (the daemon speaks TLS 1.2 and 1.3)",
                _ => "the server ended the handshake",
            };
            (FailureClass::TlsHandshake, format!("{why} (TLS alert {a:?})"))
        }
        other => (FailureClass::TlsHandshake, format!("TLS handshake failed: {other}")),
    };
    ProbeFailure::new(class, text)
}

/// tls-server-end-point channel binding data for a DER certificate: its hash with the hash of
/// its signature algorithm, MD5 and SHA-1 replaced by SHA-256 (RFC 5929 §4.1). None for an
/// algorithm without one hash (Ed25519, RSA-PSS, unknown), as in PostgreSQL's server.
pub fn end_point(der: &[u8]) -> Option<Vec<u8>> {
    let oid = signature_oid(der)?;
    // DER bodies of the OIDs: 1.2.840.113549.1.1.x (RSA) and 1.2.840.10045.4.x (ECDSA).
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    enum H {
        S224,
        S256,
        S384,
        S512,
    }
    let h = match oid {
        [rest @ .., last] if rest == RSA => match *last {
            0x04 | 0x05 | 0x0b => H::S256, // md5, sha1, sha256
            0x0c => H::S384,
            0x0d => H::S512,
            0x0e => H::S224,
            _ => return None,
        },
        [rest @ .., 0x01] if rest == ECDSA => H::S256, // ecdsa-with-SHA1
        [rest @ .., 0x03, n] if rest == ECDSA => match *n {
            0x01 => H::S224,
            0x02 => H::S256,
            0x03 => H::S384,
            0x04 => H::S512,
            _ => return None,
        },
        _ => return None,
    };
    Some(match h {
        H::S224 => sha2::Sha224::digest(der).to_vec(),
        H::S256 => sha2::Sha256::digest(der).to_vec(),
        H::S384 => sha2::Sha384::digest(der).to_vec(),
        H::S512 => sha2::Sha512::digest(der).to_vec(),
    })
}

/// The signatureAlgorithm OID of a certificate: SEQUENCE { tbs SEQUENCE, SEQUENCE { OID ..
fn signature_oid(der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_tbs) = tlv(cert)?;
    let (tag, alg, _) = tlv(after_tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = tlv(alg)?;
    (tag == 0x06).then_some(oid)
}

/// One DER tag-length-value: (tag, value, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |a, &x| a << 8 | x as usize);
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        // A minimal certificate shape: SEQUENCE { SEQUENCE {}, SEQUENCE { OID }, BIT STRING }.
        let cert = |oid: &[u8]| {
            let mut alg = vec![0x06, oid.len() as u8];
            alg.extend_from_slice(oid);
            let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
            body.extend(alg);
            body.extend([0x03, 0x01, 0x00]);
            let mut c = vec![0x30, body.len() as u8];
            c.extend(body);
            c
        };
        let ecdsa384 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
        assert_eq!(end_point(&ecdsa384).unwrap().len(), 48);
        let rsa_sha1 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(
            end_point(&rsa_sha1).unwrap(),
            sha2::Sha256::digest(&rsa_sha1).to_vec(),
            "SHA-1 becomes SHA-256"
        );
        let ed25519 = cert(&[0x2b, 0x65, 0x70]);
        assert!(end_point(&ed25519).is_none());
        assert!(end_point(b"\x30\x05junk").is_none());
    }
}
