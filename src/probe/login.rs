//! A new client's login, as `psql` would do it: a fresh connection, the startup message, and
//! authentication (trust, cleartext, md5 or SCRAM-SHA-256) through to ReadyForQuery. Each
//! request of the server is checked against the target's `require_auth` before it is
//! answered: by default a cleartext or md5 request is refused and nothing of the password is
//! sent (see `crate::require_auth`). A
//! postmaster that is stopped, cannot fork, has a full backlog or has no free slot fails
//! here even while existing sessions still answer. A refusal with a SQLSTATE is classed by
//! the same table as any other server error.
//!
//! TLS follows the target's `sslmode` as libpq does (see `tls`): SSLRequest first unless
//! `disable` (or a unix socket, where libpq uses none), the plain connection kept on 'N' under
//! `prefer`, a new plain connection after a failed handshake under `prefer`, and under
//! `allow` a plain login first and one over TLS when the server refuses that. SCRAM binds the
//! login to the TLS channel (SCRAM-SHA-256-PLUS) when the server offers it, per
//! `channel_binding`.

use super::scram::{Binding, Exchange, KeyCache};
use super::tls::Negotiated;
use super::wire::Wire;
use super::{FailureClass, ProbeFailure};
use crate::config::tls::{ChannelBinding, SslMode, Tls};
use crate::require_auth::{AuthRequest, RequireAuth};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::message::backend::{AuthenticationSaslBody, ErrorFields, Message};
use postgres_protocol::message::frontend;
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::config::Host;

/// Where and as whom a probe logs in, taken from the target's DSN.
#[derive(Clone)]
pub struct Endpoint {
    /// (host, port, name for TLS) tried in order, as libpq does.
    addrs: Vec<(Addr, u16, String)>,
    user: String,
    password: Option<Vec<u8>>,
    /// Startup parameters besides `user`: database, application_name, options.
    params: Vec<(&'static str, String)>,
    /// The authentication requests answered.
    require: RequireAuth,
    /// sslmode and the client configuration, shared with every connection to the target.
    tls: Tls,
}

#[derive(Clone)]
enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    /// Reads the DSN's hosts, ports, user, password, database and options, and adds
    /// `statement_timeout` so a query that hangs is cancelled by the server too.
    pub fn new(dsn: &crate::config::Dsn, statement_timeout: Duration) -> Self {
        let pg = dsn.config();
        let ports = pg.get_ports();
        let port_of = |i: usize| match ports {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        };
        // With hostaddr, the certificate is checked against the host of the same position
        // (libpq's rule), else against the address itself.
        let hosts = pg.get_hosts();
        let mut addrs: Vec<(Addr, u16, String)> = pg
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let name = match hosts.get(i) {
                    Some(Host::Tcp(h)) => h.clone(),
                    _ => ip.to_string(),
                };
                (Addr::Tcp(ip.to_string()), port_of(i), name)
            })
            .collect();
        if addrs.is_empty() {
            addrs = pg
                .get_hosts()
                .iter()
                .enumerate()
                .map(|(i, h)| match h {
                    Host::Tcp(name) => (Addr::Tcp(name.clone()), port_of(i), name.clone()),
                    Host::Unix(dir) => (Addr::Unix(dir.clone()), port_of(i), String::new()),
                })
                .collect();
        }
        let user = pg.get_user().unwrap_or("postgres").to_string();
        let mut params = Vec::new();
        if let Some(db) = pg.get_dbname() {
            params.push(("database", db.to_string()));
        }
        params.push((
            "application_name",
            pg.get_application_name()
                .unwrap_or("sentinel-remedy")
                .to_string(),
        ));
        let timeout = format!(
            "-c statement_timeout={}",
            statement_timeout.as_millis().max(1)
        );
        let options = match pg.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} {timeout}"),
            _ => timeout,
        };
        params.push(("options", options));
        params.push(("client_encoding", "UTF8".into()));
        Self {
            addrs,
            user,
            password: pg.get_password().map(<[u8]>::to_vec),
            params,
            require: dsn.require_auth().clone(),
            tls: dsn.tls().clone(),
        }
    }

    /// The same login under another `application_name`, so the server's own views and logs
    /// tell this session (the SQL snapshot's) from the probe's.
    pub fn with_application_name(mut self, name: &str) -> Self {
        for (k, v) in &mut self.params {
            if *k == "application_name" {
                *v = name.to_string();
            }
        }
        self
    }
}

