//! The validated registry the daemon runs on. Everything here has been checked; durations are
//! durations and the DSN parses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A secret string: compares and clones like a string, prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("***")
    }
}

/// A parsed PostgreSQL connection string. Debug and Display show it with the password redacted.
#[derive(Clone)]
pub struct Dsn {
    raw: Secret,
    parsed: tokio_postgres::Config,
}

impl Dsn {
    pub fn parse(raw: &str) -> Result<Self, tokio_postgres::Error> {
        let parsed = tokio_postgres::Config::from_str(raw)?;
        Ok(Self {
            raw: Secret::new(raw),
            parsed,
        })
    }
    /// The connection settings for tokio-postgres.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.parsed
    }
    /// `host:port/dbname` for logs and alerts.
    pub fn endpoint(&self) -> String {
        crate::redact::endpoint(&self.parsed)
    }
}

impl PartialEq for Dsn {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&crate::redact::redact_dsn(self.raw.expose()))
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&crate::redact::redact_dsn(self.raw.expose()))
    }
}

/// Probe settings for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub query: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub expect: Option<String>,
    /// The target must be a primary (not in recovery).
    pub primary: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            query: "SELECT 1".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            failure_threshold: 3,
            primary: false,
            expect: None,
        }
    }
}

/// At most `max_restarts` per sliding `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    pub max_restarts: u32,
    pub window: Duration,
    /// Kubernetes-style backoff between restarts of one target.
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
}

impl BudgetConfig {
    /// The wait after the `n`-th restart of a streak (n >= 1) before the next one.
    pub fn backoff_after(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

/// Restart leases.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseConfig {
    /// None: `{state_dir}/leases` (this daemon only).
    pub dir: Option<PathBuf>,
    pub ttl: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            dir: None,
            ttl: Duration::from_secs(120),
        }
    }
}

/// The fleet guard.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetGuardConfig {
    pub max_failing_share: f64,
    pub min_failing: usize,
}

impl Default for FleetGuardConfig {
    fn default() -> Self {
        Self {
            max_failing_share: 0.5,
            min_failing: 3,
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            window: Duration::from_secs(3600),
            backoff: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
        }
    }
}

/// How a target is restarted.
#[derive(Debug, Clone, PartialEq)]
pub enum HealAction {
    /// Run a program (argv, no shell): pg_ctl, systemctl, a script.
    Command {
        argv: Vec<String>,
        timeout: Duration,
        /// A hung postmaster (alive at heal time) gets this long to stop before SIGKILL.
        stop_timeout: Duration,
        /// Run instead of SIGQUIT to stop a hung postmaster.
        stop_command: Option<Vec<String>>,
        /// Added to the cleared environment of the heal and stop commands.
        env: BTreeMap<String, String>,
    },
    /// Restart (or start) a container through the Docker Engine API.
    Docker {
        container: ContainerRef,
        /// A stop waits this long before the container is killed.
        stop_timeout: Duration,
    },
}

/// A container, by name or id, or by the compose service that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContainerRef {
    Name(String),
    Compose { project: String, service: String },
}

impl fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ContainerRef::Name(n) => f.write_str(n),
            ContainerRef::Compose { project, service } => {
                write!(f, "compose service {project}/{service}")
            }
        }
    }
}

/// Evidence copied out of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerForensics {
    pub container: ContainerRef,
    /// Absolute paths inside the container.
    pub paths: Vec<String>,
    /// Lines of the container's stdout/stderr kept; 0: none.
    pub log_tail: u32,
}

/// The Docker Engine connection.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// None: DOCKER_HOST, else the local socket.
    pub host: Option<String>,
    /// Follow the Engine's events (the fast path for dying containers).
    pub events: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            events: true,
        }
    }
}

