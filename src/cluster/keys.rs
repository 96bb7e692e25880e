//! Where cluster state lives in etcd, under `/{prefix}/`.

/// The key names of one fleet.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            root: format!("/{prefix}/"),
        }
    }

    /// Live daemons: `members/{id}`, on each daemon's lease.
    pub fn members(&self) -> String {
        format!("{}members/", self.root)
    }
    pub fn member(&self, id: &str) -> String {
        format!("{}{id}", self.members())
    }

    /// Who owns a target: `owner/{target}` = member id, on the owner's lease.
    pub fn owners(&self) -> String {
        format!("{}owner/", self.root)
    }
    pub fn owner(&self, target: &str) -> String {
        format!("{}{target}", self.owners())
    }

    /// What survives a takeover: `state/{target}` (budget, backoff, the open incident).
    pub fn state(&self, target: &str) -> String {
        format!("{}state/{target}", self.root)
    }

    /// Outages announced while coordination was lost, for the target's next owner:
    /// `announced/{target}` ([`super::announce`]).
    pub fn announcements(&self) -> String {
        format!("{}announced/", self.root)
    }
    pub fn announced(&self, target: &str) -> String {
        format!("{}{target}", self.announcements())
    }

    /// The last restart intent for a server: `restart/{host:port}`.
    pub fn restart(&self, server: &str) -> String {
        format!("{}restart/{server}", self.root)
    }

    /// The part of `key` after `prefix`, when it starts with it.
    pub fn strip<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
        key.strip_prefix(prefix).filter(|rest| !rest.is_empty())
    }
}
