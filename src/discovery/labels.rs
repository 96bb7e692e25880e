//! Container labels → a target, validated by the same code as a target written in the
//! registry, so a label has exactly the meaning of the key it is named after
//! (`{ns}.probe.interval` is `targets[].probe.interval`). Pure: no I/O.
//!
//! Who writes a label: the image's author (labels an image carries are inherited by every
//! container of it) or whoever starts the container. Neither is the operator, and the daemon
//! runs as root, so a label never chooses what the daemon reveals, where it connects, or what
//! SQL it runs:
//! - the login is one of the operator's `discovery.docker.credentials`, picked by name
//!   (`{ns}.credentials`), and only by the containers the credential allows;
//! - the server is reached at the container's own address (only its port and database may be
//!   labelled), and no label value is expanded (`${VAR}` stays text);
//! - the probe runs the operator's query (`defaults.probe`), never one from a label;
//! - every number a label sets lies within `discovery.docker.limits`.
//!
//! Labels inherited from the image are dropped before any of this unless the operator trusts
//! them (`trust_image_labels`): see [`own_labels`].

use crate::config::credentials::{Credential, DEFAULT_CREDENTIAL};
use crate::config::duration::{format_duration, RawDuration};
use crate::config::error::Problems;
use crate::config::limits::Bound;
use crate::config::raw::*;
use crate::config::{DiscoveryMode, DockerDiscovery, Problem, TargetConfig, TargetDefaults};
use std::collections::BTreeMap;
use std::time::Duration;

/// What discovery knows about one container, from the Engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerFacts {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    /// The labels that count: without those inherited from the image unless trusted.
    pub labels: BTreeMap<String, String>,
    /// `PGDATA` from the container's environment.
    pub pgdata: Option<String>,
    /// The container's command (`postgres -c log_directory=...`).
    pub cmd: Vec<String>,
    /// `log_directory` as the server's configuration files inside the container set it.
    pub conf_log_directory: Option<String>,
    /// Host name or address the daemon reaches the server at; None: none found.
    pub address: Option<String>,
    /// When the container was created: of two claiming one target name, the older keeps it.
    pub created: Option<chrono::DateTime<chrono::Utc>>,
}

/// Labels this version understands after `{namespace}.`; `policy.<class>` also.
pub const KNOWN: &[&str] = &[
    "enable",
    "name",
    "credentials",
    "database",
    "port",
    "network",
    "heal",
    "heal.stop_timeout",
    "probe.interval",
    "probe.timeout",
    "probe.failure_threshold",
    "restart_budget.max_restarts",
    "restart_budget.window",
    "restart_budget.backoff",
    "restart_budget.backoff_max",
    "restart_budget.backoff_reset",
    "recovery_timeout",
    "forensics.paths",
    "forensics.log_tail",
];

/// Labels earlier versions took and this one refuses, each with what replaces it: they let a
/// label choose a secret, a server or SQL.
const REMOVED: &[(&str, &str)] = &[
    ("dsn", "the daemon reaches the container at its own address; use the port and database labels, and {ns}.credentials=<name> for the login"),
    ("user", "the user comes from the operator's credential; pick one with {ns}.credentials=<name> (discovery.docker.credentials)"),
    ("password_env", "passwords come from the operator's credentials; pick one with {ns}.credentials=<name> (discovery.docker.credentials.<name>.password_env)"),
    ("password_file", "passwords come from the operator's credentials; pick one with {ns}.credentials=<name> (discovery.docker.credentials.<name>.password_file beneath secrets_dir)"),
    ("probe.query", "the probe runs the operator's query (defaults.probe.query); remove the label"),
    ("probe.expect", "the probe's expected answer is the operator's (defaults.probe.expect); remove the label"),
    ("probe.role", "the role check is the operator's (defaults.probe.role); remove the label"),
];

/// The default data directory of the official image and of the project's image.
const DEFAULT_PGDATA: &str = "/var/lib/postgresql/data";

/// The container's own labels: those it inherits from its image unchanged (same key, same
/// value) are dropped, since an image's author must not opt every container of it in nor
/// tune it. A label given again at `docker run` with the image's value cannot be told apart
/// and is dropped too (the operator's `trust_image_labels: true` keeps them all).
pub fn own_labels(
    container: BTreeMap<String, String>,
    image: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    container
        .into_iter()
        .filter(|(k, v)| image.get(k) != Some(v))
        .collect()
}

