//! `cluster:`: several daemons sharing one fleet through etcd (each target owned by one live
//! daemon, taken over when it dies). Without this section the daemon runs alone, as before.

use super::duration::{checked as duration, format_duration, RawDuration};
use super::error::Problems;
pub use super::etcd_access::{ClientIdentity, EtcdAuth, EtcdTls};
use super::etcd_access::{RawEtcdAuth, RawEtcdTls};
use super::expand::VarSource;
use serde::Deserialize;
use std::time::Duration;

/// `cluster:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// etcd client URLs (`http://etcd1:2379`, or `https://` with `tls`); one is enough, all
    /// are better.
    pub etcd: Vec<String>,
    /// Key prefix shared by the daemons of one fleet (default `sentinel-remedy`).
    pub prefix: Option<String>,
    /// This daemon's member id (default: the host name); unique per daemon.
    pub member: Option<String>,
    /// Membership lease TTL: a daemon silent this long loses its targets (default 5s, >= 2s).
    pub ttl: Option<RawDuration>,
    /// Targets handed to a joining daemon per second (default 2).
    pub handoffs_per_second: Option<u32>,
    /// A free target is claimed after the claimant's rank times this (default 250ms).
    pub stagger: Option<RawDuration>,
    /// TLS to etcd (https endpoints): the CA, and a client certificate if etcd asks for one.
    pub tls: Option<RawEtcdTls>,
    /// etcd user/password authentication (`etcdctl auth enable`).
    pub auth: Option<RawEtcdAuth>,
}

/// Validated `cluster:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub etcd: Vec<String>,
    pub prefix: String,
    pub member: String,
    pub ttl: Duration,
    pub handoffs_per_second: u32,
    pub stagger: Duration,
    pub tls: Option<EtcdTls>,
    pub auth: Option<EtcdAuth>,
}

impl ClusterConfig {
    /// How long before the lease could expire a daemon stops remediating: a third of the TTL,
    /// at least 500ms, so a keep-alive in flight or a clock tick never lets two act at once.
    pub fn fence_margin(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(500))
    }
}

/// This host's name, the default member id.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sentinel".into())
}

/// Validates `cluster:`; None when it cannot be used (the problems say why).
pub(crate) fn build_cluster(
    c: RawCluster,
    vars: &VarSource,
    problems: &mut Problems,
) -> Option<ClusterConfig> {
    let mut ok = endpoints_ok(&c.etcd, c.tls.is_some(), problems);
    let tls = c.tls.and_then(|t| {
        let built = super::etcd_access::build_tls(t, problems);
        ok &= built.is_some();
        built
    });
    let auth = c.auth.and_then(|a| {
        let built = super::etcd_access::build_auth(a, vars, problems);
        ok &= built.is_some();
        built
    });
    let prefix = c.prefix.unwrap_or_else(|| "sentinel-remedy".into());
    let prefix = prefix.trim_matches('/').to_string();
    if prefix.is_empty() || prefix.contains(char::is_whitespace) {
        ok = false;
        problems.push(
            "cluster.prefix",
            format!("'{prefix}' is not a usable key prefix"),
            "use a word such as sentinel-remedy (no spaces)",
        );
    }
    let member = c.member.unwrap_or_else(host_name);
    if crate::ids::MemberId::parse(&member).is_err() {
        ok = false;
        problems.push(
            "cluster.member",
            format!("'{member}' is not a usable member id"),
            "use 1 to 253 characters without '/', spaces or control characters, unique per daemon (default: the host name)",
        );
    }
    let handoffs_per_second = c.handoffs_per_second.unwrap_or(2);
    if handoffs_per_second == 0 {
        ok = false;
        problems.push(
            "cluster.handoffs_per_second",
            "0 would never give a joining daemon its share",
            "use 1 or more (default 2)",
        );
    }
    let (ttl, stagger) = timing(c.ttl.as_ref(), c.stagger.as_ref(), problems)?;
    ok.then_some(ClusterConfig {
        etcd: c.etcd,
        prefix,
        member,
        ttl,
        handoffs_per_second,
        stagger,
        tls,
        auth,
    })
}

/// At least one etcd URL, each http(s)://host[:port]: https exactly when `cluster.tls` is
/// given (etcd-client would refuse the mix, or talk TLS to nobody).
fn endpoints_ok(etcd: &[String], tls: bool, problems: &mut Problems) -> bool {
    if etcd.is_empty() {
        problems.push(
            "cluster.etcd",
            "no etcd endpoint is given",
            "list the etcd client URLs, e.g. [\"http://etcd1:2379\"], or remove `cluster:` to run one daemon alone",
        );
        return false;
    }
    let mut ok = true;
    for (i, e) in etcd.iter().enumerate() {
        let good = url::Url::parse(e).ok().filter(|u| u.host_str().is_some());
        match good.as_ref().map(url::Url::scheme) {
            Some("http") if tls => {
                ok = false;
                problems.push(
                    "cluster.etcd",
                    format!("entry {i}, '{e}', is plain http while cluster.tls is given"),
                    "use https://host:2379 for every endpoint (or remove cluster.tls)",
                );
            }
            Some("https") if !tls => {
                ok = false;
                problems.push(
                    "cluster.etcd",
                    format!("entry {i}, '{e}', is https but cluster.tls is not given"),
                    "add cluster.tls with ca_file: the CA that signed etcd's certificate",
                );
            }
            Some("http" | "https") => {}
            _ => {
                ok = false;
                problems.push(
                    "cluster.etcd",
                    format!("entry {i}, '{e}', is not an etcd client URL"),
                    "use http://host:2379",
                );
            }
        }
    }
    ok
}