/// Refuses a request the target's `require_auth` (or `channel_binding=require`) does not
/// permit, before anything is sent. A cleartext or md5 answer counts as protected only over
/// TLS with the server's certificate verified.
fn permit(ep: &Endpoint, w: &Wire, request: AuthRequest) -> Result<(), ProbeFailure> {
    if ep.tls.channel_binding == ChannelBinding::Require && request != AuthRequest::Sasl {
        return Err(ProbeFailure::new(
            FailureClass::InsecureAuth,
            format!("the target's channel_binding=require allows only SCRAM-SHA-256-PLUS, and the server asked for {request:?} instead; the probe refused and sent nothing. Use scram-sha-256 for the probe's role on a hostssl line of pg_hba.conf, or remove channel_binding=require"),
        ));
    }
    let verified = w.tls().is_some_and(|t| t.verified);
    ep.require
        .check(request, verified)
        .map_err(|r| ProbeFailure::new(FailureClass::InsecureAuth, r.to_string()))
}

/// Longest old-style error text read (a postmaster that could not fork says so in one).
const OLD_ERROR_MAX: usize = 4096;

/// Connects to the first address that answers and logs in. `then` (queries, Terminate) goes
/// out with the client's last authentication message, or at ReadyForQuery when the server
/// asks for none: the server reads it once the session is ready, and the probe saves a round
/// trip. An impostor failing the SCRAM check has then seen only the probe's own queries.
pub async fn login(ep: &Endpoint, keys: &mut KeyCache, then: &[u8]) -> Result<Wire, ProbeFailure> {
    let mut last = ProbeFailure::new(
        FailureClass::ConnectionRefused,
        "the DSN names no host (set host= or hostaddr=)",
    );
    for (addr, port, name) in &ep.addrs {
        match connect(addr, *port).await {
            Ok(w) => return session(w, ep, (addr, *port, name), keys, then).await,
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// TLS per the target's sslmode on a fresh connection, then the startup.
async fn session(
    w: Wire,
    ep: &Endpoint,
    (addr, port, name): (&Addr, u16, &str),
    keys: &mut KeyCache,
    then: &[u8],
) -> Result<Wire, ProbeFailure> {
    if matches!(addr, Addr::Unix(_)) {
        return startup(w, ep, keys, then).await; // libpq uses no TLS on unix sockets
    }
    match ep.tls.mode {
        SslMode::Disable => startup(w, ep, keys, then).await,
        SslMode::Allow => match startup(w, ep, keys, then).await {
            // pg_hba.conf refused the plain connection (hostssl only): again over TLS.
            Err(f) if f.sqlstate.as_deref().is_some_and(|c| c.starts_with("28")) => {
                let w = secure(connect(addr, port).await?, ep, name, false).await?;
                startup(w, ep, keys, then).await
            }
            r => r,
        },
        SslMode::Prefer => match secure(w, ep, name, false).await {
            Ok(w) => startup(w, ep, keys, then).await,
            // The handshake failed: libpq tries again without TLS.
            Err(f) if f.class.is_refusal() => {
                startup(connect(addr, port).await?, ep, keys, then).await
            }
            Err(f) => Err(f),
        },
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            let w = secure(w, ep, name, true).await?;
            startup(w, ep, keys, then).await
        }
    }
}

/// SSLRequest and the handshake (see `tls`); an error the server sent instead of answering
/// is read and classed as the startup's answer would be.
async fn secure(w: Wire, ep: &Endpoint, name: &str, required: bool) -> Result<Wire, ProbeFailure> {
    match super::tls::negotiate(w, &ep.tls, name, required).await? {
        Negotiated::Ready(w) => Ok(w),
        Negotiated::ServerError(mut w) => {
            refuse_old_style_error(&mut w).await?;
            Err(match w.read().await? {
                Message::ErrorResponse(body) => server_error(body.fields()),
                _ => protocol(&"an unexpected message in answer to SSLRequest"),
            })
        }
    }
}

async fn connect(addr: &Addr, port: u16) -> Result<Wire, ProbeFailure> {
    match addr {
        Addr::Tcp(host) => Wire::tcp(host, port).await,
        Addr::Unix(dir) => Wire::unix(dir, port).await,
    }
}

async fn startup(
    mut w: Wire,
    ep: &Endpoint,
    keys: &mut KeyCache,
    then: &[u8],
) -> Result<Wire, ProbeFailure> {
    let mut out = BytesMut::new();
    send_startup(&mut w, ep, &mut out).await?;
    let mut scram: Option<Exchange> = None;
    // Whether the server asked for any authentication before AuthenticationOk.
    let mut asked = false;
    let mut sent_then = false;
    loop {
        match w.read().await? {
            // SCRAM ends with SASLFinal before Ok: a server skipping it proved nothing.
            Message::AuthenticationOk if scram.is_some() => {
                return Err(auth(
                    "the server accepted the login without proving it knows the password",
                ));
            }
            Message::AuthenticationOk if !asked => permit(ep, &w, AuthRequest::OkWithoutAuth)?,
            Message::AuthenticationCleartextPassword => {
                permit(ep, &w, AuthRequest::Cleartext)?;
                asked = true;
                send_password(&mut w, &mut out, password(ep)?, then).await?;
                sent_then = true;
            }
            Message::AuthenticationMd5Password(body) => {
                permit(ep, &w, AuthRequest::Md5)?;
                asked = true;
                let hash = md5_hash(ep.user.as_bytes(), password(ep)?, body.salt());
                send_password(&mut w, &mut out, hash.as_bytes(), then).await?;
                sent_then = true;
            }
            Message::AuthenticationSasl(body) => {
                permit(ep, &w, AuthRequest::Sasl)?;
                asked = true;
                scram = Some(sasl_start(&mut w, &mut out, ep, &body).await?);
            }
            Message::AuthenticationSaslContinue(body) => {
                let pw = password(ep)?;
                let ex = scram
                    .as_mut()
                    .ok_or_else(|| protocol(&"SASL continue before SASL start"))?;
                let fin = client_final(ex, keys, body.data(), pw).await?;
                out.clear();
                frontend::sasl_response(fin.as_bytes(), &mut out).map_err(|e| protocol(&e))?;
                out.extend_from_slice(then);
                w.send(&out).await?;
                sent_then = true;
            }
            Message::AuthenticationSaslFinal(body) => {
                let ex = scram
                    .take()
                    .ok_or_else(|| protocol(&"SASL final before SASL start"))?;
                ex.verify_final(body.data())
                    .map_err(|e| auth(&e.to_string()))?;
            }
            Message::AuthenticationGss
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationSspi
            | Message::AuthenticationGssContinue(_) => {
                return Err(auth("the server asks for GSSAPI, SSPI or Kerberos, which the probe does not speak; use scram-sha-256 in pg_hba.conf for the probe's role"));
            }
            Message::ErrorResponse(body) => return Err(server_error(body.fields())),
            Message::ReadyForQuery(_) => {
                if !sent_then {
                    w.send(then).await?;
                }
                return Ok(w);
            }
            // AuthenticationOk (no SCRAM), ParameterStatus, BackendKeyData, NoticeResponse:
            // nothing to act on.
            _ => {}
        }
    }
}

/// The startup message; a postmaster that cannot fork answers it the old way.
async fn send_startup(w: &mut Wire, ep: &Endpoint, out: &mut BytesMut) -> Result<(), ProbeFailure> {
    let params = std::iter::once(("user", ep.user.as_str()))
        .chain(ep.params.iter().map(|(k, v)| (*k, v.as_str())));
    frontend::startup_message(params, out).map_err(|e| protocol(&e))?;
    w.send(out).await?;
    refuse_old_style_error(w).await
}

/// Starts SCRAM-SHA-256 (already permitted): the client-first message, bound to the TLS
/// channel (SCRAM-SHA-256-PLUS) when the server offers it, per `channel_binding`.
async fn sasl_start(
    w: &mut Wire,
    out: &mut BytesMut,
    ep: &Endpoint,
    body: &AuthenticationSaslBody,
) -> Result<Exchange, ProbeFailure> {
    let binding = binding(w, ep, body)?;
    password(ep)?;
    let ex = Exchange::bound("", binding);
    out.clear();
    frontend::sasl_initial_response(ex.mechanism(), ex.client_first().as_bytes(), out)
        .map_err(|e| protocol(&e))?;
    w.send(out).await?;
    Ok(ex)
}

/// The channel binding for this connection and the mechanisms the server offers.
fn binding(
    w: &Wire,
    ep: &Endpoint,
    body: &AuthenticationSaslBody,
) -> Result<Binding, ProbeFailure> {
    let (scram, plus) = offered(body)?;
    let tls = w.tls();
    let end_point = tls.and_then(|t| t.end_point.clone());
    let cb = ep.tls.channel_binding;
    if cb != ChannelBinding::Disable && plus {
        if let Some(data) = end_point {
            return Ok(Binding::EndPoint(data));
        }
    }
    if cb == ChannelBinding::Require {
        let why = match (tls, plus) {
            (None, _) => "the connection is not TLS",
            (Some(_), false) => "the server does not offer SCRAM-SHA-256-PLUS",
            (Some(_), true) => "the server's certificate is signed with an algorithm that defines no tls-server-end-point hash (Ed25519 or RSA-PSS)",
        };
        return Err(ProbeFailure::new(
            FailureClass::InsecureAuth,
            format!("the target's channel_binding=require cannot be met: {why}; the probe sent nothing. Use scram-sha-256 on a hostssl line of pg_hba.conf with an RSA or ECDSA certificate, or remove channel_binding=require"),
        ));
    }
    if !scram {
        return Err(auth(
            "the server offers no SASL mechanism but SCRAM-SHA-256-PLUS, which needs TLS with channel binding (set sslmode=require and channel_binding=prefer)",
        ));
    }
    // 'y': the daemon could bind but the server offered no -PLUS; a server that does offer it
    // then knows its offer was stripped on the way.
    Ok(if tls.is_some() && cb != ChannelBinding::Disable {
        Binding::ClientOnly
    } else {
        Binding::None
    })
}

/// Sends a password message with the probe's query right behind it (one round trip less).
async fn send_password(
    w: &mut Wire,
    out: &mut BytesMut,
    pw: &[u8],
    then: &[u8],
) -> Result<(), ProbeFailure> {
    out.clear();
    frontend::password_message(pw, out).map_err(|e| protocol(&e))?;
    out.extend_from_slice(then);
    w.send(out).await
}

/// The SCRAM client-final message answering the server-first one in `data`.
async fn client_final(
    ex: &mut Exchange,
    cache: &mut KeyCache,
    data: &[u8],
    pw: &[u8],
) -> Result<String, ProbeFailure> {
    let sf = ex.server_first(data).map_err(|e| auth(&e.to_string()))?;
    let keys = cache.keys_for(pw, &sf.salt, sf.iterations).await;
    Ok(ex.client_final(&sf, &keys))
}

/// A postmaster that cannot fork answers with a bare 'E' and text, the pre-3.0 way (libpq
/// tells it by an implausible length, as here): that is an out-of-memory failure.
async fn refuse_old_style_error(w: &mut Wire) -> Result<(), ProbeFailure> {
    let (tag, len) = w.peek_header().await?;
    if tag == b'E' && !(8..=30_000).contains(&len) {
        let text = w.read_to_close(OLD_ERROR_MAX).await;
        let text = text.get(1..).unwrap_or("").trim_end_matches(['\0', '\n']);
        return Err(ProbeFailure::new(
            FailureClass::OutOfMemory,
            format!("the server could not start a session: {text}"),
        ));
    }
    Ok(())
}

/// Whether SCRAM-SHA-256 and SCRAM-SHA-256-PLUS are among the SASL mechanisms offered.
fn offered(body: &AuthenticationSaslBody) -> Result<(bool, bool), ProbeFailure> {
    let mut mechs = body.mechanisms();
    let (mut scram, mut plus) = (false, false);
    while let Some(m) = mechs.next().map_err(|e| protocol(&e))? {
        scram |= m == "SCRAM-SHA-256";
        plus |= m == "SCRAM-SHA-256-PLUS";
    }
    Ok((scram, plus))
}

fn password(ep: &Endpoint) -> Result<&[u8], ProbeFailure> {
    ep.password.as_deref().ok_or_else(|| {
        auth("the server asks for a password and the DSN has none (add it to targets[].dsn)")
    })
}

fn auth(detail: &str) -> ProbeFailure {
    ProbeFailure::new(FailureClass::Authentication, detail)
}

fn protocol(e: &dyn std::fmt::Display) -> ProbeFailure {
    ProbeFailure::new(
        FailureClass::ConnectionLost,
        format!("protocol error with the server: {e}"),
    )
}

/// An ErrorResponse as a classed failure: its SQLSTATE (`C`) and message (`M`).
pub fn server_error(mut fields: ErrorFields<'_>) -> ProbeFailure {
    let (mut code, mut message) = (String::new(), String::new());
    while let Ok(Some(f)) = fields.next() {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => code = v,
            b'M' => message = v,
            _ => {}
        }
    }
    if code.is_empty() {
        return ProbeFailure::new(FailureClass::QueryError, message);
    }
    ProbeFailure::from_sqlstate(&code, message)
}