/// Whether the container is one discovery watches.
pub fn selected(f: &ContainerFacts, cfg: &DockerDiscovery) -> bool {
    let enable = f
        .labels
        .get(&format!("{}.enable", cfg.namespace))
        .map(|v| v.trim().to_ascii_lowercase());
    match cfg.mode {
        DiscoveryMode::Label => enable.as_deref() == Some("true"),
        DiscoveryMode::All => enable.as_deref() != Some("false") && runs_postgres(f),
    }
}

/// A PostgreSQL image: by its name, or by the PGDATA every postgres image sets. (An image's
/// ENV alone may select a container in `all` mode: the operator asked for every PostgreSQL
/// container, and being selected grants nothing a label could not: the operator's default
/// credential, the container's own address, the operator's probe.)
fn runs_postgres(f: &ContainerFacts) -> bool {
    f.image.to_ascii_lowercase().contains("postgres") || f.pgdata.is_some()
}

/// The labels under the namespace, for `status` (a `dsn` label's password redacted).
pub fn shown_labels(f: &ContainerFacts, ns: &str) -> BTreeMap<String, String> {
    let prefix = format!("{ns}.");
    f.labels
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| {
            let v = if k.ends_with(".dsn") {
                crate::redact::redact_dsn(v)
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// The container's labels under the namespace, read as the values of registry keys.
struct Labels<'a> {
    f: &'a ContainerFacts,
    ns: &'a str,
}

impl Labels<'_> {
    /// The label `{ns}.{key}`, trimmed.
    fn get(&self, key: &str) -> Option<String> {
        self.f
            .labels
            .get(&format!("{}.{key}", self.ns))
            .map(|v| v.trim().to_string())
    }

    /// A duration label, left to the shared validation to parse and report.
    fn dur(&self, key: &str) -> Option<RawDuration> {
        self.get(key).map(RawDuration)
    }

    /// A whole-number label; anything else is a problem, reported here.
    fn int(&self, key: &str, problems: &mut Problems) -> Option<i64> {
        self.get(key).and_then(|v| match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push(
                    format!("{}.{key}", self.ns),
                    format!("'{v}' is not a whole number"),
                    "give a number, e.g. 3",
                );
                None
            }
        })
    }
}

/// Builds the container's target; Err lists every problem, each naming its label and fix.
pub fn target(
    f: &ContainerFacts,
    cfg: &DockerDiscovery,
    defaults: &TargetDefaults,
) -> Result<TargetConfig, Vec<Problem>> {
    let ns = cfg.namespace.as_str();
    let l = Labels { f, ns };
    let mut problems = Problems::default();
    // Problems are listed in the order of these steps: unknown labels, the DSN, the heal,
    // then the numbers and their bounds.
    let policy = policy_labels(f, ns, &mut problems);
    let dsn = dsn(&l, cfg, &mut problems);
    let heal = heal(&l, &mut problems);
    let forensics = forensics(&l, &mut problems);
    let raw = RawTarget {
        name: l.get("name").unwrap_or_else(|| f.name.clone()),
        dsn: dsn.unwrap_or_default(),
        probe: Some(probe(&l, &mut problems)),
        restart_budget: Some(restart_budget(&l, &mut problems)),
        recovery_timeout: l.dur("recovery_timeout"),
        forensics: Some(forensics),
        heal,
        process: None,
        policy: (!policy.is_empty()).then_some(policy),
        recorder: None,
    };
    let had = problems.0.len();
    let built = crate::config::build_target(&raw, ns, defaults, &mut problems);
    name_labels(&mut problems.0[had..], ns);
    if let Some(t) = &built {
        within_limits(&l, t, cfg, defaults, &mut problems);
    }
    match built {
        Some(t) if problems.0.is_empty() => Ok(t),
        _ => Err(problems.0),
    }
}

/// The `policy.<class>` labels by class; a removed label is a problem saying what replaces
/// it, and any other label this version does not know is a problem (a misspelt label would
/// otherwise be silently ignored).
fn policy_labels(
    f: &ContainerFacts,
    ns: &str,
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    let prefix = format!("{ns}.");
    let mut policy = BTreeMap::new();
    for (k, v) in &f.labels {
        let Some(key) = k.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(class) = key.strip_prefix("policy.") {
            policy.insert(class.to_string(), v.clone());
        } else if let Some((_, instead)) = REMOVED.iter().find(|(r, _)| *r == key) {
            problems.push(
                k,
                "this label is no longer taken: a label may not choose a login, a server or SQL",
                instead.replace("{ns}", ns),
            );
        } else if !KNOWN.contains(&key) {
            problems.push(
                k,
                "unknown label",
                format!(
                    "remove it or correct its spelling; known labels are {ns}.{{{}}} and {ns}.policy.<class>",
                    KNOWN.join(",")
                ),
            );
        }
    }
    policy
}