/// The TTL (at least etcd's 2 s) and the claim stagger (a fraction of it).
fn timing(
    ttl: Option<&RawDuration>,
    stagger: Option<&RawDuration>,
    problems: &mut Problems,
) -> Option<(Duration, Duration)> {
    let ttl = ttl
        .and_then(|d| duration(d, "cluster.ttl", problems))
        .unwrap_or(Duration::from_secs(5));
    let stagger = stagger
        .and_then(|d| duration(d, "cluster.stagger", problems))
        .unwrap_or(Duration::from_millis(250));
    // etcd leases count whole seconds: fencing must use the lease etcd really grants.
    let ttl = Duration::from_secs(ttl.as_secs());
    let mut ok = true;
    if ttl < Duration::from_secs(2) {
        ok = false;
        problems.push(
            "cluster.ttl",
            format!(
                "{} is shorter than etcd can keep a lease",
                format_duration(ttl)
            ),
            "use at least 2s (default 5s)",
        );
    }
    if stagger > ttl {
        ok = false;
        problems.push(
            "cluster.stagger",
            format!(
                "{} is longer than the ttl ({})",
                format_duration(stagger),
                format_duration(ttl)
            ),
            "use a fraction of the ttl (default 250ms)",
        );
    }
    ok.then_some((ttl, stagger))
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, Source, VarSource};

    fn load(cluster: &str) -> Result<crate::config::Registry, Vec<String>> {
        let text = format!(
            "cluster:\n{cluster}\ntargets:\n  - name: db\n    dsn: postgres://u@127.0.0.1:5432/postgres\n"
        );
        load_str(
            &text,
            Source::Generated("test".into()),
            &VarSource::fixed(Default::default()),
        )
        .map_err(|e| e.problems().iter().map(|p| p.path.clone()).collect())
    }

    #[test]
    fn a_cluster_section_gets_its_defaults() {
        let r = load("  etcd: [\"http://etcd1:2379\"]\n  member: node-a").expect("valid");
        let c = r.cluster.expect("cluster");
        assert_eq!(c.prefix, "sentinel-remedy");
        assert_eq!(c.member, "node-a");
        assert_eq!(c.ttl, std::time::Duration::from_secs(5));
        assert_eq!(c.handoffs_per_second, 2);
    }

    #[test]
    fn every_bad_key_is_named() {
        let bad = load(
            "  etcd: [\"etcd1:2379\", \"ftp://x\"]\n  ttl: 1s\n  member: \"a/b\"\n  handoffs_per_second: 0",
        )
        .expect_err("invalid");
        assert_eq!(bad.iter().filter(|p| *p == "cluster.etcd").count(), 2);
        for key in [
            "cluster.ttl",
            "cluster.member",
            "cluster.handoffs_per_second",
        ] {
            assert!(bad.iter().any(|p| p == key), "{key} not named in {bad:?}");
        }
        assert!(load("  etcd: []").is_err());
        assert!(
            load("  etcd: [\"https://etcd1:2379\"]").is_err(),
            "https without cluster.tls is refused, not tried without a CA"
        );
    }

    #[test]
    fn tls_and_auth_settings_are_checked_at_load_and_each_problem_names_its_key() {
        let bad = load(
            "  etcd: [\"https://e:2379\", \"http://f:2379\"]\n  tls:\n    cert_file: /c.pem\n    server_name: \"not a name\"\n  auth:\n    user: s\n    password_env: A\n    password_file: /p",
        )
        .expect_err("invalid");
        for key in [
            "cluster.etcd",
            "cluster.tls.ca_file",
            "cluster.tls",
            "cluster.tls.server_name",
            "cluster.auth",
        ] {
            assert!(bad.iter().any(|p| p == key), "{key} not named in {bad:?}");
        }
        let bad = load(
            "  etcd: [\"http://e:2379\"]\n  auth:\n    user: s\n    password_file: relative/pw",
        )
        .expect_err("invalid");
        assert_eq!(bad, ["cluster.auth.password_file"]);
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let bad = load("  etcd: [\"http://e:2379\"]\n  colour: blue").expect_err("invalid");
        assert!(bad.iter().any(|p| p.starts_with("cluster")), "{bad:?}");
    }
}