/// One watched database.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    pub name: String,
    pub dsn: Dsn,
    pub probe: ProbeConfig,
    pub budget: BudgetConfig,
    pub recovery_timeout: Duration,
    /// Glob patterns of files copied into each bundle.
    pub forensic_files: Vec<String>,
    /// Files and the log tail copied out of the target's container.
    pub forensic_docker: Option<DockerForensics>,
    /// None: alert only, never restart.
    pub heal: Option<HealAction>,
    /// The postmaster's pid file, when the database runs on this host.
    pub pid_file: Option<PathBuf>,
    /// What each failure class calls for.
    pub policy: crate::policy::Policy,
}

impl TargetConfig {
    /// The container this target runs in, if any: the one its heal restarts, else the one its
    /// forensics read.
    pub fn container(&self) -> Option<&ContainerRef> {
        match &self.heal {
            Some(HealAction::Docker { container, .. }) => Some(container),
            _ => self.forensic_docker.as_ref().map(|d| &d.container),
        }
    }
}

/// Where bundles go and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveConfig {
    /// The local sink; None when only S3 is configured (bundles are then staged in the spool).
    pub local_dir: Option<PathBuf>,
    pub s3: Option<S3Config>,
    /// Longest the heal waits for a container's evidence and the S3 upload, together.
    pub timeout: Duration,
    /// Per-file cap; the newest bytes are kept.
    pub max_file_size: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            local_dir: Some(PathBuf::from("./incidents")),
            s3: None,
            timeout: Duration::from_secs(30),
            max_file_size: 64 << 20,
        }
    }
}

/// The S3 sink.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    /// Without leading or trailing slashes; may be empty.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub part_size: u64,
}

impl S3Config {
    /// `s3://bucket/prefix/{id}/`.
    pub fn url_for(&self, bundle: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key_for(bundle, ""))
    }

    /// The object key of `file` in the bundle (`file` empty: the bundle's key prefix).
    pub fn key_for(&self, bundle: &str, file: &str) -> String {
        if self.prefix.is_empty() {
            format!("{bundle}/{file}")
        } else {
            format!("{}/{bundle}/{file}", self.prefix)
        }
    }
}

/// A chat webhook (Slack or Discord).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatWebhook {
    pub url: Secret,
}

/// PagerDuty Events v2.
#[derive(Debug, Clone, PartialEq)]
pub struct PagerDutyConfig {
    pub routing_key: Secret,
    pub url: Secret,
}

/// The dead-man switch.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    pub url: Secret,
    pub interval: Duration,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericWebhook {
    pub url: Secret,
    pub headers: BTreeMap<String, Secret>,
}

/// Alert channels and delivery policy.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub slack: Option<ChatWebhook>,
    pub discord: Option<ChatWebhook>,
    pub webhooks: Vec<GenericWebhook>,
    pub pagerduty: Option<PagerDutyConfig>,
    pub console: bool,
    pub max_attempts: u32,
    pub max_backoff: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            slack: None,
            discord: None,
            webhooks: Vec::new(),
            pagerduty: None,
            console: false,
            max_attempts: 6,
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Where the registry came from, for messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(PathBuf),
    Environment,
    Generated(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Environment => f.write_str("environment"),
            Source::Generated(what) => f.write_str(what),
        }
    }
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// None: the mutating endpoints are off.
    pub token: Option<Secret>,
}

/// What a target inherits unless it overrides it: the resolved `defaults:` section, kept so
/// that targets discovered later are built exactly like the ones written in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetDefaults {
    pub probe: ProbeConfig,
    pub budget: BudgetConfig,
    pub recovery_timeout: Duration,
    pub policy: crate::policy::Policy,
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
}

/// The whole validated registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub source: Source,
    pub server: Option<ServerConfig>,
    pub fleet_guard: FleetGuardConfig,
    pub lease: LeaseConfig,
    pub heartbeat: Option<HeartbeatConfig>,
    pub docker: DockerConfig,
    pub archive: ArchiveConfig,
    pub notify: NotifyConfig,
    pub targets: Vec<TargetConfig>,
    /// The defaults discovered targets are built with.
    pub defaults: TargetDefaults,
    /// Container discovery; None: only the targets listed.
    pub discovery: Option<DockerDiscovery>,
}