/// The heal: restart the container itself unless the `heal` label says false.
fn heal(l: &Labels, problems: &mut Problems) -> Option<RawHeal> {
    match l.get("heal").map(|h| h.to_ascii_lowercase()).as_deref() {
        None | Some("true") => Some(RawHeal {
            command: None,
            timeout: None,
            stop_timeout: None,
            stop_command: None,
            env: Default::default(),
            docker: Some(RawDockerHeal {
                container: l.f.name.clone(),
                stop_timeout: l.dur("heal.stop_timeout"),
            }),
            compose: None,
        }),
        Some("false") => None,
        Some(other) => {
            problems.push(
                format!("{}.heal", l.ns),
                format!("'{other}' is not true or false"),
                "use false to keep this container down on purpose (alert only), or remove the label",
            );
            None
        }
    }
}

/// The evidence copied from the container: the server's own files, plus any the
/// `forensics.paths` label adds (paths inside the container itself).
fn forensics(l: &Labels, problems: &mut Problems) -> RawForensics {
    let mut paths = evidence_paths(l.f);
    if let Some(extra) = l.get("forensics.paths") {
        paths.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from),
        );
    }
    let log_tail = l
        .int("forensics.log_tail", problems)
        .and_then(|n| match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push(
                    format!("{}.forensics.log_tail", l.ns),
                    format!("{n} is not a number of lines"),
                    "give 0 or more lines, e.g. 1000",
                );
                None
            }
        });
    RawForensics {
        files: vec![],
        docker: Some(RawDockerForensics {
            container: Some(l.f.name.clone()),
            project: None,
            service: None,
            paths,
            log_tail,
        }),
    }
}

/// The `probe.*` labels: timing only; the query, its expected answer and the role check are
/// the operator's.
fn probe(l: &Labels, problems: &mut Problems) -> RawProbe {
    RawProbe {
        query: None,
        interval: l.dur("probe.interval"),
        timeout: l.dur("probe.timeout"),
        failure_threshold: l.int("probe.failure_threshold", problems),
        expect: None,
        role: None,
    }
}

/// The `restart_budget.*` labels.
fn restart_budget(l: &Labels, problems: &mut Problems) -> RawBudget {
    RawBudget {
        max_restarts: l.int("restart_budget.max_restarts", problems),
        window: l.dur("restart_budget.window"),
        backoff: l.dur("restart_budget.backoff"),
        backoff_max: l.dur("restart_budget.backoff_max"),
        backoff_reset: l.dur("restart_budget.backoff_reset"),
    }
}

/// The shared validation names YAML keys; points them at the labels a user writes.
fn name_labels(problems: &mut [Problem], ns: &str) {
    for p in problems {
        p.path = p
            .path
            .replace(
                &format!("{ns}.heal.docker.stop_timeout"),
                &format!("{ns}.heal.stop_timeout"),
            )
            .replace(
                &format!("{ns}.forensics.docker.paths"),
                &format!("{ns}.forensics.paths"),
            );
    }
}

/// A value a label set and the bound it must lie in, shown the way the label is written.
trait Shown: PartialOrd + Copy {
    fn shown(self) -> String;
}

impl Shown for Duration {
    fn shown(self) -> String {
        format_duration(self)
    }
}

impl Shown for u32 {
    fn shown(self) -> String {
        self.to_string()
    }
}

