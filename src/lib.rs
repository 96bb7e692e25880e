//! SentinelRemedy: an autonomous reliability engine for PostgreSQL fleets.
//!
//! # Layout
//! - `cli`: command line (`run`, `check-config`, `notify-test`, `status`, `incidents`,
//!   `demo`) and exit statuses; `client` prints the API's answers as tables.
//! - `config`: the YAML target registry (or sidecar variables) → validated `Registry`.
//! - `actors`: Supervisor, one Monitor per target, shared Archiver, Healer, Notifier;
//!   `actors::messages` is the protocol between them.
//! - `incident`: incidents, the per-target record that outlives a Monitor, and the pure state
//!   machine (`step(record, env, observation) -> actions`) that makes every incident decision.
//! - `probe`: SQL probes, and every login to a database (TLS with libpq's `sslmode` in
//!   `probe::tls`, settings in `config::tls`); `failure`: how a probe failed (class,
//!   SQLSTATE), a leaf that config, policy and probe all read.
//! - `require_auth`: which authentication requests a probe answers (never a password in clear
//!   unless the DSN allows it), a leaf that config and probe read.
//! - `cause`: the likely cause of an incident (class, sentence, quoted evidence, fix) from the
//!   archived log tail, exit status, kernel log, Engine state and free space, and what it
//!   calls for (restart, hold for space, escalate, leave alone).
//! - `policy`: what each failure class calls for (restart or alert), with diagnoses.
//! - `flight`: the flight recorder (a ring of vitals per target for the bundle, the alert and
//!   `/status`) and the early warnings judged from it.
//! - `fleet`: the fleet guard (many targets failing at once holds every restart).
//! - `fsutil`: the file trust boundary (target files read without symlinks, FIFOs or /proc, with
//!   caps and deadlines; the daemon's own files 0600 in 0700 directories).
//! - `lease`: one restart per server across daemons (the async `LeaseBackend` seam; file leases).
//! - `cluster`: several daemons sharing one fleet through etcd (membership, ownership,
//!   takeover, fencing, restart intents and the state a takeover resumes from).
//! - `outage`: one incident per server outage across daemons (who announces it; fail open).
//! - `preflight`: what the daemon must be able to write, checked at start-up and by /healthz.
//! - `pidwatch`: instant postmaster-death detection through a pidfd; a stopped one from its state.
//! - `procfs`: process state from /proc (the reaper, the hung-server stop, the pid watch).
//! - `reaper`: adopts and reaps the postmasters heal commands start (no lingering zombies).
//! - `archive`: forensic bundles (local sink, manifest, S3 sink, upload spool and retries);
//!   `sql_snapshot`: what SQL could tell, as a bundle keeps it.
//! - `store`: incident history and budget state in SQLite, written by its own thread before
//!   each action.
//! - `api`: the HTTP API (status, metrics, incidents, maintenance) and the status page;
//!   `status`: what it shows for one target.
//! - `metrics`: the Prometheus registry.
//! - `heartbeat`: pings to a dead-man switch.
//! - `health`: whether the state, lease and spool directories still take writes (`/healthz`).
//! - `heal`: heal actions (a command; a container through the Docker Engine); `heal_report`:
//!   what a heal did, as the Monitor and the bundle read it.
//! - `docker`: the shared Engine client, container lookup, evidence copied out of containers,
//!   and the events that tell a Monitor its container died.
//! - `discovery`: targets found from Docker container labels, kept current from the
//!   Engine's events.
//! - `notify`: notices and the Slack, Discord, PagerDuty, webhook and console channels behind
//!   `Channel`, made by `notify::channels`; delivery retries.
//! - `ids`: names that become paths (target names, stamps, incident and member ids), each a
//!   type whose only constructor checks its grammar; what etcd or the store hands back is one.
//! - `backoff`, `redact`, `logging`, `signals`, `stamp`: small shared pieces.
//! - `pgcluster`, `demo`: throwaway local clusters for the demo, tests and benchmarks.
//! - `faults`: test-only fault injection (a Monitor panic or a daemon SIGKILL at a chosen point).

pub mod actors;
pub mod api;
pub mod archive;
pub mod backoff;
pub mod cause;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod docker;
pub mod failure;
pub mod faults;
pub mod fleet;
pub mod flight;
pub mod fsutil;
pub mod heal;
pub mod heal_report;
pub mod health;
pub mod heartbeat;
pub mod ids;
pub mod incident;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod outage;
pub mod pgcluster;
pub mod pidwatch;
pub mod policy;
pub mod preflight;
pub mod probe;
pub mod procfs;
pub mod reaper;
pub mod redact;
pub mod require_auth;
pub mod signals;
pub mod sql_snapshot;
pub mod stamp;
pub mod status;
pub mod store;
