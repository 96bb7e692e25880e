//! Env-only mode: the seed's sidecar variables (DB_HOST, DB_PORT, ...) describe one target, so
//! the daemon drops into a compose file with no registry file. Read through the `config` crate,
//! with `.env` underneath the process environment.
//!
//! Each variable is an entry of [`VARS`]: the registry key it sets and how its text is read.
//! The variables fill a registry tree that goes through the same sections and checks as a
//! file; problems found at a variable's key are reported under the variable's name.

use super::archive::RawArchive;
use super::cluster::{build_cluster, RawCluster};
use super::defaults::RawDefaults;
use super::discovery::{build_discovery, RawDiscovery};
use super::document::section;
use super::error::{ConfigError, Problem, Problems};
use super::expand::VarSource;
use super::keypath::{get, get_mut, remove, set};
use super::lease::{build_lease, RawLease};
use super::notify::RawNotify;
use super::registry::{build, Registry, Source};
use super::server::{build_server, RawServer};
use super::targets::RawTarget;
use serde_yaml::{Mapping, Value};
use std::collections::HashMap;

/// How a variable's text becomes the value at its key path.
#[derive(Clone, Copy)]
enum Parse {
    /// The text as is, even empty (an empty duration or query is then reported at its key).
    Text,
    /// A whole number, even from an empty text; otherwise a problem with this fix (and 3).
    Number(&'static str),
    /// A comma-separated list, even empty.
    List,
    /// The text, when not blank.
    Set,
    /// A comma-separated list, when not blank.
    SetList,
    /// A JSON array (`["pg_ctl","-D","/data","start"]`) or words split on whitespace.
    Command,
    /// true/1/yes/on or false/0/no/off; otherwise a problem with this fix.
    Switch(&'static str),
    /// On for 1, true or yes (any case); anything else is off.
    Flag,
    /// `label` for 1/true/yes/on, else the mode named (lower case).
    Mode,
}

/// One sidecar variable: its name, the registry key it sets, how its text is read.
struct Var {
    name: &'static str,
    path: &'static str,
    parse: Parse,
}

const fn var(name: &'static str, path: &'static str, parse: Parse) -> Var {
    Var { name, path, parse }
}

/// Every sidecar variable but the DSN's parts (DB_HOST, DB_PORT, DB_NAME, DB_USER,
/// DB_PASSWORD, see [`dsn`]). Probe and budget settings are defaults, so discovered containers
/// get them too. Problems in reading the text are listed in this order.
const VARS: &[Var] = &[
    var("HEALTH_CHECK_QUERY", "defaults.probe.query", Parse::Text),
    var(
        "HEALTH_CHECK_INTERVAL",
        "defaults.probe.interval",
        Parse::Text,
    ),
    var(
        "HEALTH_CHECK_TIMEOUT",
        "defaults.probe.timeout",
        Parse::Text,
    ),
    var(
        "FAILURE_THRESHOLD",
        "defaults.probe.failure_threshold",
        Parse::Number("set FAILURE_THRESHOLD to 1 or more"),
    ),
    var(
        "MAX_RESTARTS",
        "defaults.restart_budget.max_restarts",
        Parse::Number("set MAX_RESTARTS to 0 or more"),
    ),
    var(
        "RESTART_WINDOW",
        "defaults.restart_budget.window",
        Parse::Text,
    ),
    var("RECOVERY_TIMEOUT", "defaults.recovery_timeout", Parse::Text),
    var("TARGET_NAME", "targets[0].name", Parse::Text),
    var("HEAL_COMMAND", "targets[0].heal.command", Parse::Command),
    var(
        "HEAL_CONTAINER",
        "targets[0].heal.docker.container",
        Parse::Set,
    ),
    var(
        "COMPOSE_PROJECT",
        "targets[0].heal.compose.project",
        Parse::Set,
    ),
    var(
        "COMPOSE_SERVICE",
        "targets[0].heal.compose.service",
        Parse::Set,
    ),
    var(
        "HEAL_STOP_TIMEOUT",
        "targets[0].heal.stop_timeout",
        Parse::Set,
    ),
    var("FORENSICS_FILES", "targets[0].forensics.files", Parse::List),
    var(
        "FORENSICS_CONTAINER_PATHS",
        "targets[0].forensics.docker.paths",
        Parse::SetList,
    ),
    var("PG_PID_FILE", "targets[0].process.pid_file", Parse::Set),
    var("ARCHIVE_DIR", "archive.local.dir", Parse::Set),
    var("ARCHIVE_TIMEOUT", "archive.timeout", Parse::Set),
    // AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are read by the AWS credential chain itself.
    var("S3_BUCKET_NAME", "archive.s3.bucket", Parse::Set),
    var("S3_PREFIX", "archive.s3.prefix", Parse::Set),
    var("S3_ENDPOINT_URL", "archive.s3.endpoint", Parse::Set),
    var(
        "S3_FORCE_PATH_STYLE",
        "archive.s3.force_path_style",
        Parse::Flag,
    ),
    var("AWS_REGION", "archive.s3.region", Parse::Set),
    var("SLACK_WEBHOOK_URL", "notify.slack.webhook_url", Parse::Set),
    var(
        "DISCORD_WEBHOOK_URL",
        "notify.discord.webhook_url",
        Parse::Set,
    ),
    var("WEBHOOK_URL", "notify.webhooks[0].url", Parse::Set),
    var(
        "NOTIFY_CONSOLE",
        "notify.console",
        Parse::Switch("set NOTIFY_CONSOLE to true (alerts also printed to stdout) or false"),
    ),
    var("SENTINEL_LISTEN", "server.listen", Parse::Set),
    var("SENTINEL_API_TOKEN", "server.token", Parse::Set),
    var("LEASE_DIR", "lease.dir", Parse::Set),
    var("CLUSTER_ETCD", "cluster.etcd", Parse::SetList),
    var("CLUSTER_PREFIX", "cluster.prefix", Parse::Set),
    var("CLUSTER_MEMBER", "cluster.member", Parse::Set),
    var("CLUSTER_TTL", "cluster.ttl", Parse::Set),
    var("CLUSTER_TLS_CA_FILE", "cluster.tls.ca_file", Parse::Set),
    var("CLUSTER_TLS_CERT_FILE", "cluster.tls.cert_file", Parse::Set),
    var("CLUSTER_TLS_KEY_FILE", "cluster.tls.key_file", Parse::Set),
    var(
        "CLUSTER_TLS_SERVER_NAME",
        "cluster.tls.server_name",
        Parse::Set,
    ),
    var("CLUSTER_AUTH_USER", "cluster.auth.user", Parse::Set),
    var(
        "CLUSTER_AUTH_PASSWORD_ENV",
        "cluster.auth.password_env",
        Parse::Set,
    ),
    var(
        "CLUSTER_AUTH_PASSWORD_FILE",
        "cluster.auth.password_file",
        Parse::Set,
    ),
    var("DISCOVER_DOCKER", "discovery.docker.mode", Parse::Mode),
    var(
        "DISCOVER_NAMESPACE",
        "discovery.docker.namespace",
        Parse::Set,
    ),
    var("DISCOVER_NETWORK", "discovery.docker.network", Parse::Set),
    // The login discovered containers get (labels cannot name one of their own).
    var(
        "DISCOVER_USER",
        "discovery.docker.credentials.default.user",
        Parse::Set,
    ),
    var(
        "DISCOVER_PASSWORD_ENV",
        "discovery.docker.credentials.default.password_env",
        Parse::Set,
    ),
    var(
        "DISCOVER_PASSWORD_FILE",
        "discovery.docker.credentials.default.password_file",
        Parse::Set,
    ),
    var(
        "DISCOVER_SECRETS_DIR",
        "discovery.docker.secrets_dir",
        Parse::Set,
    ),
    // TLS to every discovered container (the operator's, never a label's).
    var(
        "DISCOVER_SSLMODE",
        "discovery.docker.tls.sslmode",
        Parse::Set,
    ),
    var(
        "DISCOVER_SSLROOTCERT",
        "discovery.docker.tls.sslrootcert",
        Parse::Set,
    ),
    var(
        "DISCOVER_SSLCERT",
        "discovery.docker.tls.sslcert",
        Parse::Set,
    ),
    var("DISCOVER_SSLKEY", "discovery.docker.tls.sslkey", Parse::Set),
    var(
        "DISCOVER_SSL_SERVER_NAME",
        "discovery.docker.tls.server_name",
        Parse::Set,
    ),
];

/// Keys no single variable sets, and the variables a problem there is reported under.
const ALIASES: &[(&str, &str)] = &[
    ("targets[0].dsn", "DB_HOST/DB_PORT/DB_NAME/DB_USER"),
    (
        "targets[0].heal",
        "HEAL_COMMAND/HEAL_CONTAINER/COMPOSE_PROJECT+COMPOSE_SERVICE",
    ),
    ("targets[0].forensics.docker", "FORENSICS_CONTAINER_PATHS"),
];

/// A section exists only when its key variable is set (an S3_PREFIX alone is ignored).
const REQUIRED: &[(&str, &str)] = &[
    ("archive.s3", "archive.s3.bucket"),
    ("server", "server.listen"),
    ("discovery", "discovery.docker.mode"),
    ("cluster", "cluster.etcd"),
];

/// Whether the sidecar variables are present (DB_HOST or DISCOVER_DOCKER decides).
pub fn present(vars: &VarSource) -> bool {
    ["DB_HOST", "DISCOVER_DOCKER"]
        .iter()
        .any(|v| vars.get(v).is_some_and(|h| !h.trim().is_empty()))
}

/// Builds a one-target registry from the sidecar variables.
pub fn load_env(vars: &VarSource) -> Result<Registry, ConfigError> {
    let file = "environment".to_string();
    let env = Env::read(vars).map_err(|e| ConfigError::Invalid {
        file: file.clone(),
        problems: vec![Problem::new(
            "(environment)",
            e.to_string(),
            "check the variables listed in .env.template",
        )],
    })?;
    let mut problems = Problems::default();
    let mut tree = Mapping::new();
    let host_given = dsn(&env, &mut tree, &mut problems);
    for v in VARS {
        if let Some(text) = env.get(v.name) {
            if let Some(value) = v.parse.value(v.name, &text, &mut problems) {
                set(&mut tree, v.path, value);
            }
        }
    }
    settle(&mut tree, host_given);
    let registry = from_tree(&tree, vars, &mut problems);
    for p in &mut problems.0 {
        if let Some(name) = variable_at(&p.path) {
            p.path = name.to_string();
        }
    }
    if problems.0.is_empty() {
        Ok(registry)
    } else {
        Err(ConfigError::Invalid {
            file,
            problems: problems.0,
        })
    }
}

/// The variables as the `config` crate reads them (names lower-cased).
struct Env(HashMap<String, config::Value>);

impl Env {
    fn read(vars: &VarSource) -> Result<Self, config::ConfigError> {
        config::Config::builder()
            .add_source(
                config::Environment::default()
                    .source(Some(vars.all()))
                    .try_parsing(false),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map(Env)
    }

    fn get(&self, name: &str) -> Option<String> {
        let value = self.0.get(&name.to_ascii_lowercase())?;
        value.clone().into_string().ok()
    }
}

impl Parse {
    /// The value `text` stands for; None leaves the key unset.
    fn value(self, name: &str, text: &str, problems: &mut Problems) -> Option<Value> {
        let blank = text.trim().is_empty();
        Some(match self {
            Parse::Text => text.into(),
            Parse::Number(fix) => {
                let n = text.trim().parse::<i64>().unwrap_or_else(|_| {
                    problems.push(name, format!("'{text}' is not a number"), fix);
                    3
                });
                Value::Number(n.into())
            }
            Parse::List => list(text),
            _ if blank => return None,
            Parse::Set => text.into(),
            Parse::SetList => list(text),
            Parse::Command => split_command(text).into_iter().map(Value::from).collect(),
            Parse::Switch(fix) => Value::Bool(match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    problems.push(name, format!("'{text}' is not true or false"), fix);
                    false
                }
            }),
            Parse::Flag => Value::Bool(matches!(
                text.to_ascii_lowercase().as_str(),
                "1" | "true" | "yes"
            )),
            Parse::Mode => match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" | "label" => "label".into(),
                other => other.into(),
            },
        })
    }
}