/// Every number a label set, held to the operator's `discovery.docker.limits`: out of
/// bounds is a problem naming the label and the bound.
fn within_limits(
    l: &Labels,
    t: &TargetConfig,
    cfg: &DockerDiscovery,
    defaults: &TargetDefaults,
    problems: &mut Problems,
) {
    let lim = &cfg.limits;
    let (p, b) = (&t.probe, &t.budget);
    let mut d = |key: &str, limit: &str, v: Duration, bound: Bound<Duration>| {
        bounded(l, key, limit, v, bound, problems)
    };
    d(
        "probe.interval",
        "probe_interval",
        p.interval,
        lim.probe_interval,
    );
    d(
        "probe.timeout",
        "probe_timeout",
        p.timeout,
        lim.probe_timeout,
    );
    d(
        "restart_budget.window",
        "window",
        b.window,
        lim.window(defaults),
    );
    d("restart_budget.backoff", "backoff", b.backoff, lim.backoff);
    d(
        "restart_budget.backoff_max",
        "backoff_max",
        b.backoff_max,
        lim.backoff_max,
    );
    d(
        "restart_budget.backoff_reset",
        "backoff_reset",
        b.backoff_reset,
        lim.backoff_reset,
    );
    d(
        "recovery_timeout",
        "recovery_timeout",
        t.recovery_timeout,
        lim.recovery_timeout,
    );
    if let Some(crate::config::HealAction::Docker { stop_timeout, .. }) = &t.heal {
        d(
            "heal.stop_timeout",
            "stop_timeout",
            *stop_timeout,
            lim.stop_timeout,
        );
    }
    let mut n = |key: &str, limit: &str, v: u32, bound: Bound<u32>| {
        bounded(l, key, limit, v, bound, problems)
    };
    n(
        "probe.failure_threshold",
        "failure_threshold",
        p.failure_threshold,
        lim.failure_threshold,
    );
    n(
        "restart_budget.max_restarts",
        "max_restarts",
        b.max_restarts,
        lim.max_restarts(defaults),
    );
    if let Some(fx) = &t.forensic_docker {
        n("forensics.log_tail", "log_tail", fx.log_tail, lim.log_tail);
    }
}

/// One label's value against its bound, when the label is given.
fn bounded<T: Shown>(
    l: &Labels,
    key: &str,
    limit: &str,
    v: T,
    bound: Bound<T>,
    problems: &mut Problems,
) {
    if l.get(key).is_none() {
        return;
    }
    let Some((below, at)) = bound.broken_by(v) else {
        return;
    };
    let (side, word) = if below {
        ("min", "below")
    } else {
        ("max", "above")
    };
    problems.push(
        format!("{}.{key}", l.ns),
        format!("{} is {word} the operator's {side} of {}", v.shown(), at.shown()),
        format!(
            "use a value from {} to {}, or have the operator change discovery.docker.limits.{limit}.{side}",
            bound.min.shown(),
            bound.max.shown()
        ),
    );
}

/// The DSN: the container's own address, the port and database labels, and the login of the
/// operator's credential the container picked (or the default one).
fn dsn(l: &Labels, cfg: &DockerDiscovery, problems: &mut Problems) -> Option<String> {
    let (f, ns) = (l.f, l.ns);
    let cred = credential(l, cfg, problems);
    let Some(host) = f.address.clone() else {
        problems.push(
            format!("{ns}.network"),
            format!("container {} has no address of its own on a network the daemon can reach", f.name),
            "attach it to a network the daemon shares (or name one with this label); a container on the host's network has no address of its own: list it in targets instead",
        );
        return None;
    };
    let port = port(l, problems)?;
    let cred = cred?;
    let db = l.get("database").unwrap_or_else(|| cred.user.clone());
    let mut url = url::Url::parse("postgres://localhost").expect("static URL parses");
    if url.set_host(Some(&host)).is_err() {
        problems.push(
            format!("{ns}.network"),
            format!("'{host}' is not a host name or address"),
            "attach the container to a network the daemon shares",
        );
        return None;
    }
    let _ = url.set_port(Some(port));
    let _ = url.set_username(&cred.user);
    let _ = url.set_password(Some(cred.password.expose()));
    url.set_path(&format!("/{db}"));
    // The operator's TLS settings; with a server_name, the certificate is checked against it
    // while the connection goes to the container's address (libpq's host and hostaddr).
    if let Some(name) = &cfg.server_name {
        if url.set_host(Some(name)).is_ok() {
            url.query_pairs_mut().append_pair("hostaddr", &host);
        }
    }
    for (k, v) in &cfg.tls {
        url.query_pairs_mut().append_pair(k, v);
    }
    Some(url.to_string())
}

