//! The incident machine's vocabulary: what it is told ([`Observation`]) and what it asks the
//! Monitor to do ([`Action`]). Plain data: no actor, clock or I/O type appears here, so a
//! table test can build any observation and compare the actions it gets back.

use super::{Incident, Phase};
use crate::archive::manifest::IncidentFacts;
use crate::heal_report::HealReport;
use crate::lease::LeaseRefusal;
use crate::notify::Notice;
use crate::probe::snapshot::SqlSnapshot;
use crate::probe::{FailureClass, ProbeFailure};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Something that happened to the target or to work the machine asked for.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A probe finished. `manager` is `Some` when the probe looked for another manager on the
    /// server (Patroni, ...): `Some(None)` means none is there.
    Probe {
        result: Result<(), ProbeFailure>,
        latency: Duration,
        manager: Option<Option<String>>,
    },
    /// The pid watch saw the postmaster exit.
    ProcessExited,
    /// The pid watch saw the postmaster stopped (SIGSTOP): hung, not dead.
    ProcessStopped { pid: i32 },
    /// Docker reported the container died, was paused or removed.
    ContainerDown {
        detail: String,
        class: Option<FailureClass>,
    },
    /// The container's restart policy, when it restarts after a crash.
    RestartPolicy(Option<String>),
    /// The SQL snapshot taken while the target was suspect.
    Snapshot(SqlSnapshot),
    /// A flight recorder sample (a probe's SQL numbers and the host's).
    Sample(crate::flight::Sample),
    /// The bundle was written (its location) or could not be (why).
    Archived {
        id: String,
        outcome: Result<String, String>,
        /// The likely cause, classified from the bundle's evidence (None: not classified).
        cause: Option<crate::cause::Cause>,
    },
    /// A server process crashed and the postmaster, alive, ran crash recovery (its
    /// checkpointer was replaced; the Engine reported an OOM kill while it runs).
    BackendCrash { detail: String },
    /// The filesystems a full disk held the restart for have room again.
    SpaceFreed { id: String },
    /// The restart lease for this incident was granted.
    LeaseGranted { id: String },
    /// The restart lease for this incident was refused.
    LeaseRefused { id: String, refusal: LeaseRefusal },
    /// The healer finished.
    Healed { id: String, report: HealReport },
    /// A held restart's timer fired.
    RetryHeal { id: String },
    /// recovery_timeout passed since the restart.
    RecoveryDeadline { id: String },
    /// The redo LSN in the server log when the restarted server first answered 57P03.
    RedoBaseline(Option<u64>),
    /// The redo LSN at the recovery deadline (None: the log shows none).
    RedoProgress {
        id: String,
        lsn: Option<(u64, String)>,
    },
    /// A new Monitor took over the record (after a panic or a daemon restart).
    Resume,
    /// The target's container was re-created (a new container id under the same target
    /// name): the open incident closes as replaced, not recovered (nothing came back; a new
    /// container took its place), and this record is done with.
    Replaced {
        container: String,
        container_id: String,
    },
}

/// Something for the Monitor to do, in order.
#[derive(Debug, Clone)]
pub enum Action {
    /// Capture what SQL can still tell while the target is only suspect.
    Snapshot,
    /// Write the forensic bundle.
    Archive {
        facts: IncidentFacts,
        snapshot: Option<SqlSnapshot>,
        /// The flight recorder's ring when the incident was declared (`flight.json`).
        flight: Option<Box<crate::flight::Recording>>,
    },
    /// Ask for the restart lease on the server; the answer comes back as an observation.
    AcquireLease {
        id: String,
        outage_started: DateTime<Utc>,
    },
    /// Give back a lease granted for an incident that no longer needs it.
    ReleaseLease,
    /// Run the heal. `failed_at`: a start of the container after it was already a restart
    /// for this outage. `max_starts`: how many starts the budget leaves this heal.
    Heal {
        /// Also the heal log's name.
        id: crate::ids::IncidentId,
        failed_at: DateTime<Utc>,
        max_starts: u32,
    },
    /// Tell the healer the incident is over (frees its per-incident state).
    HealDone {
        id: String,
    },
    Notify(Notice),
    /// The fleet guard tripped: send its one fleet-wide alert if nobody sent it yet.
    FleetAlert {
        failing: usize,
        total: usize,
    },
    /// Decide again about a held restart after `after`.
    RetryHeal {
        id: String,
        after: Duration,
    },
    /// Look for recovery `after` the restart.
    RecoveryTimer {
        id: String,
        after: Duration,
    },
    /// Read the redo LSN now, as the baseline for the recovery deadline.
    BaselineRedo,
    /// Read the redo LSN for the recovery deadline of `id`.
    CheckRedo {
        id: String,
    },
    /// Read the container's state (restart policy, existence).
    InspectContainer,
    /// Watch the free space of the data directory's and pg_wal's filesystems until they have
    /// room again, then observe [`Observation::SpaceFreed`].
    WatchSpace {
        id: String,
    },
    /// Probe again now.
    ProbeSoon,
    /// Write the incident and a timeline step. `closed`: `Some(Some((downtime, ttr)))` when a
    /// probe passed, `Some(None)` when it closed unrecovered, `None` while open.
    Persist {
        incident: Box<Incident>,
        phase: Phase,
        closed: Option<Option<(f64, f64)>>,
        event: &'static str,
        detail: String,
    },
    /// A timeline step only (the incident itself is already closed).
    Timeline {
        id: String,
        event: &'static str,
        detail: String,
    },
    /// Record a restart against the budget, durably, before the heal runs.
    RecordRestart,
    /// Keep the identity learned for the target's server (store, cluster state).
    SaveIdentity(crate::probe::identity::LearnedIdentity),
    /// A point where the test suite may crash the daemon or the Monitor: everything persisted
    /// before it is durable when it is reached.
    Checkpoint(&'static str),
    Count(Metric),
    Log(LogLine),
}

/// A metric the machine moves; the Monitor adds the target label.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    Incident { class: &'static str },
    Escalation,
    Restart,
    RecoverySeconds(f64),
}

/// A log record the Monitor writes with its target-scoped logger.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: Level,
    pub msg: &'static str,
    pub kv: Vec<(&'static str, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A log field's value, typed as JSON logs show it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Str(s.clone())
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::U64(n)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::U64(n.into())
    }
}
impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::U64(n as u64)
    }
}
impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::F64(n)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl LogLine {
    pub fn new(level: Level, event: &'static str, msg: &'static str) -> Self {
        let kv = if event.is_empty() {
            vec![]
        } else {
            vec![("event", Value::Str(event.into()))]
        };
        Self { level, msg, kv }
    }

    /// Adds a field.
    pub fn kv(mut self, key: &'static str, v: impl Into<Value>) -> Self {
        self.kv.push((key, v.into()));
        self
    }

    /// The `event` field, for tests.
    pub fn event(&self) -> Option<&str> {
        self.kv.iter().find_map(|(k, v)| match (k, v) {
            (&"event", Value::Str(s)) => Some(s.as_str()),
            _ => None,
        })
    }
}
