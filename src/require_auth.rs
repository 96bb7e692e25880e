//! Which authentication requests a probe answers: libpq's `require_auth` (PostgreSQL 16+),
//! read from the target's DSN, with a stricter default.
//!
//! Who wrote it: the operator (the DSN in the registry), or nobody for a discovered target
//! (forced to `scram-sha-256`: a container's labels cannot loosen it). What it guards: the
//! password. Whatever answers on the target's port chooses the authentication method, and that
//! may not be the server: a local user who binds the port while the server is down is asked
//! nothing and asks what it likes. With cleartext (`password`) it receives the password
//! itself; with `md5` a hash that logs in as the role anywhere (md5 is a replayable
//! password-equivalent). With SCRAM it receives a proof bound to its own nonce, useless
//! elsewhere. So by default the probe answers SCRAM or no request at all (trust), and refuses
//! cleartext and md5 before anything leaves, unless the DSN lists them. libpq's own default
//! answers anything; this product's is stricter for that reason.
//!
//! A leaf: config (the DSN) and probe (the login) both read it.

use std::fmt;

/// One method `require_auth` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Password,
    Md5,
    ScramSha256,
    None,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Password,
        Method::Md5,
        Method::ScramSha256,
        Method::None,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Md5 => "md5",
            Method::ScramSha256 => "scram-sha-256",
            Method::None => "none",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Where a target's rule comes from, for the fix an error message gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// No `require_auth` in the DSN: SCRAM or trust.
    Default,
    /// The DSN's `require_auth`.
    Dsn,
    /// A discovered target: SCRAM only, whatever its labels say.
    Discovered,
}

/// The methods a target's probe answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequireAuth {
    /// Bit set of `Method::bit`.
    allowed: u8,
    source: Source,
    /// As written in the DSN (for messages).
    written: String,
}

/// A `require_auth` value that cannot be used; the message names the method and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequireAuthError {
    #[error("require_auth method '{0}' (GSSAPI/SSPI) is not supported by this build, which does not speak Kerberos; use scram-sha-256 (or password, md5, none)")]
    Unsupported(String),
    #[error("'{0}' is not a require_auth method; use password, md5, scram-sha-256 or none, or their negations (!md5)")]
    Unknown(String),
    #[error("require_auth method '{0}' is listed twice; list each method once")]
    Twice(String),
    #[error("require_auth mixes negated and plain methods ('{0}'); negate all of them (!password,!md5) or none")]
    Mixed(String),
}

/// What the server asked for, as the probe is about to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequest {
    /// AuthenticationCleartextPassword.
    Cleartext,
    /// AuthenticationMD5Password.
    Md5,
    /// AuthenticationSASL (SCRAM-SHA-256).
    Sasl,
    /// AuthenticationOk with no request before it (trust, peer, ident).
    OkWithoutAuth,
}

impl AuthRequest {
    fn method(self) -> Method {
        match self {
            AuthRequest::Cleartext => Method::Password,
            AuthRequest::Md5 => Method::Md5,
            AuthRequest::Sasl => Method::ScramSha256,
            AuthRequest::OkWithoutAuth => Method::None,
        }
    }

    fn says(self) -> &'static str {
        match self {
            AuthRequest::Cleartext => {
                "asks for the password in clear (AuthenticationCleartextPassword)"
            }
            AuthRequest::Md5 => {
                "asks for an md5 password hash, which logs in as the role anywhere (AuthenticationMD5Password)"
            }
            AuthRequest::Sasl => "asks for SCRAM-SHA-256 (AuthenticationSASL)",
            AuthRequest::OkWithoutAuth => {
                "let the probe in without asking for any authentication (AuthenticationOk: trust)"
            }
        }
    }
}

