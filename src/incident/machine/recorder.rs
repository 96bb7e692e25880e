//! The flight recorder's part in the machine: each sample joins the target's ring, and the
//! early warnings are judged on it (`flight::warn`): one warning notice per condition when it
//! starts, one clearing notice when it ends, both under one id so chat messages are edited and
//! PagerDuty resolves what it triggered. During a maintenance window nothing new is raised.

use super::super::actions::{Action, Level};
use super::Machine;
use crate::flight::warn::{self, Change, Condition};
use crate::flight::{Recording, Sample};
use crate::notify::{Notice, NoticeKind};

impl Machine<'_, '_> {
    pub(super) fn on_sample(&mut self, s: Sample) {
        let cfg = &self.env.target.recorder;
        // The window's far end, with half a period of slack for a late probe.
        let reach = cfg.window + cfg.every / 2;
        let reach_ms = i64::try_from(reach.as_millis()).unwrap_or(i64::MAX);
        self.rec
            .flight
            .forget_before(s.at_ms.saturating_sub(reach_ms));
        self.rec.flight.push(s, cfg.samples());
        let raised = self.rec.warnings.keys().copied().collect();
        for change in warn::changes(&s, &cfg.warn, &raised) {
            match change {
                Change::Raise(c, _) if self.in_maintenance() => {
                    self.log(
                        Level::Debug,
                        "",
                        "early warning not raised: maintenance window",
                    )
                    .push(("condition", c.label().into()));
                }
                Change::Raise(c, text) => self.raise(c, text),
                Change::Clear(c, text) => self.clear(c, text),
            }
        }
    }

    fn raise(&mut self, c: Condition, text: String) {
        let stamp = crate::ids::Stamp::of(self.env.now_utc);
        let target = &self.env.target.name;
        let id = format!(
            "{}-{}",
            crate::ids::IncidentId::new(&stamp, target),
            c.label()
        );
        let kv = self.log(
            Level::Warn,
            "early_warning",
            "heading for a failure a restart cannot fix",
        );
        kv.push(("condition", c.label().into()));
        kv.push(("detail", text.as_str().into()));
        let summary = format!("{}: {text}. {}", sentence(c), c.fix());
        let n = self.warning(NoticeKind::Warning, &id, summary);
        self.rec.warnings.insert(c, id);
        self.out.push(Action::Notify(n));
    }

    fn clear(&mut self, c: Condition, text: String) {
        let Some(id) = self.rec.warnings.remove(&c) else {
            return;
        };
        let kv = self.log(
            Level::Info,
            "early_warning_cleared",
            "early warning cleared",
        );
        kv.push(("condition", c.label().into()));
        kv.push(("detail", text.as_str().into()));
        let summary = format!("No longer {}: {text}.", lower_first(sentence(c)));
        let n = self.warning(NoticeKind::WarningCleared, &id, summary);
        self.out.push(Action::Notify(n));
    }

    /// A warning's notice: no failure, archive or outage (nothing is down).
    fn warning(&self, kind: NoticeKind, id: &str, summary: String) -> Notice {
        let t = self.env.target;
        Notice {
            kind,
            target: t.name.clone(),
            endpoint: t.dsn.endpoint(),
            incident_id: id.to_string(),
            timestamp: self.env.now_utc,
            failure: None,
            archive: None,
            reason: None,
            downtime_seconds: None,
            time_to_recovery_seconds: None,
            summary,
            outage: None,
            cause: None,
        }
    }

    /// The ring for the bundle, when the recorder is on.
    pub(super) fn recording(&self) -> Option<Box<Recording>> {
        let cfg = &self.env.target.recorder;
        cfg.enabled
            .then(|| Box::new(self.rec.flight.recording(cfg.every, cfg.window)))
    }
}

/// The condition as the start of a sentence.
/// `Transaction ID wraparound near` → `transaction ID wraparound near` (an acronym stays).
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

fn sentence(c: Condition) -> &'static str {
    match c {
        Condition::DiskNearlyFull => "Disk nearly full",
        Condition::ConnectionsNearlyExhausted => "Connections nearly exhausted",
        Condition::XidWraparoundNear => "Transaction ID wraparound near",
    }
}
