//! A new client's login, as `psql` would do it: a fresh connection, the startup message, and
//! authentication (trust, cleartext, md5 or SCRAM-SHA-256) through to ReadyForQuery. Each
//! request of the server is checked against the target's `require_auth` before it is
//! answered: by default a cleartext or md5 request is refused and nothing of the password is
//! sent (see `crate::require_auth`). A
//! postmaster that is stopped, cannot fork, has a full backlog or has no free slot fails
//! here even while existing sessions still answer. A refusal with a SQLSTATE is classed by
//! the same table as any other server error.

use super::scram::{Exchange, KeyCache};
use super::wire::Wire;
use super::{FailureClass, ProbeFailure};
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
    /// (host, port) pairs tried in order, as libpq does.
    addrs: Vec<(Addr, u16)>,
    user: String,
    password: Option<Vec<u8>>,
    /// Startup parameters besides `user`: database, application_name, options.
    params: Vec<(&'static str, String)>,
    /// The authentication requests answered.
    require: RequireAuth,
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
        let mut addrs: Vec<(Addr, u16)> = pg
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, ip)| (Addr::Tcp(ip.to_string()), port_of(i)))
            .collect();
        if addrs.is_empty() {
            addrs = pg
                .get_hosts()
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let a = match h {
                        Host::Tcp(name) => Addr::Tcp(name.clone()),
                        Host::Unix(dir) => Addr::Unix(dir.clone()),
                    };
                    (a, port_of(i))
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

/// Refuses a request the target's `require_auth` does not permit, before anything is sent.
/// The probe speaks no TLS yet: every connection is unencrypted.
fn permit(ep: &Endpoint, request: AuthRequest) -> Result<(), ProbeFailure> {
    ep.require
        .check(request, false)
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
    for (addr, port) in &ep.addrs {
        match connect(addr, *port).await {
            Ok(w) => return startup(w, ep, keys, then).await,
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn connect(addr: &Addr, port: u16) -> Result<Wire, ProbeFailure> {
    match addr {
        Addr::Tcp(host) => Wire::tcp(host, port).await,
        Addr::Unix(dir) => Wire::unix(dir, port).await,
    }
}

/// The first of the endpoint's addresses that accepts a connection, for a tokio-postgres
/// session (see `guard`), with the target's `require_auth`.
pub async fn open(ep: &Endpoint) -> Result<(Wire, RequireAuth), ProbeFailure> {
    let mut last = ProbeFailure::new(
        FailureClass::ConnectionRefused,
        "the DSN names no host (set host= or hostaddr=)",
    );
    for (addr, port) in &ep.addrs {
        match connect(addr, *port).await {
            Ok(w) => return Ok((w, ep.require.clone())),
            Err(e) => last = e,
        }
    }
    Err(last)
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
            Message::AuthenticationOk if !asked => permit(ep, AuthRequest::OkWithoutAuth)?,
            Message::AuthenticationCleartextPassword => {
                permit(ep, AuthRequest::Cleartext)?;
                asked = true;
                send_password(&mut w, &mut out, password(ep)?, then).await?;
                sent_then = true;
            }
            Message::AuthenticationMd5Password(body) => {
                permit(ep, AuthRequest::Md5)?;
                asked = true;
                let hash = md5_hash(ep.user.as_bytes(), password(ep)?, body.salt());
                send_password(&mut w, &mut out, hash.as_bytes(), then).await?;
                sent_then = true;
            }
            Message::AuthenticationSasl(body) => {
                permit(ep, AuthRequest::Sasl)?;
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

/// Starts SCRAM-SHA-256 (already permitted): the client-first message.
async fn sasl_start(
    w: &mut Wire,
    out: &mut BytesMut,
    ep: &Endpoint,
    body: &AuthenticationSaslBody,
) -> Result<Exchange, ProbeFailure> {
    offers_scram(body)?;
    password(ep)?;
    let ex = Exchange::new("");
    out.clear();
    frontend::sasl_initial_response("SCRAM-SHA-256", ex.client_first().as_bytes(), out)
        .map_err(|e| protocol(&e))?;
    w.send(out).await?;
    Ok(ex)
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

/// SCRAM-SHA-256 is among the SASL mechanisms offered (the -PLUS variant alone needs TLS).
fn offers_scram(body: &AuthenticationSaslBody) -> Result<(), ProbeFailure> {
    let mut mechs = body.mechanisms();
    let mut has = false;
    while let Some(m) = mechs.next().map_err(|e| protocol(&e))? {
        has |= m == "SCRAM-SHA-256";
    }
    if has {
        return Ok(());
    }
    Err(auth(
        "the server offers no SASL mechanism but SCRAM-SHA-256-PLUS, which needs TLS",
    ))
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
