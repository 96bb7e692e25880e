//! Keeps secrets out of logs, alerts and archives: DSN passwords, passwords in SQL text and in
//! connection strings quoted inside it, and webhook URLs.
//!
//! Masking parses what it masks (libpq's `key=value` quoting, connection URIs, SQL literals,
//! comments and dollar quotes) instead of matching one pattern, because a password may hold any
//! character: `/`, `?`, `@`, `#`, quotes, spaces. When the text is ambiguous or cut short, more
//! is masked, never less.

mod sql;

pub use sql::redact_sql;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// A DSN with its password replaced by `***`, in URI or `key=value` form.
pub fn redact_dsn(dsn: &str) -> String {
    if uri_scheme_end(dsn.trim_start()).is_some() {
        redact_uri(dsn)
    } else {
        redact_conninfo(dsn)
    }
}

/// Whether a connection option names a secret (`password`, `sslpassword`, `PASSWORD`, ...).
/// libpq's keys are case-sensitive, but a misspelt key is still the user's password.
fn is_secret_key(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    k.contains("password") || k == "passwd" || k == "pwd"
}

/// End of `scheme://` at the start of `s` (a scheme of letters, digits, `+`, `-`, `.`).
fn uri_scheme_end(s: &str) -> Option<usize> {
    let pos = s.find("://")?;
    let scheme = &s[..pos];
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))).then_some(pos + 3)
}

/// `scheme://user:password@host/db?password=...`: the user-info password and every secret
/// query parameter are masked. The user info ends at the *last* `@`, so a password holding
/// `/`, `?`, `#` or `@` (unencoded, as people write them) is masked whole.
fn redact_uri(uri: &str) -> String {
    let lead = uri.len() - uri.trim_start().len();
    let Some(scheme_end) = uri_scheme_end(&uri[lead..]).map(|e| e + lead) else {
        return redact_conninfo(uri);
    };
    let rest = &uri[scheme_end..];
    let mut out = String::from(&uri[..scheme_end]);
    let after_auth = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_auth.find('?') {
        Some(q) => {
            out.push_str(&after_auth[..=q]);
            out.push_str(&redact_query(&after_auth[q + 1..]));
        }
        None => out.push_str(after_auth),
    }
    out
}

/// `a=1&password=x&b=2` with secret values masked. A secret value runs to the next `&` that
/// starts another `key=`, so an unencoded `&` inside a password does not end it early.
fn redact_query(query: &str) -> String {
    let mut out = String::new();
    let mut rest = query;
    while !rest.is_empty() {
        let end = rest.find('&').unwrap_or(rest.len());
        let (key, has_value) = match rest[..end].find('=') {
            Some(eq) => (&rest[..eq], true),
            None => (&rest[..end], false),
        };
        let decoded = percent_decode(key);
        if has_value && is_secret_key(&decoded) {
            out.push_str(key);
            out.push('=');
            out.push_str(MASK);
            let mut cut = end;
            while cut < rest.len() && !starts_with_param(&rest[cut + 1..]) {
                cut = rest[cut + 1..]
                    .find('&')
                    .map_or(rest.len(), |n| cut + 1 + n);
            }
            rest = &rest[cut..];
        } else {
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        if let Some(r) = rest.strip_prefix('&') {
            out.push('&');
            rest = r;
        }
    }
    out
}

/// Whether `s` begins with `name=`, a query parameter.
fn starts_with_param(s: &str) -> bool {
    let name_len = s
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'%')
        .count();
    name_len > 0 && s.as_bytes().get(name_len) == Some(&b'=')
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's `key = value ...` form: values are bare (a backslash escapes the next character) or
/// single-quoted (with `\'` and `\\`). A secret value is masked; an unterminated one, or a
/// secret key with no `=`, masks the rest of the string.
fn redact_conninfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let secret = is_secret_key(&s[key_start..i]);
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            if secret {
                out.push_str(&s[copied..i]);
                out.push_str(MASK);
                return out;
            }
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let value_start = i;
        i = conninfo_value_end(b, i);
        if secret {
            out.push_str(&s[copied..value_start]);
            out.push_str(MASK);
            copied = i;
        }
    }
    out.push_str(&s[copied..]);
    out
}

