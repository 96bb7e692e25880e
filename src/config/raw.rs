//! The registry exactly as written in YAML. Every struct denies unknown keys; values that need
//! checking (durations, DSNs, URLs) stay text here and are judged in `validate`.

use super::duration::RawDuration;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `defaults:`: values every target inherits unless it overrides them key by key.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Probe settings shared by every target.
    pub probe: Option<RawProbe>,
    /// Restart budget shared by every target.
    pub restart_budget: Option<RawBudget>,
    /// How long after a heal starts a target may take to answer probes before escalation.
    pub recovery_timeout: Option<RawDuration>,
    /// Action per failure class (`restart` or `alert`), e.g. `{ timeout: alert }`.
    pub policy: Option<BTreeMap<String, String>>,
}

/// `probe:`: the SQL health check.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// SQL run on every probe (simple protocol; the first column of the first row is checked
    /// against `expect` when that is set).
    pub query: Option<String>,
    /// Time between probes while healthy.
    pub interval: Option<RawDuration>,
    /// Limit for connecting and for the query (also sent as statement_timeout).
    pub timeout: Option<RawDuration>,
    /// Consecutive ambiguous failures (timeouts, errors) before a target is declared failing.
    pub failure_threshold: Option<i64>,
    /// Expected text of the first column of the first row; any other answer is a failure.
    pub expect: Option<String>,
    /// `primary`: a target answering as a standby (pg_is_in_recovery) is a `read_only` failure.
    pub role: Option<String>,
}

/// `restart_budget:`: at most `max_restarts` restarts per `window`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Restarts allowed inside one window.
    pub max_restarts: Option<i64>,
    /// Length of the sliding window.
    pub window: Option<RawDuration>,
    /// Wait before a second restart of a failing target (default 10s), doubling each time...
    pub backoff: Option<RawDuration>,
    /// ...up to this (default 5m)...
    pub backoff_max: Option<RawDuration>,
    /// ...and back to `backoff` after this long healthy (default 10m).
    pub backoff_reset: Option<RawDuration>,
}

/// `lease:`: where restart leases are kept; daemons that share the directory never restart
/// the same server twice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLease {
    /// Directory shared by every daemon that may watch the same servers (default: the state dir's `leases/`).
    pub dir: Option<String>,
    /// How long a restart holds the lease at most (default 2m).
    pub ttl: Option<RawDuration>,
}

/// `fleet_guard:`: when many targets fail at once the cause is likely the network or this
/// host; restarts are held until the share drops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetGuard {
    /// Hold restarts when more than this share of targets fails (default 0.5)...
    pub max_failing_share: Option<f64>,
    /// ...and at least this many (default 3).
    pub min_failing: Option<i64>,
}

/// `archive:`: where forensic bundles go.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    /// A local directory sink.
    pub local: Option<RawLocalArchive>,
    /// An S3 (or S3-compatible) sink; with `local` too, bundles go to both (local first).
    pub s3: Option<RawS3Archive>,
    /// Longest the heal waits for the bundle (default 30s): a container's evidence and the S3
    /// upload share it; after it, the bundle stays in the spool and is uploaded in the background.
    pub timeout: Option<RawDuration>,
    /// Per-file byte cap (default 64MiB): bigger files keep their newest bytes.
    pub max_file_size: Option<RawSize>,
}

/// `archive.s3:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3Archive {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix; bundles go to `{prefix}/{timestamp}-{target}/` (default `incidents`).
    pub prefix: Option<String>,
    /// AWS region (default: the AWS chain's, else us-east-1).
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, a local test server).
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    pub force_path_style: Option<bool>,
    /// Server-side encryption: `AES256` or `aws:kms`.
    pub sse: Option<String>,
    /// KMS key for `sse: aws:kms` (default: the bucket's AWS-managed key).
    pub sse_kms_key_id: Option<String>,
    /// Storage class, e.g. STANDARD, STANDARD_IA, INTELLIGENT_TIERING.
    pub storage_class: Option<String>,
    /// Files of this size or more go up in multipart uploads of this part size (default 8MiB,
    /// at least 5MiB); memory per upload stays at one part.
    pub part_size: Option<RawSize>,
}

/// A byte size: a bare integer of bytes, or `512KiB`, `8MiB`, `1GiB` (also KB, MB, GB).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

/// `archive.local:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalArchive {
    /// Directory that receives `{timestamp}-{target}/` bundles (created if missing).
    pub dir: String,
}

/// `notify:`: alert channels.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// Slack incoming webhook.
    pub slack: Option<RawChatWebhook>,
    /// Discord webhook.
    pub discord: Option<RawChatWebhook>,
    /// Generic JSON webhooks.
    pub webhooks: Option<Vec<RawGenericWebhook>>,
    /// PagerDuty Events API v2.
    pub pagerduty: Option<RawPagerDuty>,
    /// Print notices on standard output too (the demo turns this on).
    pub console: Option<bool>,
    /// Delivery attempts per notice before giving up (default 6).
    pub max_attempts: Option<i64>,
    /// Upper bound on the wait between attempts (default 30s).
    pub max_backoff: Option<RawDuration>,
}