/// The operator's credential the `credentials` label picks, or the `default` one without
/// the label; one problem naming the label and the fix when there is none or the container
/// may not use it.
fn credential<'a>(
    l: &Labels,
    cfg: &'a DockerDiscovery,
    problems: &mut Problems,
) -> Option<&'a Credential> {
    let label = format!("{}.credentials", l.ns);
    let picked = l.get("credentials");
    let name = picked.clone().unwrap_or_else(|| DEFAULT_CREDENTIAL.into());
    let names = cfg
        .credentials
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let names = if names.is_empty() {
        "none yet".into()
    } else {
        names
    };
    match cfg.credentials.get(&name) {
        None if picked.is_some() => problems.push(
            &label,
            format!("the operator defines no credential named '{name}'"),
            format!("name one of the operator's credentials ({names}), or have the operator add discovery.docker.credentials.{name}"),
        ),
        None => problems.push(
            &label,
            "no credential is picked and the operator defines no default one",
            format!("add the label {label}=<name> naming one of the operator's credentials ({names}), or have the operator define discovery.docker.credentials.default (the sidecar: DISCOVER_USER and DISCOVER_PASSWORD_ENV)"),
        ),
        Some(c) if !c.allows(&l.f.name) => problems.push(
            label,
            format!("container {} may not use the credential '{name}'", l.f.name),
            format!("pick a credential that allows this container, or have the operator add it to discovery.docker.credentials.{name}.containers"),
        ),
        Some(c) => return Some(c),
    }
    None
}

/// The `port` label, 5432 without one.
fn port(l: &Labels, problems: &mut Problems) -> Option<u16> {
    match l.get("port") {
        None => Some(5432),
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                problems.push(format!("{}.port", l.ns), format!("'{p}' is not a port number"), "give the port PostgreSQL listens on inside the container, e.g. 5432 (not a published host port)");
                None
            }
        },
    }
}

/// The server's evidence inside the container, from its PGDATA and the settings given on its
/// command line: the log directory, postgresql.conf and pg_hba.conf.
pub fn evidence_paths(f: &ContainerFacts) -> Vec<String> {
    let pgdata = f
        .pgdata
        .clone()
        .unwrap_or_else(|| DEFAULT_PGDATA.into())
        .trim_end_matches('/')
        .to_string();
    let in_data = |p: String| {
        if p.starts_with('/') {
            p
        } else {
            format!("{pgdata}/{p}")
        }
    };
    vec![
        in_data(
            setting_of(&f.cmd, "log_directory")
                .or_else(|| f.conf_log_directory.clone())
                .unwrap_or_else(|| "log".into()),
        ),
        in_data(setting_of(&f.cmd, "config_file").unwrap_or_else(|| "postgresql.conf".into())),
        in_data(setting_of(&f.cmd, "hba_file").unwrap_or_else(|| "pg_hba.conf".into())),
    ]
}

/// The last value of `name` in a postgresql.conf text (`name = 'value'  # comment`), as
/// PostgreSQL reads it: the last line wins.
pub fn conf_setting(text: &str, name: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with(|c: char| c == '=' || c.is_whitespace()) {
            continue; // another setting whose name starts the same
        }
        let rest = rest.trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
        if rest.is_empty() || rest.starts_with('#') || line.len() == name.len() {
            continue;
        }
        let value = if let Some(q) = rest.strip_prefix('\'') {
            q.split('\'').next().unwrap_or_default().to_string()
        } else {
            rest.split(|c: char| c.is_whitespace() || c == '#')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        found = Some(value);
    }
    found
}