/// Where a conninfo value starting at `i` ends (just past its closing quote, if quoted).
fn conninfo_value_end(b: &[u8], mut i: usize) -> usize {
    if b.get(i) == Some(&b'\'') {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'\'' => return i + 1,
                _ => i += 1,
            }
        }
        return b.len();
    }
    while i < b.len() && !b[i].is_ascii_whitespace() {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i.min(b.len())
}

/// Free text (an error message, an application name, the inside of a SQL literal or comment):
/// connection URIs lose their passwords, `password=value` (conninfo, a query string, an
/// environment assignment such as `PGPASSWORD=x`) and `password 'value'` lose their values.
pub fn redact_text(s: &str) -> String {
    let masked = redact_text_uris(s);
    redact_text_assignments(&masked)
}

fn redact_text_uris(s: &str) -> String {
    if !s.contains("://") {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(rel) = s[search..].find("://") {
        let sep = search + rel;
        let mut start = sep;
        while start > copied
            && (b[start - 1].is_ascii_alphanumeric() || b"+-.".contains(&b[start - 1]))
        {
            start -= 1;
        }
        let end = s[sep..]
            .find(|c: char| c.is_whitespace() || "'\"`<>".contains(c))
            .map_or(s.len(), |n| sep + n);
        if start < sep && b[start].is_ascii_alphabetic() {
            out.push_str(&s[copied..start]);
            out.push_str(&redact_uri(&s[start..end]));
            copied = end;
        }
        search = end.max(sep + 3);
    }
    out.push_str(&s[copied..]);
    out
}

fn redact_text_assignments(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let b = s.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(rel) = lower[i..].find("passw") {
        let start = i + rel;
        let word_end = start
            + lower[start..]
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
        let word = &lower[start..word_end];
        if !(word.starts_with("password") || word == "passwd") {
            i = word_end.max(start + 1);
            continue;
        }
        let mut j = skip_blanks(b, word_end);
        // A quoted key, as in JSON: `"password": "x"`.
        if matches!(b.get(j), Some(b'"') | Some(b'\'')) {
            let k = skip_blanks(b, j + 1);
            if matches!(b.get(k), Some(b'=') | Some(b':')) {
                j = k;
            }
        }
        let value = match b.get(j) {
            Some(b'=') | Some(b':') => {
                j = skip_blanks(b, j + 1);
                Some((j, text_value_end(b, j)))
            }
            Some(b'\'') | Some(b'"') => Some((j, text_value_end(b, j))),
            Some(b'E') | Some(b'e') if b.get(j + 1) == Some(&b'\'') => {
                Some((j, text_value_end(b, j + 1)))
            }
            _ => None,
        };
        match value {
            Some((v_start, v_end)) if v_end > v_start => {
                out.push_str(&s[copied..v_start]);
                out.push_str(MASK);
                copied = v_end;
                i = v_end;
            }
            _ => i = word_end,
        }
    }
    out.push_str(&s[copied..]);
    out
}

fn skip_blanks(b: &[u8], mut j: usize) -> usize {
    while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
        j += 1;
    }
    j
}

/// End of a value in free text: a quoted one (`'`/`"`, doubled or backslash-escaped quotes)
/// to its closing quote, else up to whitespace or `&`, `;`, `,`, `)`.
fn text_value_end(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(&q) if q == b'\'' || q == b'"' => {
            let mut j = i + 1;
            while j < b.len() {
                if b[j] == b'\\' {
                    j += 2;
                } else if b[j] == q {
                    if b.get(j + 1) == Some(&q) {
                        j += 2;
                    } else {
                        return j + 1;
                    }
                } else {
                    j += 1;
                }
            }
            b.len()
        }
        _ => {
            let mut j = i;
            while j < b.len() && !b[j].is_ascii_whitespace() && !b"&;,)".contains(&b[j]) {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j.min(b.len())
        }
    }
}

