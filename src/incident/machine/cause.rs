//! Judgment from the cause: a server that recovered by itself is not restarted (a backend
//! crash), a full disk holds the restart until the filesystem has room again, and a start that
//! cannot work is escalated at its first failure (`heal.rs`, from the heal's report).

use super::super::actions::{Action, Level};
use super::super::Phase;
use super::Machine;
use crate::cause::Judgment;
use crate::notify::NoticeKind;
use crate::probe::{FailureClass, ProbeFailure};

impl Machine<'_, '_> {
    /// The pid watch saw the postmaster replace its checkpointer, or the Engine reported an
    /// OOM kill in a container whose postmaster lives: a server process crashed and every
    /// connection was dropped. Declared at once (the server is back before any probe fails),
    /// archived and alerted; never restarted.
    pub(super) fn on_backend_crash(&mut self, detail: String) {
        if !matches!(self.rec.phase, Phase::Healthy | Phase::Suspect) || self.rec.process_dead {
            self.log(
                Level::Debug,
                "",
                "backend crash during an incident: nothing more to do",
            )
            .push(("detail", detail.into()));
            return;
        }
        if self.in_maintenance() {
            self.log(
                Level::Warn,
                "maintenance_suppressed",
                "backend crash during maintenance: no archive or alert",
            )
            .push(("detail", detail.into()));
            return;
        }
        self.log(
            Level::Warn,
            "backend_crash",
            "a server process crashed and the postmaster ran crash recovery",
        )
        .push(("detail", detail.as_str().into()));
        self.rec.first_failure = Some((self.env.now_utc, self.env.now));
        self.declare(ProbeFailure::new(FailureClass::BackendCrash, detail), false);
    }

    /// The postmaster died after all, during a backend-crash incident (its crash recovery
    /// failed, or the container died after its `oom` event): the incident becomes a death,
    /// restarted like any other. Returns whether the incident was a backend crash.
    pub(super) fn died_after_backend_crash(&mut self, detail: &str) -> bool {
        let Some(inc) = self
            .rec
            .incident
            .as_mut()
            .filter(|i| i.failure.class == FailureClass::BackendCrash)
        else {
            return false;
        };
        inc.failure = ProbeFailure::new(
            FailureClass::ProcessExited,
            format!("{detail}, after a backend crash: {}", inc.failure.detail),
        );
        inc.hard = true;
        let id = inc.id.to_string();
        self.rec.process_dead = true;
        self.log(
            Level::Warn,
            "postmaster_died_after_backend_crash",
            "the postmaster died after a backend crash: restarting it like any death",
        )
        .push(("incident", id.into()));
        // While archiving, the archive's answer decides with the new class.
        if self.rec.phase == Phase::Unhealed {
            // Waiting for the restart's gates (the lease's answer among them).
            self.rec.phase = Phase::Held;
            self.start_heal();
        }
        true
    }

    /// A backend-crash incident stays open until its alert is out, though the server is back:
    /// the probe that passes during the archive does not close it unannounced.
    pub(super) fn awaits_its_alert(&self) -> bool {
        self.rec.phase == Phase::Archiving
            && self
                .rec
                .incident
                .as_ref()
                .is_some_and(|i| i.failure.class == FailureClass::BackendCrash && !i.alerted)
    }

    /// A full disk: the restart is held, one alert gives the numbers and the fix, and the
    /// space is watched. Returns whether the restart is held (now or already).
    pub(super) fn held_for_space(&mut self) -> bool {
        let Some(inc) = self.rec.incident.as_mut() else {
            return false;
        };
        let Some(cause) = inc
            .cause
            .clone()
            .filter(|c| c.class.judgment() == Judgment::WaitForSpace)
        else {
            return false;
        };
        if inc.space_freed {
            return false;
        }
        if inc.held_for_space {
            return true;
        }
        inc.held_for_space = true;
        inc.alerted = true;
        let id = inc.id.to_string();
        self.rec.phase = Phase::Held;
        let kv = self.log(
            Level::Warn,
            "restart_held_disk_full",
            "disk full: restart held until the filesystem has room again",
        );
        kv.push(("incident", id.as_str().into()));
        kv.push(("cause", cause.sentence.as_str().into()));
        let fix = cause.fix.clone().unwrap_or_default();
        let failure = self.rec.incident.as_ref().map(|i| i.failure.clone());
        let n = self.failure_notice(
            NoticeKind::Failure,
            format!("Restart held: a restart cannot make room on a full disk. The server is started once, when the data directory's and pg_wal's filesystems have 10 % or 1 GiB free. {fix}"),
            None,
            failure,
        );
        self.out.push(Action::WatchSpace { id });
        self.announce(n, "held", "disk full: waiting for free space".into());
        true
    }

    /// The space a full disk held the restart for is free again: start the server once.
    pub(super) fn on_space_freed(&mut self, id: &str) {
        if !(self.rec.phase == Phase::Held && self.is_open(id)) {
            return;
        }
        let Some(inc) = self.rec.incident.as_mut().filter(|i| i.held_for_space) else {
            return;
        };
        inc.held_for_space = false;
        inc.space_freed = true;
        self.log(
            Level::Info,
            "disk_space_freed",
            "the filesystem has room again: restarting once",
        )
        .push(("incident", id.into()));
        self.start_heal();
    }
}