/// A setting given to `postgres` on its command line (`-c k=v`, `-ck=v` or `--k=v`); the last
/// one wins, as in PostgreSQL.
pub fn setting_of(cmd: &[String], name: &str) -> Option<String> {
    let mut found = None;
    let mut it = cmd.iter().peekable();
    while let Some(arg) = it.next() {
        let kv = if arg == "-c" {
            it.next().map(String::as_str)
        } else {
            arg.strip_prefix("--").or_else(|| arg.strip_prefix("-c"))
        };
        if let Some((k, v)) = kv.and_then(|kv| kv.split_once('=')) {
            if k.replace('-', "_") == name {
                found = Some(v.trim_matches(|c| c == '\'' || c == '"').to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VarSource;
    use std::collections::HashMap;

    /// The operator's discovery section (YAML under `docker:`) and defaults, with the daemon's
    /// environment holding ORDERS_PW, PG_PW and AWS_SECRET_ACCESS_KEY.
    fn registry(docker: &str) -> (DockerDiscovery, TargetDefaults) {
        let vars = VarSource::fixed(HashMap::from([
            ("ORDERS_PW".to_string(), "orders-s3cret".to_string()),
            ("PG_PW".to_string(), "pg-s3cret".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                "aws-s3cret".to_string(),
            ),
        ]));
        let r = crate::config::load_str(
            &format!(
                "discovery:\n  docker:\n    namespace: sr\n{docker}\ndefaults:\n  probe: {{ query: SELECT 42, expect: '42' }}\n"
            ),
            crate::config::Source::Generated("test".into()),
            &vars,
        )
        .expect("registry");
        (r.discovery.expect("discovery"), r.defaults)
    }

    fn cfg() -> (DockerDiscovery, TargetDefaults) {
        registry(
            "    credentials:\n      default: { user: postgres, password_env: PG_PW }\n      orders: { user: orders, password_env: ORDERS_PW, containers: [orders-*] }\n",
        )
    }

    fn facts(labels: &[(&str, &str)]) -> ContainerFacts {
        ContainerFacts {
            id: "abc".into(),
            name: "orders-db".into(),
            image: "sentinel-remedy/postgres:15".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pgdata: Some("/pg/data".into()),
            cmd: vec![
                "postgres".into(),
                "-c".into(),
                "log_directory=/pg/logs".into(),
            ],
            address: Some("172.18.0.5".into()),
            conf_log_directory: Some("ignored-the-command-line-wins".into()),
            created: None,
        }
    }

    fn build(labels: &[(&str, &str)]) -> Result<TargetConfig, Vec<Problem>> {
        let (c, d) = cfg();
        target(&facts(labels), &c, &d)
    }

    /// The problems' label paths.
    fn paths(e: &[Problem]) -> Vec<&str> {
        e.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn the_operators_tls_settings_reach_every_discovered_target() {
        let (c, d) = registry(
            "    credentials:\n      default: { user: postgres, password_env: PG_PW }\n    tls: { sslmode: require, channel_binding: require, server_name: db.internal }\n",
        );
        let t = target(&facts(&[("sr.enable", "true")]), &c, &d).unwrap();
        let tls = t.dsn.tls();
        assert_eq!(tls.mode, crate::config::tls::SslMode::Require);
        assert_eq!(
            tls.channel_binding,
            crate::config::tls::ChannelBinding::Require
        );
        let pg = t.dsn.config();
        assert_eq!(
            pg.get_hostaddrs()[0].to_string(),
            "172.18.0.5",
            "connects here"
        );
        assert!(
            matches!(&pg.get_hosts()[0], tokio_postgres::config::Host::Tcp(h) if h == "db.internal"),
            "verifies this name"
        );
    }

    #[test]
    fn labels_make_a_container_target_reached_over_its_network_address() {
        let f = facts(&[
            ("sr.enable", "true"),
            ("sr.credentials", "orders"),
            ("sr.database", "orders"),
            ("sr.probe.interval", "2s"),
            ("sr.policy.timeout", "alert"),
        ]);
        let (c, d) = cfg();
        assert!(selected(&f, &c));
        let t = target(&f, &c, &d).expect("target");
        assert_eq!(t.name, "orders-db");
        assert_eq!(t.dsn.endpoint(), "172.18.0.5:5432/orders");
        assert_eq!(t.dsn.config().get_user(), Some("orders"));
        assert_eq!(t.dsn.config().get_password(), Some(&b"orders-s3cret"[..]));
        assert_eq!(t.probe.interval, std::time::Duration::from_secs(2));
        assert!(
            matches!(&t.heal, Some(crate::config::HealAction::Docker { container: crate::config::ContainerRef::Name(n), .. }) if n == "orders-db")
        );
        let fx = t.forensic_docker.expect("forensics");
        assert_eq!(
            fx.paths,
            [
                "/pg/logs",
                "/pg/data/postgresql.conf",
                "/pg/data/pg_hba.conf"
            ]
        );
        assert!(!format!("{:?}", t.dsn).contains("s3cret"));
    }

    #[test]
    fn rule1_the_login_is_an_operator_credential_picked_by_name_never_a_label_secret() {
        // No label: the operator's default credential.
        let t = build(&[("sr.enable", "true")]).expect("default credential");
        assert_eq!(t.dsn.config().get_user(), Some("postgres"));
        assert_eq!(t.dsn.config().get_password(), Some(&b"pg-s3cret"[..]));
        // An unknown credential, or one this container may not use: one problem each.
        for (labels, says) in [
            (
                vec![("sr.credentials", "AWS_SECRET_ACCESS_KEY")],
                "no credential named",
            ),
            (vec![("sr.credentials", "orders")], "may not use"),
        ] {
            let mut f = facts(&labels);
            f.name = "evil".into();
            let (c, d) = cfg();
            let e = target(&f, &c, &d).unwrap_err();
            assert_eq!(paths(&e), ["sr.credentials"], "{e:?}");
            assert!(e[0].message.contains(says), "{e:?}");
            assert!(e[0].fix.contains("discovery.docker.credentials"), "{e:?}");
        }
        // The labels that named a secret or a server are refused, saying what replaces them.
        for removed in ["password_env", "password_file", "dsn", "user"] {
            let key = format!("sr.{removed}");
            let e = build(&[(&key, "AWS_SECRET_ACCESS_KEY")]).unwrap_err();
            assert_eq!(paths(&e), [key.as_str()], "{e:?}");
            assert!(
                e[0].fix.contains("sr.credentials=<name>") || e[0].fix.contains("credentials"),
                "{e:?}"
            );
        }
        // No default credential and no label: a problem, not a login without a password.
        let (c, d) =
            registry("    credentials:\n      orders: { user: orders, password_env: ORDERS_PW }\n");
        let e = target(&facts(&[]), &c, &d).unwrap_err();
        assert_eq!(paths(&e), ["sr.credentials"]);
        assert!(e[0].fix.contains("credentials.default"), "{e:?}");
        // Nothing from the daemon's environment reaches the target but the credential's own.
        let t = build(&[("sr.database", "${AWS_SECRET_ACCESS_KEY}")]).unwrap();
        assert!(!format!("{:?}", t.dsn.config()).contains("aws-s3cret"));
    }

    #[test]
    fn rule2_the_target_is_the_containers_own_address_and_labels_are_not_expanded() {
        let t = build(&[
            ("sr.port", "5433"),
            ("sr.database", "${AWS_SECRET_ACCESS_KEY}"),
        ])
        .unwrap();
        assert_eq!(t.dsn.endpoint(), "172.18.0.5:5433/${AWS_SECRET_ACCESS_KEY}");
        // No address of its own (the host's network): skipped, not reached at 127.0.0.1.
        let mut f = facts(&[]);
        f.address = None;
        let (c, d) = cfg();
        let e = target(&f, &c, &d).unwrap_err();
        assert_eq!(paths(&e), ["sr.network"]);
    }

    #[test]
    fn rule3_no_label_runs_sql_the_operators_probe_applies() {
        for key in ["sr.probe.query", "sr.probe.expect", "sr.probe.role"] {
            let e = build(&[(key, "CREATE TABLE pwned()")]).unwrap_err();
            assert_eq!(paths(&e), [key], "{e:?}");
            assert!(e[0].fix.contains("defaults.probe"), "{e:?}");
        }
        let t = build(&[]).unwrap();
        assert_eq!(t.probe.query, "SELECT 42");
        assert_eq!(t.probe.expect.as_deref(), Some("42"));
    }

    #[test]
    fn rule4_labels_inherited_from_the_image_do_not_count() {
        let image = BTreeMap::from([
            ("sr.enable".to_string(), "true".to_string()),
            ("sr.credentials".to_string(), "orders".to_string()),
            (
                "org.opencontainers.image.title".to_string(),
                "pg".to_string(),
            ),
        ]);
        // Every label the container has is the image's: none is left.
        let own = own_labels(image.clone(), &image);
        assert!(own.is_empty(), "{own:?}");
        let mut f = facts(&[]);
        f.labels = own;
        assert!(!selected(&f, &cfg().0), "an image's label opts nothing in");
        // Given at `docker run` with another value: the container's own.
        let mut given = image.clone();
        given.insert("sr.credentials".into(), "default".into());
        given.insert("sr.name".into(), "mine".into());
        let own = own_labels(given, &image);
        assert_eq!(
            own.keys().collect::<Vec<_>>(),
            ["sr.credentials", "sr.name"]
        );
    }

    #[test]
    fn rule5_every_number_a_label_sets_has_a_floor_and_a_cap() {
        for (key, value, bound) in [
            ("sr.probe.interval", "1ms", "min of 1s"),
            ("sr.probe.timeout", "366d", "max of 30s"),
            ("sr.restart_budget.max_restarts", "1000", "max of 3"),
            ("sr.restart_budget.window", "1s", "min of 1h"),
            ("sr.restart_budget.backoff", "0s", "min of 1s"),
            ("sr.probe.failure_threshold", "1000", "max of 100"),
            ("sr.recovery_timeout", "1s", "min of 5s"),
            ("sr.heal.stop_timeout", "1h", "max of 5m"),
            ("sr.forensics.log_tail", "100000000", "max of 10000"),
        ] {
            let e = build(&[(key, value)]).unwrap_err();
            assert_eq!(paths(&e), [key], "{key}: {e:?}");
            assert!(e[0].message.contains(bound), "{key}: {e:?}");
            assert!(e[0].fix.contains("discovery.docker.limits"), "{key}: {e:?}");
        }
        // Within bounds: taken.
        let t = build(&[
            ("sr.probe.interval", "5s"),
            ("sr.restart_budget.max_restarts", "2"),
        ])
        .unwrap();
        assert_eq!(t.budget.max_restarts, 2);
        // The operator moves a bound.
        let (mut c, d) = cfg();
        c.limits.probe_interval.min = Duration::from_millis(100);
        let t = target(&facts(&[("sr.probe.interval", "200ms")]), &c, &d).unwrap();
        assert_eq!(t.probe.interval, Duration::from_millis(200));
        // ...also in YAML, where its own errors are reported.
        let (c, _) = registry(
            "    credentials:\n      default: { user: postgres, password_env: PG_PW }\n    limits:\n      probe_interval: { min: 10s }\n      max_restarts: { max: 5 }\n",
        );
        assert_eq!(c.limits.probe_interval.min, Duration::from_secs(10));
        assert_eq!(c.limits.max_restarts.max, Some(5));
    }

    #[test]
    fn bad_labels_name_the_label_and_the_fix() {
        let e = build(&[
            ("sr.enable", "true"),
            ("sr.credentials", "nope"),
            ("sr.probe.interval", "5 parsecs"),
            ("sr.heal", "maybe"),
            ("sr.probe.intervall", "1s"),
        ])
        .unwrap_err();
        for want in [
            "sr.credentials",
            "sr.probe.interval",
            "sr.heal",
            "sr.probe.intervall",
        ] {
            assert!(paths(&e).contains(&want), "{want} missing from {e:?}");
        }
        assert!(e.iter().any(|p| p.fix.contains("default, orders")), "{e:?}");
    }

    #[test]
    fn opt_out_and_all_mode() {
        let (mut c, d) = cfg();
        let plain = facts(&[]);
        assert!(!selected(&plain, &c));
        c.mode = DiscoveryMode::All;
        assert!(selected(&plain, &c));
        assert!(!selected(&facts(&[("sr.enable", "false")]), &c));
        let mut other = facts(&[]);
        other.image = "redis:7".into();
        other.pgdata = None;
        assert!(!selected(&other, &c));
        let t = target(&facts(&[("sr.heal", "false")]), &c, &d).unwrap();
        assert!(t.heal.is_none());
    }

    #[test]
    fn log_directory_comes_from_the_configuration_files_when_the_command_line_has_none() {
        let conf =
            "#log_directory = 'nope'\nlog_directory = 'pg_log'   # here\nlog_directory_x = 1\n";
        assert_eq!(
            conf_setting(conf, "log_directory").as_deref(),
            Some("pg_log")
        );
        assert_eq!(
            conf_setting("log_directory=/var/log/pg\n", "log_directory").as_deref(),
            Some("/var/log/pg")
        );
        assert_eq!(conf_setting("", "log_directory"), None);
        let mut f = facts(&[]);
        f.cmd.clear();
        f.conf_log_directory = Some("pg_log".into());
        assert_eq!(evidence_paths(&f)[0], "/pg/data/pg_log");
    }

    #[test]
    fn settings_on_the_command_line_are_found() {
        let cmd: Vec<String> = [
            "postgres",
            "-clog_directory=a",
            "--log-directory=b",
            "-c",
            "hba_file=/etc/hba",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(setting_of(&cmd, "log_directory").as_deref(), Some("b"));
        assert_eq!(setting_of(&cmd, "hba_file").as_deref(), Some("/etc/hba"));
        assert_eq!(setting_of(&cmd, "config_file"), None);
    }
}