/// A comma-separated list, blanks dropped.
fn list(text: &str) -> Value {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Value::from)
        .collect()
}

/// Splits HEAL_COMMAND: a JSON array (`["pg_ctl","-D","/data","start"]`) or words split on
/// whitespace.
fn split_command(c: &str) -> Vec<String> {
    if c.trim_start().starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(c) {
            return v;
        }
    }
    c.split_whitespace().map(str::to_string).collect()
}

/// The target's DSN (and its default name, the database's) from DB_HOST, DB_PORT, DB_NAME,
/// DB_USER and DB_PASSWORD. Returns whether DB_HOST is given: without it the sidecar only
/// discovers (DISCOVER_DOCKER).
fn dsn(env: &Env, tree: &mut Mapping, problems: &mut Problems) -> bool {
    let host = env.get("DB_HOST").unwrap_or_default();
    let port: u16 = match env.get("DB_PORT").as_deref().map(str::trim) {
        None | Some("") => 5432,
        Some(p) => p.parse().unwrap_or_else(|_| {
            problems.push(
                "DB_PORT",
                format!("'{p}' is not a port number"),
                "set DB_PORT to a number such as 5432",
            );
            5432
        }),
    };
    let user = env.get("DB_USER").unwrap_or_else(|| "postgres".into());
    let db = env.get("DB_NAME").unwrap_or_else(|| "postgres".into());
    let mut dsn = url::Url::parse("postgres://localhost").expect("static URL parses");
    let host_ok = dsn.set_host(Some(&host)).is_ok();
    if !host_ok && !host.trim().is_empty() {
        problems.push(
            "DB_HOST",
            format!("'{host}' is not a host name or address"),
            "set DB_HOST to the database's host, e.g. postgres",
        );
    }
    let _ = dsn.set_port(Some(port));
    let _ = dsn.set_username(&user);
    if let Some(pw) = env.get("DB_PASSWORD").filter(|p| !p.is_empty()) {
        let _ = dsn.set_password(Some(&pw));
    }
    dsn.set_path(&format!("/{db}"));
    set(tree, "targets[0].dsn", dsn.to_string().into());
    set(tree, "targets[0].name", db.into());
    !host.trim().is_empty()
}

