//! Keeps secrets out of logs, alerts and archives: DSN passwords and webhook URLs.

/// A DSN with its password replaced by `***`, in URL or `key=value` form.
pub fn redact_dsn(dsn: &str) -> String {
    if let Ok(mut u) = url::Url::parse(dsn) {
        if u.password().is_some() {
            let _ = u.set_password(Some("***"));
        }
        let pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        if pairs.iter().any(|(k, _)| k == "password") {
            u.query_pairs_mut().clear();
            for (k, v) in pairs {
                let v = if k == "password" {
                    "***".to_string()
                } else {
                    v
                };
                u.query_pairs_mut().append_pair(&k, &v);
            }
        }
        return u.to_string();
    }
    if let Some(r) = redact_unparsable_url(dsn) {
        return r;
    }
    // key=value form: replace the value after `password=`, quoted or not.
    let mut out = String::new();
    let mut rest = dsn;
    while let Some(pos) = rest.find("password") {
        let (head, tail) = rest.split_at(pos);
        out.push_str(head);
        let after_key = &tail["password".len()..];
        let trimmed = after_key.trim_start();
        if let Some(val) = trimmed.strip_prefix('=') {
            let val = val.trim_start();
            out.push_str("password=***");
            rest = if let Some(q) = val.strip_prefix('\'') {
                let mut end = q.len();
                let mut esc = false;
                for (i, c) in q.char_indices() {
                    if esc {
                        esc = false;
                        continue;
                    }
                    if c == '\\' {
                        esc = true;
                        continue;
                    }
                    if c == '\'' {
                        end = i + 1;
                        break;
                    }
                }
                &q[end.min(q.len())..]
            } else {
                let end = val.find(char::is_whitespace).unwrap_or(val.len());
                &val[end..]
            };
        } else {
            out.push_str("password");
            rest = after_key;
        }
    }
    out.push_str(rest);
    out
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
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("app:***@10.0.0.5"), "{r}");
    }

    #[test]
    fn hides_keyvalue_passwords_quoted_or_not() {
        let r = redact_dsn("host=db password=hunter2 user=app");
        assert_eq!(r, "host=db password=*** user=app");
        let r = redact_dsn("host=db password = 'hun ter\\'2' user=app");
        assert!(!r.contains("hun"), "{r}");
        assert!(r.ends_with(" user=app"), "{r}");
    }

    #[test]
    fn hides_query_passwords() {
        let r = redact_dsn("postgres://db/orders?password=hunter2&sslmode=disable");
        assert!(
            !r.contains("hunter2") && r.contains("sslmode=disable"),
            "{r}"
        );
    }

    #[test]
    fn webhook_only_shows_host() {
        assert_eq!(
            url_host("https://hooks.slack.com/services/T/B/secret"),
            "https://hooks.slack.com"
        );
    }
}

/// A URL-shaped DSN that the URL parser rejects (a bad port, say) still hides its password:
/// everything between the first ':' of the user info and the last '@' is masked.
fn redact_unparsable_url(dsn: &str) -> Option<String> {
    let scheme_end = dsn.find("://")? + 3;
    let rest = &dsn[scheme_end..];
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let at = rest[..auth_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(format!(
        "{}{}:***{}",
        &dsn[..scheme_end],
        &rest[..colon],
        &rest[at..]
    ))
}

#[cfg(test)]
mod unparsable_tests {
    #[test]
    fn a_dsn_the_url_parser_rejects_still_hides_its_password() {
        assert_eq!(
            super::redact_dsn("postgres://u:s3cret@h:99999/db"),
            "postgres://u:***@h:99999/db"
        );
        assert_eq!(
            super::redact_dsn("postgresql://u:p@ss@w@h:x/db"),
            "postgresql://u:***@h:x/db"
        );
    }
}