/// `host:port/dbname` of a parsed config, with no credentials.
pub fn endpoint(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", cfg.get_dbname().unwrap_or("postgres"))
}

/// A webhook URL reduced to scheme and host: the path of a Slack or Discord URL is its token.
pub fn url_host(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "(invalid url)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_url_passwords() {
        let r = redact_dsn("postgres://app:hunter2@10.0.0.5:5432/orders");
        assert_eq!(r, "postgres://app:***@10.0.0.5:5432/orders");
    }

    #[test]
    fn hides_keyvalue_passwords_quoted_or_not() {
        let r = redact_dsn("host=db password=hunter2 user=app");
        assert_eq!(r, "host=db password=*** user=app");
        let r = redact_dsn("host=db password = 'hun ter\\'2' user=app");
        assert_eq!(r, "host=db password = *** user=app");
        let r = redact_dsn("host=db PASSWORD=hunter2 sslpassword='a b' port=5");
        assert_eq!(r, "host=db PASSWORD=*** sslpassword=*** port=5");
        let r = redact_dsn("host=db password='never closed user=app");
        assert_eq!(r, "host=db password=***");
        assert_eq!(redact_dsn("host=db password"), "host=db password***");
    }

    #[test]
    fn hides_query_passwords() {
        let r = redact_dsn("postgres://db/orders?password=hunter2&sslmode=disable");
        assert_eq!(r, "postgres://db/orders?password=***&sslmode=disable");
        let r = redact_dsn("postgres://db/orders?PASSWORD=a&b&sslmode=disable");
        assert_eq!(r, "postgres://db/orders?PASSWORD=***&sslmode=disable");
        let r = redact_dsn("postgres://db/orders?pass%77ord=hunter2");
        assert!(!r.contains("hunter2"), "{r}");
    }

    #[test]
    fn a_password_holding_uri_delimiters_is_masked_whole() {
        for pw in ["s3cr/t?x", "a#b", "p@ss@w", "1234/x", "x?y=z&password=q"] {
            for tail in ["@db:5432/orders", "@db:99999/orders?sslmode=off"] {
                let dsn = format!("postgresql://app:{pw}{tail}");
                let r = redact_dsn(&dsn);
                assert_eq!(r, format!("postgresql://app:***{tail}"), "{dsn}");
            }
        }
    }

    #[test]
    fn free_text_loses_passwords_but_keeps_the_rest() {
        assert_eq!(
            redact_text("could not connect: host=h password=sekrit port=1"),
            "could not connect: host=h password=*** port=1"
        );
        assert_eq!(
            redact_text("app postgres://u:se/cr?et@h/db end"),
            "app postgres://u:***@h/db end"
        );
        assert_eq!(
            redact_text("PGPASSWORD=x pg_dump"),
            "PGPASSWORD=*** pg_dump"
        );
        assert_eq!(
            redact_text("no secrets: passwordless"),
            "no secrets: passwordless"
        );
        assert_eq!(
            redact_text(r#"{"password": "se cret", "user": "u"}"#),
            r#"{"password": ***, "user": "u"}"#
        );
        assert_eq!(
            redact_text("password authentication failed for user \"app\""),
            "password authentication failed for user \"app\""
        );
    }

    #[test]
    fn webhook_only_shows_host() {
        assert_eq!(
            url_host("https://hooks.slack.com/services/T/B/secret"),
            "https://hooks.slack.com"
        );
    }

    #[test]
    fn a_dsn_the_url_parser_rejects_still_hides_its_password() {
        assert_eq!(
            redact_dsn("postgres://u:s3cret@h:99999/db"),
            "postgres://u:***@h:99999/db"
        );
        assert_eq!(
            redact_dsn("postgresql://u:p@ss@w@h:x/db"),
            "postgresql://u:***@h:x/db"
        );
    }
}