/// Where one variable's meaning depends on another's.
fn settle(tree: &mut Mapping, host_given: bool) {
    for (section, key) in REQUIRED {
        if get(tree, key).is_none() {
            remove(tree, section);
        }
    }
    if !host_given {
        remove(tree, "targets");
    }
    // S3-compatible stores behind a custom endpoint nearly always want path-style keys.
    if let Some(Value::Mapping(s3)) = get_mut(tree, "archive.s3") {
        if !s3.contains_key("force_path_style") {
            let custom = s3.contains_key("endpoint");
            s3.insert("force_path_style".into(), Value::Bool(custom));
        }
    }
    settle_heal(tree);
}

/// HEAL_STOP_TIMEOUT is the container heal's stop timeout (a command heal takes none from the
/// environment); COMPOSE_PROJECT and COMPOSE_SERVICE come as a pair, a missing one empty.
fn settle_heal(tree: &mut Mapping) {
    let Some(Value::Mapping(heal)) = get_mut(tree, "targets[0].heal") else {
        return;
    };
    let stop = heal.remove("stop_timeout");
    for kind in ["docker", "compose"] {
        if let (Some(Value::Mapping(m)), Some(stop)) = (heal.get_mut(kind), &stop) {
            m.insert("stop_timeout".into(), stop.clone());
        }
    }
    if let Some(Value::Mapping(compose)) = heal.get_mut("compose") {
        for key in ["project", "service"] {
            if !compose.contains_key(key) {
                compose.insert(key.into(), "".into());
            }
        }
    }
    if heal.is_empty() {
        remove(tree, "targets[0].heal");
    }
}