/// The probe refused to answer the server; nothing of the password was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    request: AuthRequest,
    rule: RequireAuth,
    encrypted: bool,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let in_clear = matches!(self.request, AuthRequest::Cleartext | AuthRequest::Md5);
        let how = if in_clear && !self.encrypted {
            " over a connection without TLS verified against sslrootcert"
        } else {
            ""
        };
        write!(
            f,
            "the server {}{how}; the probe refused and sent no password. ",
            self.request.says()
        )?;
        let m = self.request.method().name();
        match (self.rule.source, self.request) {
            (Source::Default, _) => write!(
                f,
                "Use scram-sha-256 for the probe's role in the server's pg_hba.conf (and set its password again with password_encryption = scram-sha-256), or accept the risk with require_auth={m} in targets[].dsn"
            ),
            (Source::Discovered, _) => write!(
                f,
                "A discovered target answers scram-sha-256 only (labels cannot change that): use scram-sha-256 for the role in the server's pg_hba.conf, or list the server in targets: with require_auth in its dsn"
            ),
            (Source::Dsn, AuthRequest::OkWithoutAuth) => write!(
                f,
                "Its DSN says require_auth={} (no 'none'): check that the server on this port is the right one, or add none to require_auth",
                self.rule.written
            ),
            (Source::Dsn, _) => write!(
                f,
                "Its DSN says require_auth={}: use one of those methods in the server's pg_hba.conf, or allow {m} in require_auth",
                self.rule.written
            ),
        }
    }
}

impl RequireAuth {
    /// This product's default: SCRAM, or no authentication at all (trust).
    pub fn scram_or_trust() -> Self {
        Self {
            allowed: Method::ScramSha256.bit() | Method::None.bit(),
            source: Source::Default,
            written: String::new(),
        }
    }

    /// A discovered target's rule: SCRAM only (`require_auth=scram-sha-256`), forced.
    pub fn discovered() -> Self {
        Self {
            allowed: Method::ScramSha256.bit(),
            source: Source::Discovered,
            written: "scram-sha-256".into(),
        }
    }

    /// Parses a `require_auth` value with libpq's rules: a comma list of methods, or of
    /// negated methods (`!md5`) meaning every other one; an empty value is the default.
    pub fn parse(value: &str) -> Result<Self, RequireAuthError> {
        if value.trim().is_empty() {
            return Ok(Self::scram_or_trust());
        }
        let (mut listed, mut negated, mut plain) = (0u8, false, false);
        for item in value.split(',') {
            let item = item.trim();
            let (neg, name) = match item.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, item),
            };
            negated |= neg;
            plain |= !neg;
            if negated && plain {
                return Err(RequireAuthError::Mixed(value.into()));
            }
            let method = match name {
                "gss" | "sspi" => return Err(RequireAuthError::Unsupported(item.into())),
                _ => Method::ALL
                    .into_iter()
                    .find(|m| m.name() == name)
                    .ok_or_else(|| RequireAuthError::Unknown(item.into()))?,
            };
            if listed & method.bit() != 0 {
                return Err(RequireAuthError::Twice(item.into()));
            }
            listed |= method.bit();
        }
        let every = Method::ALL.iter().fold(0, |a, m| a | m.bit());
        Ok(Self {
            allowed: if negated { every & !listed } else { listed },
            source: Source::Dsn,
            written: value.into(),
        })
    }

    /// Whether the probe may answer `request` on this connection. The one place the rule is
    /// applied: the probe's own login and every tokio-postgres session go through it.
    /// `encrypted`: the connection runs over TLS with the server's certificate verified
    /// (verify-ca, verify-full, or a root file with prefer/require). Then the default also
    /// answers a cleartext or md5 request: the password goes encrypted to a server proven to
    /// hold a certificate the operator's CA signed. Unverified TLS (`require`) proves nothing
    /// about who answers, so it stays refused there.
    pub fn check(&self, request: AuthRequest, encrypted: bool) -> Result<(), Refused> {
        let method = request.method();
        let by_default = self.source == Source::Default
            && encrypted
            && matches!(method, Method::Password | Method::Md5);
        if self.allowed & method.bit() != 0 || by_default {
            return Ok(());
        }
        Err(Refused {
            request,
            rule: self.clone(),
            encrypted,
        })
    }
}

