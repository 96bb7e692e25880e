//! Where cluster state lives in etcd, under `/{prefix}/`.

/// The kinds of key the agent follows (`watch.rs`); any other key under the root is not its
/// business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `members/{id}`
    Member,
    /// `owner/{target}`
    Owner,
    /// `targets/{member}`: the target names a member lists.
    Listing,
    /// `listed/{member}`: the hash of that listing.
    Listed,
}

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

    /// Everything of this fleet: the prefix the agent watches.
    pub fn root(&self) -> &str {
        &self.root
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

    /// The target names a member lists (its registry and discovered targets), on its lease:
    /// `targets/{member}` = a JSON list; only members that list a target may own it.
    pub fn listing(&self, member: &str) -> String {
        format!("{}targets/{member}", self.root)
    }

    /// The hash of each member's listing, on its lease: `listed/{member}`. A full read takes
    /// these, and reads again only the listings whose hash changed.
    pub fn listed_all(&self) -> String {
        format!("{}listed/", self.root)
    }
    pub fn listed(&self, member: &str) -> String {
        format!("{}{member}", self.listed_all())
    }

    /// Which followed family `key` is of, and the name after its prefix.
    pub fn family<'a>(&self, key: &'a str) -> Option<(Family, &'a str)> {
        let rest = key.strip_prefix(self.root.as_str())?;
        let (dir, name) = rest.split_once('/')?;
        let family = match dir {
            "members" => Family::Member,
            "owner" => Family::Owner,
            "targets" => Family::Listing,
            "listed" => Family::Listed,
            _ => return None,
        };
        (!name.is_empty()).then_some((family, name))
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