/// Builds the registry from the tree, through the sections a registry file goes through.
fn from_tree(tree: &Mapping, vars: &VarSource, problems: &mut Problems) -> Registry {
    let server =
        section::<RawServer>(tree, "server", problems).and_then(|s| build_server(s, problems));
    let discovery = section::<RawDiscovery>(tree, "discovery", problems)
        .and_then(|d| build_discovery(d, vars, problems));
    let targets: Vec<RawTarget> = section(tree, "targets", problems).unwrap_or_default();
    let defaults: RawDefaults = section(tree, "defaults", problems).unwrap_or_default();
    let archive: RawArchive = section(tree, "archive", problems).unwrap_or_default();
    let notify: RawNotify = section(tree, "notify", problems).unwrap_or_default();
    let targets = targets.into_iter().enumerate().collect();
    let mut registry = build(
        Source::Environment,
        defaults,
        archive,
        notify,
        targets,
        problems,
    );
    registry.discovery = discovery;
    registry.server = server;
    if let Some(l) = section::<RawLease>(tree, "lease", problems) {
        registry.lease = build_lease(l, problems);
    }
    registry.cluster = section::<RawCluster>(tree, "cluster", problems)
        .and_then(|c| build_cluster(c, vars, problems));
    registry
}

/// The variable a problem at `path` is about, if one is.
fn variable_at(path: &str) -> Option<&'static str> {
    VARS.iter()
        .find(|v| v.path == path)
        .map(|v| v.name)
        .or_else(|| ALIASES.iter().find(|(p, _)| *p == path).map(|(_, n)| *n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ContainerRef, HealAction};
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> VarSource {
        VarSource::fixed(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn every_variable_sets_its_own_key() {
        let mut names: Vec<_> = VARS.iter().map(|v| v.name).collect();
        let mut paths: Vec<_> = VARS.iter().map(|v| v.path).collect();
        names.sort_unstable();
        names.dedup();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!((names.len(), paths.len()), (VARS.len(), VARS.len()));
    }

    #[test]
    fn the_variables_fill_the_sections_a_file_would() {
        let r = load_env(&env(&[
            ("DB_HOST", "db"),
            ("HEAL_CONTAINER", "pg1"),
            ("HEAL_STOP_TIMEOUT", "3s"),
            ("S3_BUCKET_NAME", "bucket"),
            ("S3_ENDPOINT_URL", "http://localhost:9000"),
            ("WEBHOOK_URL", "https://ops.example.com/hook"),
            ("SENTINEL_API_TOKEN", "0123456789abcdef01"),
        ]))
        .unwrap();
        let t = &r.targets[0];
        assert_eq!(t.name, "postgres");
        assert_eq!(
            t.heal,
            Some(HealAction::Docker {
                container: ContainerRef::Name("pg1".into()),
                stop_timeout: Duration::from_secs(3),
            })
        );
        let s3 = r.archive.s3.as_ref().unwrap();
        assert!(
            s3.force_path_style,
            "a custom endpoint means path-style keys"
        );
        assert_eq!(r.archive.local_dir, None);
        assert_eq!(r.notify.webhooks.len(), 1);
        assert!(
            r.server.is_none(),
            "a token without SENTINEL_LISTEN serves nothing"
        );
    }

    #[test]
    fn the_cluster_variables_make_a_cluster_section() {
        let r = load_env(&env(&[
            ("DB_HOST", "db"),
            ("CLUSTER_ETCD", "http://e1:2379, http://e2:2379"),
            ("CLUSTER_MEMBER", "node-b"),
            ("CLUSTER_TTL", "3s"),
        ]))
        .expect("valid");
        let c = r.cluster.expect("cluster");
        assert_eq!(c.etcd, vec!["http://e1:2379", "http://e2:2379"]);
        assert_eq!(c.member, "node-b");
        assert_eq!(c.ttl, Duration::from_secs(3));
        let none = load_env(&env(&[("DB_HOST", "db"), ("CLUSTER_MEMBER", "x")])).expect("valid");
        assert!(none.cluster.is_none(), "no cluster without CLUSTER_ETCD");
        let r = load_env(&env(&[
            ("DB_HOST", "db"),
            ("CLUSTER_ETCD", "http://e1:2379"),
            ("CLUSTER_AUTH_USER", "sentinel"),
            ("CLUSTER_AUTH_PASSWORD_ENV", "ETCD_PW"),
            ("ETCD_PW", "pw"),
        ]))
        .expect("valid");
        let auth = r.cluster.and_then(|c| c.auth).expect("auth");
        assert_eq!(
            (auth.user.as_str(), auth.password.expose()),
            ("sentinel", "pw")
        );
        let e = load_env(&env(&[("DB_HOST", "db"), ("CLUSTER_ETCD", "etcd1:2379")]))
            .expect_err("bad URL");
        assert!(e.to_string().contains("CLUSTER_ETCD"), "{e}");
    }

    #[test]
    fn a_problem_at_a_variables_key_names_the_variable() {
        let e = load_env(&env(&[
            ("DB_HOST", "db"),
            ("NOTIFY_CONSOLE", "maybe"),
            ("HEAL_CONTAINER", "bad name"),
            ("S3_BUCKET_NAME", "Bad_Bucket"),
        ]))
        .unwrap_err();
        let paths: Vec<_> = e.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["NOTIFY_CONSOLE", "HEAL_CONTAINER", "S3_BUCKET_NAME"]
        );
    }
}