/// The `require_auth` value of a DSN (the last one, as libpq takes it), and the DSN without
/// it for tokio-postgres, which does not know the key.
pub fn split_dsn(dsn: &str) -> (String, Option<String>) {
    let (rest, found) = split_dsn_keys(dsn, &|k| k == KEY);
    (rest, found.into_iter().last().map(|(_, v)| v))
}

/// The `(key, value)` pairs of a DSN whose key `take` accepts, in order, and the DSN without
/// them. A URL's parameters follow its first `?` after the host; a key/value DSN is tokenized
/// as tokio-postgres and libpq do.
pub fn split_dsn_keys(dsn: &str, take: &dyn Fn(&str) -> bool) -> (String, Vec<(String, String)>) {
    let url = ["postgres://", "postgresql://"]
        .iter()
        .any(|p| dsn.starts_with(p));
    if url {
        split_url(dsn, take)
    } else {
        split_key_values(dsn, take)
    }
}

const KEY: &str = "require_auth";

fn split_url(dsn: &str, take: &dyn Fn(&str) -> bool) -> (String, Vec<(String, String)>) {
    // As tokio-postgres reads a URL: credentials up to the first '@', then the host up to
    // '/' or '?', then the path up to '?'.
    let after_creds = dsn.find('@').map_or(0, |i| i + 1);
    let Some(q) = dsn[after_creds..].find('?').map(|i| i + after_creds) else {
        return (dsn.to_string(), Vec::new());
    };
    let (mut kept, mut found) = (Vec::new(), Vec::new());
    for pair in dsn[q + 1..].split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k);
        if take(&k) {
            found.push((k, percent_decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let mut out = dsn[..q].to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    (out, found)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key = value` pairs separated by white space; a value quoted in '' or bare, `\` escaping
/// the next character in both. Text that does not tokenize is left whole for tokio-postgres
/// to refuse with its own message.
fn split_key_values(dsn: &str, take: &dyn Fn(&str) -> bool) -> (String, Vec<(String, String)>) {
    let mut it = dsn.char_indices().peekable();
    let (mut out, mut found, mut copied) = (String::new(), Vec::new(), 0);
    loop {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = it.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if it.next_if(|(_, c)| *c == '=').is_none() {
            return (dsn.to_string(), Vec::new());
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let quoted = it.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut closed = !quoted;
        while let Some(&(_, c)) = it.peek() {
            if (quoted && c == '\'') || (!quoted && c.is_whitespace()) {
                break;
            }
            it.next();
            if c == '\\' {
                if let Some((_, e)) = it.next() {
                    value.push(e);
                }
            } else {
                value.push(c);
            }
        }
        if quoted {
            closed = it.next_if(|(_, c)| *c == '\'').is_some();
        }
        if !closed {
            return (dsn.to_string(), Vec::new());
        }
        let end = it.peek().map_or(dsn.len(), |&(i, _)| i);
        if take(&key) {
            out.push_str(&dsn[copied..start]);
            copied = end;
            found.push((key, value));
        }
    }
    out.push_str(&dsn[copied..]);
    (out, found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AuthRequest::*;

    fn allows(rule: &str, req: AuthRequest) -> bool {
        RequireAuth::parse(rule).unwrap().check(req, false).is_ok()
    }

    #[test]
    fn the_default_answers_scram_and_trust_and_refuses_cleartext_and_md5() {
        let d = RequireAuth::scram_or_trust();
        assert!(d.check(Sasl, false).is_ok());
        assert!(d.check(OkWithoutAuth, false).is_ok());
        for req in [Cleartext, Md5] {
            let e = d.check(req, false).unwrap_err().to_string();
            assert!(
                e.contains("without TLS") && e.contains("sent no password"),
                "{e}"
            );
            assert!(
                e.contains("scram-sha-256") && e.contains("pg_hba.conf"),
                "{e}"
            );
        }
        assert!(d
            .check(Cleartext, false)
            .unwrap_err()
            .to_string()
            .contains("require_auth=password"));
        assert!(d
            .check(Md5, false)
            .unwrap_err()
            .to_string()
            .contains("require_auth=md5"));
        // Over verified TLS the default answers them.
        assert!(d.check(Cleartext, true).is_ok());
    }

    #[test]
    fn lists_and_negations_follow_libpq() {
        assert!(allows("password", Cleartext));
        assert!(!allows("password", Sasl), "a listed method only");
        assert!(
            !allows("password", OkWithoutAuth),
            "no 'none': trust is refused"
        );
        assert!(allows("password,none", OkWithoutAuth));
        assert!(allows("md5, scram-sha-256", Md5));
        assert!(!allows("scram-sha-256", Md5));
        assert!(allows("!password", Md5));
        assert!(allows("!password,!md5", Sasl));
        assert!(allows("!password,!md5", OkWithoutAuth));
        assert!(!allows("!password,!md5", Cleartext));
        assert!(!allows("!none", OkWithoutAuth));
        assert!(
            allows("", Sasl) && !allows("", Cleartext),
            "empty is the default"
        );
        let e = RequireAuth::parse("scram-sha-256")
            .unwrap()
            .check(OkWithoutAuth, false);
        assert!(e.unwrap_err().to_string().contains("add none"));
        let e = RequireAuth::parse("password").unwrap().check(Sasl, false);
        let e = e.unwrap_err().to_string();
        assert!(
            !e.contains("TLS") && e.contains("allow scram-sha-256"),
            "{e}"
        );
    }

    #[test]
    fn unusable_values_are_refused_with_the_method_and_the_fix() {
        use RequireAuthError::*;
        assert_eq!(RequireAuth::parse("gss"), Err(Unsupported("gss".into())));
        assert_eq!(
            RequireAuth::parse("scram-sha-256,!sspi"),
            Err(Mixed("scram-sha-256,!sspi".into()))
        );
        assert_eq!(RequireAuth::parse("sspi"), Err(Unsupported("sspi".into())));
        assert_eq!(RequireAuth::parse("scram"), Err(Unknown("scram".into())));
        assert_eq!(RequireAuth::parse("md5,md5"), Err(Twice("md5".into())));
        assert_eq!(
            RequireAuth::parse("md5,!none"),
            Err(Mixed("md5,!none".into()))
        );
        assert!(Unsupported("gss".into())
            .to_string()
            .contains("use scram-sha-256"));
    }

    #[test]
    fn a_discovered_target_answers_scram_only_and_says_labels_cannot_change_it() {
        let d = RequireAuth::discovered();
        assert!(d.check(Sasl, false).is_ok());
        assert!(d.check(OkWithoutAuth, false).is_err());
        let e = d.check(Cleartext, true).unwrap_err().to_string();
        assert!(e.contains("discovered") && e.contains("labels"), "{e}");
    }

    #[test]
    fn require_auth_is_taken_out_of_urls_and_key_value_dsns() {
        let cases = [
            (
                "postgres://u:p@h:5/db?require_auth=password",
                "postgres://u:p@h:5/db",
                Some("password"),
            ),
            (
                "postgres://u:p@h/db?application_name=a&require_auth=%21md5&connect_timeout=3",
                "postgres://u:p@h/db?application_name=a&connect_timeout=3",
                Some("!md5"),
            ),
            ("postgresql://u:p?x@h/db", "postgresql://u:p?x@h/db", None),
            (
                "postgres://u@h/db?sslmode=disable",
                "postgres://u@h/db?sslmode=disable",
                None,
            ),
            (
                "host=h require_auth = 'password,md5' dbname=d",
                "host=h  dbname=d",
                Some("password,md5"),
            ),
            (
                "require_auth=md5 password='a b\\' c'",
                " password='a b\\' c'",
                Some("md5"),
            ),
            ("host=h password=x", "host=h password=x", None),
            ("host=h password='open", "host=h password='open", None),
        ];
        for (dsn, rest, found) in cases {
            assert_eq!(
                split_dsn(dsn),
                (rest.to_string(), found.map(String::from)),
                "{dsn}"
            );
        }
    }
}
