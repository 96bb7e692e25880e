//! A new client's login, as `psql` would do it: a fresh connection, the startup message, and
//! authentication (trust, cleartext, md5 or SCRAM-SHA-256) through to ReadyForQuery. A
//! postmaster that is stopped, cannot fork, has a full backlog or has no free slot fails
//! here even while existing sessions still answer. A refusal with a SQLSTATE is classed by
//! the same table as any other server error.

use super::scram::{self, Exchange};
use super::wire::Wire;
use super::{FailureClass, ProbeFailure};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::message::backend::{
    AuthenticationSaslBody, AuthenticationSaslContinueBody, AuthenticationSaslFinalBody,
    ErrorFields, Message,
};
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
}

#[derive(Clone)]
enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    /// Reads the DSN's hosts, ports, user, password, database and options, and adds
    /// `statement_timeout` so a query that hangs is cancelled by the server too.
    pub fn new(pg: &tokio_postgres::Config, statement_timeout: Duration) -> Self {
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
        }
    }
}

/// Longest old-style error text read (a postmaster that could not fork says so in one).
const OLD_ERROR_MAX: usize = 4096;

/// Connects to the first address that answers and logs in. `then` (queries, Terminate) goes
/// out with the client's last authentication message, or at ReadyForQuery when the server
/// asks for none: the server reads it once the session is ready, and the probe saves a round
/// trip. An impostor failing the SCRAM check has then seen only the probe's own queries.
pub async fn login(ep: &Endpoint, then: &[u8]) -> Result<Wire, ProbeFailure> {
    let mut last = ProbeFailure::new(
        FailureClass::ConnectionRefused,
        "the DSN names no host (set host= or hostaddr=)",
    );
    for (addr, port) in &ep.addrs {
        let wire = match addr {
            Addr::Tcp(host) => Wire::tcp(host, *port).await,
            Addr::Unix(dir) => Wire::unix(dir, *port).await,
        };
        match wire {
            Ok(w) => return startup(w, ep, then).await,
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sends the startup message and answers the server through authentication to
/// ReadyForQuery.
async fn startup(mut w: Wire, ep: &Endpoint, then: &[u8]) -> Result<Wire, ProbeFailure> {
    send_startup(&mut w, ep).await?;
    refuse_old_error(&mut w).await?;
    let mut auth = Auth {
        ep,
        then,
        out: BytesMut::new(),
        scram: None,
        sent_then: false,
    };
    loop {
        let msg = w.read().await?;
        if auth.answer(&mut w, msg).await? == Next::Ready {
            return Ok(w);
        }
    }
}

/// The startup message: the user, then the endpoint's parameters.
async fn send_startup(w: &mut Wire, ep: &Endpoint) -> Result<(), ProbeFailure> {
    let mut out = BytesMut::new();
    let params = std::iter::once(("user", ep.user.as_str()))
        .chain(ep.params.iter().map(|(k, v)| (*k, v.as_str())));
    frontend::startup_message(params, &mut out).map_err(|e| protocol(&e))?;
    w.send(&out).await
}

/// A postmaster that cannot fork answers with a bare 'E' and text, the pre-3.0 way
/// (libpq tells it by an implausible length, as here): that is a failure to start a session.
async fn refuse_old_error(w: &mut Wire) -> Result<(), ProbeFailure> {
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

/// What to do after a message from the server.
#[derive(PartialEq)]
enum Next {
    /// Read the next message.
    Read,
    /// The session is ready and `then` has gone out.
    Ready,
}

/// The client's side of authentication, answering one server message at a time.
struct Auth<'a> {
    ep: &'a Endpoint,
    /// Goes out with the client's last authentication message, or at ReadyForQuery.
    then: &'a [u8],
    out: BytesMut,
    /// The SCRAM exchange under way, from SASL start to SASL final.
    scram: Option<Exchange>,
    /// Whether `then` has gone out.
    sent_then: bool,
}

impl Auth<'_> {
    /// Answers one message; Err when the login cannot go on.
    async fn answer(&mut self, w: &mut Wire, msg: Message) -> Result<Next, ProbeFailure> {
        match msg {
            // SCRAM ends with SASLFinal before Ok: a server skipping it proved nothing.
            Message::AuthenticationOk if self.scram.is_some() => {
                return Err(auth(
                    "the server accepted the login without proving it knows the password",
                ));
            }
            Message::AuthenticationCleartextPassword => {
                let pw = password(self.ep)?;
                self.send_password(w, pw).await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let pw = password(self.ep)?;
                let hash = md5_hash(self.ep.user.as_bytes(), pw, body.salt());
                self.send_password(w, hash.as_bytes()).await?;
            }
            Message::AuthenticationSasl(body) => self.sasl_start(w, body).await?,
            Message::AuthenticationSaslContinue(body) => self.sasl_continue(w, body).await?,
            Message::AuthenticationSaslFinal(body) => self.sasl_final(body)?,
            Message::AuthenticationGss
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationSspi
            | Message::AuthenticationGssContinue(_) => {
                return Err(auth("the server asks for GSSAPI, SSPI or Kerberos, which the probe does not speak; use scram-sha-256, md5 or trust in pg_hba.conf for the probe's role"));
            }
            Message::ErrorResponse(body) => return Err(server_error(body.fields())),
            Message::ReadyForQuery(_) => {
                if !self.sent_then {
                    w.send(self.then).await?;
                }
                return Ok(Next::Ready);
            }
            // AuthenticationOk after a password, ParameterStatus, BackendKeyData,
            // NoticeResponse: nothing to act on.
            _ => {}
        }
        Ok(Next::Read)
    }

    /// A password message (cleartext or md5), the client's last, with `then` behind it.
    async fn send_password(&mut self, w: &mut Wire, payload: &[u8]) -> Result<(), ProbeFailure> {
        self.out.clear();
        frontend::password_message(payload, &mut self.out).map_err(|e| protocol(&e))?;
        self.out.extend_from_slice(self.then);
        w.send(&self.out).await?;
        self.sent_then = true;
        Ok(())
    }

    /// Starts SCRAM-SHA-256, the one SASL mechanism the probe speaks (the -PLUS variant
    /// needs TLS).
    async fn sasl_start(
        &mut self,
        w: &mut Wire,
        body: AuthenticationSaslBody,
    ) -> Result<(), ProbeFailure> {
        let mut mechs = body.mechanisms();
        let mut has = false;
        while let Some(m) = mechs.next().map_err(|e| protocol(&e))? {
            has |= m == "SCRAM-SHA-256";
        }
        if !has {
            return Err(auth(
                "the server offers no SASL mechanism but SCRAM-SHA-256-PLUS, which needs TLS",
            ));
        }
        password(self.ep)?;
        let ex = Exchange::new("");
        self.out.clear();
        frontend::sasl_initial_response(
            "SCRAM-SHA-256",
            ex.client_first().as_bytes(),
            &mut self.out,
        )
        .map_err(|e| protocol(&e))?;
        w.send(&self.out).await?;
        self.scram = Some(ex);
        Ok(())
    }

    /// Answers the server's first SCRAM message with the client's proof, and `then`.
    async fn sasl_continue(
        &mut self,
        w: &mut Wire,
        body: AuthenticationSaslContinueBody,
    ) -> Result<(), ProbeFailure> {
        let pw = password(self.ep)?;
        let ex = self
            .scram
            .as_mut()
            .ok_or_else(|| protocol(&"SASL continue before SASL start"))?;
        let sf = ex
            .server_first(body.data())
            .map_err(|e| auth(&e.to_string()))?;
        let keys = scram::keys_for(pw, &sf.salt, sf.iterations).await;
        let fin = ex.client_final(&sf, &keys);
        self.out.clear();
        frontend::sasl_response(fin.as_bytes(), &mut self.out).map_err(|e| protocol(&e))?;
        self.out.extend_from_slice(self.then);
        w.send(&self.out).await?;
        self.sent_then = true;
        Ok(())
    }

    /// Checks the server's SCRAM signature: proof that it knows the password too.
    fn sasl_final(&mut self, body: AuthenticationSaslFinalBody) -> Result<(), ProbeFailure> {
        let ex = self
            .scram
            .take()
            .ok_or_else(|| protocol(&"SASL final before SASL start"))?;
        ex.verify_final(body.data())
            .map_err(|e| auth(&e.to_string()))
    }
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