/// `notify.pagerduty:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPagerDuty {
    /// The integration's routing key (a secret).
    pub routing_key: String,
    /// Events API URL (default PagerDuty's v2 enqueue endpoint; EU accounts use their own).
    pub url: Option<String>,
}

/// `heartbeat:`: pings to a dead-man switch, so the daemon's own death is noticed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    /// Any URL that alerts when pings stop (GET every interval).
    pub url: String,
    /// Default 60s.
    pub interval: Option<RawDuration>,
}

/// A Slack or Discord webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChatWebhook {
    /// The webhook URL (a secret: it is never logged).
    pub webhook_url: String,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGenericWebhook {
    /// Where the JSON is POSTed (a secret: only its host is ever logged).
    pub url: String,
    /// Extra request headers, for example an Authorization token.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One entry of `targets:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Unique name; used in bundle paths, logs, metrics and alerts.
    pub name: String,
    /// libpq-style connection string or URL. The password is never logged.
    pub dsn: String,
    /// Overrides of `defaults.probe`, key by key.
    pub probe: Option<RawProbe>,
    /// Overrides of `defaults.restart_budget`, key by key.
    pub restart_budget: Option<RawBudget>,
    /// Override of `defaults.recovery_timeout`.
    pub recovery_timeout: Option<RawDuration>,
    /// Files archived before any restart.
    pub forensics: Option<RawForensics>,
    /// How to restart the database.
    pub heal: Option<RawHeal>,
    /// The postmaster on this host, watched for instant death detection.
    pub process: Option<RawProcess>,
    /// Action per failure class, over the defaults' policy.
    pub policy: Option<BTreeMap<String, String>>,
}

/// `forensics:`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForensics {
    /// Paths or glob patterns; each match is copied whole into the bundle.
    #[serde(default)]
    pub files: Vec<String>,
    /// Files copied out of a container through the Engine API, plus its log tail.
    pub docker: Option<RawDockerForensics>,
}

/// `forensics.docker:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerForensics {
    /// Container name or id; default: the one `heal.docker` or `heal.compose` restarts.
    pub container: Option<String>,
    /// Compose project and service, instead of `container`.
    pub project: Option<String>,
    pub service: Option<String>,
    /// Absolute paths inside the container (files or directories).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Lines of the container's own stdout/stderr log kept (default 1000; 0: none).
    pub log_tail: Option<u32>,
}

/// `heal:`: exactly one of `command`, `docker`, `compose`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeal {
    /// Program and arguments run without a shell (for example `pg_ctl ... start`).
    pub command: Option<Vec<String>>,
    /// Limit for one run of the command (default 60s); on expiry its whole process group is
    /// killed.
    pub timeout: Option<RawDuration>,
    /// With `command` and `process.pid_file`: a postmaster still alive at heal time (hung) is
    /// stopped first, SIGQUIT then SIGKILL to it and its children after this long (default 10s).
    pub stop_timeout: Option<RawDuration>,
    /// With `command`: stops a hung server instead of SIGQUIT (argv, no shell), bounded by
    /// `stop_timeout`; a postmaster still alive after it is killed.
    pub stop_command: Option<Vec<String>>,
    /// With `command`: variables added to the heal commands' otherwise cleared environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Restart a container through the Docker Engine API.
    pub docker: Option<RawDockerHeal>,
    /// Restart a compose service's container, found by compose's labels.
    pub compose: Option<RawComposeHeal>,
}

/// `heal.docker:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerHeal {
    /// Container name or id.
    pub container: String,
    /// How long a stop waits before killing a hung container (default 10s).
    pub stop_timeout: Option<RawDuration>,
}

/// `heal.compose:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComposeHeal {
    /// The compose project (`name:` or the directory name).
    pub project: String,
    /// The service running PostgreSQL.
    pub service: String,
    /// How long a stop waits before killing a hung container (default 10s).
    pub stop_timeout: Option<RawDuration>,
}

/// `docker:`: the Docker Engine connection shared by every container target.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocker {
    /// Engine address: unix:///var/run/docker.sock or tcp://host:2375 (default: DOCKER_HOST,
    /// else the local socket).
    pub host: Option<String>,
    /// Follow the Engine's events so a dying container is noticed at once (default true).
    pub events: Option<bool>,
}

/// `process:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    /// The cluster's `postmaster.pid`; its first line is the postmaster's pid.
    pub pid_file: String,
}

/// `server:`: the HTTP status API and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on, e.g. 127.0.0.1:9187 (keep it private: /status names your targets).
    pub listen: String,
    /// Bearer token for the mutating endpoints (maintenance); without it they are off.
    pub token: Option<String>,
}

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
}
