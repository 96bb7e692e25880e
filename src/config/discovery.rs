//! `discovery:`: targets found at run time (containers on the Docker Engine) instead of listed.
//! The operator's side of discovery: which containers, the logins they may use
//! (`credentials`) and the bounds of what their labels may set (`limits`).

use super::credentials::{build_credentials, secrets_dir, Credential, RawCredential};
use super::error::Problems;
use super::expand::VarSource;
use super::heal::container_name;
use super::limits::{build_limits, LabelLimits, RawLimits};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `discovery:`: targets found at run time instead of listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    /// Containers on the Docker Engine, found by their labels.
    pub docker: Option<RawDockerDiscovery>,
}

/// `discovery.docker:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerDiscovery {
    /// Label prefix (default `sentinel-remedy`): `{namespace}.enable=true` opts a container in.
    pub namespace: Option<String>,
    /// `label` (default): only opted-in containers; `all`: every container running a
    /// PostgreSQL image, except those labelled `{namespace}.enable=false`.
    pub mode: Option<String>,
    /// Docker network to reach the containers over (default: one shared with the daemon's own
    /// container, else the container's first network).
    pub network: Option<String>,
    /// The logins discovered targets use, by name: a `{namespace}.credentials=<name>` label
    /// picks one; the one named `default` serves containers with no such label.
    pub credentials: Option<BTreeMap<String, RawCredential>>,
    /// The directory `password_file` names are read beneath (no link followed).
    pub secrets_dir: Option<String>,
    /// Whether labels a container inherits from its image count (default false: only labels
    /// given when the container was created opt it in or tune it).
    pub trust_image_labels: Option<bool>,
    /// The floor and cap of every number or duration a label may set.
    pub limits: Option<RawLimits>,
    /// TLS to every discovered container, chosen by the operator (labels never choose trust
    /// roots or certificates).
    pub tls: Option<RawDiscoveryTls>,
}

/// `discovery.docker.tls`: libpq's settings, applied to every discovered target's DSN.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscoveryTls {
    /// disable, allow, prefer (libpq's default), require, verify-ca or verify-full.
    pub sslmode: Option<String>,
    /// The CA certificate file the servers' certificates are verified with, or `system`.
    pub sslrootcert: Option<String>,
    /// Client certificate (for pg_hba `cert`), with `sslkey`.
    pub sslcert: Option<String>,
    /// The client certificate's key (mode 0600).
    pub sslkey: Option<String>,
    /// A PEM file of CRLs checked with the chain.
    pub sslcrl: Option<String>,
    /// disable, prefer (default) or require (SCRAM-SHA-256-PLUS only).
    pub channel_binding: Option<String>,
    /// The name every server's certificate must hold under verify-full (default: the
    /// container's address, which the certificate must then list as an IP subjectAltName).
    pub server_name: Option<String>,
}

/// Which containers `discovery.docker` turns into targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// Only containers labelled `{namespace}.enable=true` (opt-in).
    Label,
    /// Every container running a PostgreSQL image, unless labelled `{namespace}.enable=false`.
    All,
}

/// `discovery.docker`: targets found from container labels on the Docker Engine.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerDiscovery {
    /// Label prefix, e.g. `sentinel-remedy` for `sentinel-remedy.enable=true`.
    pub namespace: String,
    pub mode: DiscoveryMode,
    /// The Docker network to reach containers over; None: one the daemon shares with the
    /// container (in a container), else the container's first network.
    pub network: Option<String>,
    /// The operator's logins, by name; labels pick one, never bring their own.
    pub credentials: BTreeMap<String, Credential>,
    /// Whether labels inherited from the image count.
    pub trust_image_labels: bool,
    /// The bounds of label values.
    pub limits: LabelLimits,
    /// `discovery.docker.tls` as DSN parameters (checked at load), added to every discovered
    /// target's DSN.
    pub tls: Vec<(String, String)>,
    /// `discovery.docker.tls.server_name`: the DSN's host (what verify-full checks), the
    /// container's address then going into `hostaddr`.
    pub server_name: Option<String>,
}

/// `discovery.docker`: the label namespace, the mode and the network.
pub(crate) fn build_discovery(
    d: RawDiscovery,
    vars: &VarSource,
    problems: &mut Problems,
) -> Option<DockerDiscovery> {
    let Some(d) = d.docker else {
        problems.push(
            "discovery",
            "no discovery source is given",
            "add `docker: {}` to discover containers by label, or remove `discovery:`",
        );
        return None;
    };
    let namespace = d.namespace.unwrap_or_else(|| "sentinel-remedy".into());
    let ns_ok = !namespace.is_empty()
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !namespace.ends_with('.');
    if !ns_ok {
        problems.push(
            "discovery.docker.namespace",
            format!("'{namespace}' is not a label prefix"),
            "use letters, digits, '-', '_' or '.', e.g. sentinel-remedy (labels are then sentinel-remedy.enable=true, ...)",
        );
    }
    let mode = match d.mode.as_deref().map(str::trim) {
        None | Some("label") => Some(DiscoveryMode::Label),
        Some("all") => Some(DiscoveryMode::All),
        Some(other) => {
            problems.push(
                "discovery.docker.mode",
                format!("'{other}' is not a discovery mode"),
                "use `label` (only containers labelled <namespace>.enable=true) or `all` (every PostgreSQL container not labelled <namespace>.enable=false)",
            );
            None
        }
    };
    let network = d.network.filter(|n| !n.trim().is_empty());
    if let Some(n) = &network {
        container_name(n, "discovery.docker.network", problems);
    }
    let dir = secrets_dir(d.secrets_dir.as_deref(), problems);
    let credentials = build_credentials(
        d.credentials.unwrap_or_default(),
        dir.as_deref(),
        vars,
        problems,
    );
    let limits = build_limits(d.limits, problems);
    let (tls, server_name) = build_tls(d.tls.unwrap_or_default(), problems);
    (ns_ok && mode.is_some()).then(|| DockerDiscovery {
        namespace,
        mode: mode.unwrap_or(DiscoveryMode::Label),
        network,
        credentials,
        trust_image_labels: d.trust_image_labels.unwrap_or(false),
        limits,
        tls,
        server_name,
    })
}

/// `discovery.docker.tls` as DSN parameters, checked as a target's DSN would be (files read,
/// unsupported values refused) so a mistake shows at load, not at the first container.
fn build_tls(
    t: RawDiscoveryTls,
    problems: &mut Problems,
) -> (Vec<(String, String)>, Option<String>) {
    let params: Vec<(String, String)> = [
        ("sslmode", t.sslmode),
        ("sslrootcert", t.sslrootcert),
        ("sslcert", t.sslcert),
        ("sslkey", t.sslkey),
        ("sslcrl", t.sslcrl),
        ("channel_binding", t.channel_binding),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), v.filter(|v| !v.trim().is_empty())?)))
    .collect();
    if let Err(e) = super::tls::Tls::parse(&params, &|k| std::env::var(k).ok()) {
        let key = e.key.split(' ').next().unwrap_or("").to_string();
        problems.push(
            format!("discovery.docker.tls.{key}"),
            format!("TLS setting {} cannot be used", e.key),
            e.reason,
        );
    }
    let name = t.server_name.filter(|n| !n.trim().is_empty());
    if let Some(n) = &name {
        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            problems.push(
                "discovery.docker.tls.server_name",
                format!("'{n}' is not a host name or address"),
                "give the DNS name (or address) the servers' certificates hold",
            );
        }
    }
    (params, name)
}
