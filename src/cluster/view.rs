//! What this daemon knows of the cluster: the members, the owner keys and the target names
//! each member lists, kept by applying one full read and then every watched change in
//! revision order. Pure (no etcd, no clock): `watch.rs` feeds it, the agent plans from it.
//!
//! The agent's own writes are applied at once with the revision etcd gave them, so the plan
//! sees a claim, a hand-off or a release before the watch echoes it; an echo (or any older
//! change to that key) then changes nothing.

use super::keys::{Family, Keys};
use super::ownership::{Member, OwnerKey};
use crate::ids::{MemberId, TargetName};
use crate::store::Untrusted;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// One key as etcd holds it (from a full read or a watch event).
#[derive(Debug, Clone, Copy)]
pub struct Kv<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub lease: i64,
    pub revision: i64,
}

/// A key refused (its value is no daemon's writing), with the value, to be said once.
pub type Refused = (Untrusted, String);

/// The target names one member lists (`targets/{member}`) and that value's hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub hash: String,
    pub targets: BTreeSet<String>,
}

impl Listing {
    /// The value published for `targets` (sorted names, a JSON array) and its hash.
    pub fn encode(targets: &BTreeSet<String>) -> (String, String) {
        let value = serde_json::to_string(targets).unwrap_or_else(|_| "[]".into());
        let hash = hash(value.as_bytes());
        (value, hash)
    }

    fn decode(value: &[u8]) -> Result<Self, String> {
        let names: Vec<String> = serde_json::from_slice(value)
            .map_err(|e| format!("not a JSON list of target names: {e}"))?;
        for n in &names {
            TargetName::parse(n).map_err(|e| e.to_string())?;
        }
        Ok(Self {
            hash: hash(value),
            targets: names.into_iter().collect(),
        })
    }
}

fn hash(value: &[u8]) -> String {
    Sha256::digest(value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Default)]
pub struct View {
    /// Every change up to this revision is applied.
    pub revision: i64,
    /// Live members, by id.
    pub members: Vec<Member>,
    pub owners: BTreeMap<String, OwnerKey>,
    /// Each member's listing as read (`targets/{member}`).
    pub listings: BTreeMap<String, Listing>,
    /// The hash each member announces for its listing (`listed/{member}`): a full read
    /// reads again only the listings whose hash changed.
    announced: BTreeMap<String, String>,
    /// Owner keys this daemon deleted, not yet echoed: target → the delete's revision.
    gone: BTreeMap<String, i64>,
    /// Bumped whenever the members or a listing change: placement must be computed again.
    pub placement_gen: u64,
}

impl View {
    /// The members whose listing a full read (`kvs`) must fetch: those announcing a hash
    /// other than that of the listing held.
    pub fn listings_to_read(&self, keys: &Keys, kvs: &[Kv]) -> Vec<String> {
        kvs.iter()
            .filter_map(|kv| match keys.family(kv.key) {
                Some((Family::Listed, m)) => Some((m, kv.value)),
                _ => None,
            })
            .filter(|(m, h)| {
                self.listings
                    .get(*m)
                    .is_none_or(|l| l.hash.as_bytes() != *h)
            })
            .map(|(m, _)| m.to_string())
            .collect()
    }

    /// Replaces everything with a full read at `revision` (the kvs of the followed families,
    /// listings being those fetched as [`View::listings_to_read`] said, given to
    /// [`View::put`] after this); a listing whose announced hash is unchanged is kept.
    /// Answers the keys refused.
    pub fn load(&mut self, keys: &Keys, kvs: &[Kv], revision: i64) -> Vec<Refused> {
        let listings = std::mem::take(&mut self.listings);
        *self = View {
            placement_gen: self.placement_gen.wrapping_add(1),
            ..View::default()
        };
        let mut refused = vec![];
        for kv in kvs {
            refused.extend(self.put(keys, *kv));
        }
        self.revision = revision;
        for (m, h) in &self.announced {
            if let Some(l) = listings.get(m).filter(|l| l.hash == *h) {
                self.listings.insert(m.clone(), l.clone());
            }
        }
        refused
    }

    /// Applies one watched put; one refused removes what the key held, as if it were not
    /// there, and is answered.
    pub fn put(&mut self, keys: &Keys, kv: Kv) -> Option<Refused> {
        let (family, name) = keys.family(kv.key)?;
        let value = String::from_utf8_lossy(kv.value).to_string();
        let refuse = |what: String| {
            let shown: String = value.chars().take(200).collect();
            Some((
                Untrusted {
                    key: kv.key.to_string(),
                    what,
                },
                shown,
            ))
        };
        let name = name.to_string();
        match family {
            Family::Member => match MemberId::parse(&name) {
                Ok(_) => self.set_member(name, Some(kv.lease)),
                Err(e) => return refuse(e.to_string()),
            },
            Family::Owner => {
                if self.stale(&name, kv.revision) {
                    return None;
                }
                match TargetName::parse(&name).and_then(|_| MemberId::parse(&value)) {
                    Ok(m) => {
                        let key = OwnerKey {
                            member: m.to_string(),
                            lease: kv.lease,
                            revision: kv.revision,
                        };
                        self.owners.insert(name, key);
                    }
                    Err(e) => {
                        self.owners.remove(&name);
                        return refuse(e.to_string());
                    }
                }
            }
            Family::Listing | Family::Listed => {
                if let Err(e) = MemberId::parse(&name) {
                    return refuse(e.to_string());
                }
                self.placement_gen = self.placement_gen.wrapping_add(1);
                if family == Family::Listed {
                    self.announced.insert(name, value);
                    return None;
                }
                match Listing::decode(kv.value) {
                    Ok(l) => {
                        self.listings.insert(name, l);
                    }
                    Err(e) => {
                        self.listings.remove(&name);
                        return refuse(e);
                    }
                }
            }
        }
        None
    }

    /// Applies one watched delete.
    pub fn delete(&mut self, keys: &Keys, key: &str, revision: i64) {
        let Some((family, name)) = keys.family(key) else {
            return;
        };
        match family {
            Family::Member => self.set_member(name.to_string(), None),
            Family::Owner => {
                if !self.stale(name, revision) {
                    self.owners.remove(name);
                }
            }
            Family::Listing => {
                self.listings.remove(name);
                self.placement_gen = self.placement_gen.wrapping_add(1);
            }
            Family::Listed => {
                self.announced.remove(name);
            }
        }
    }

    /// Every change up to `revision` is applied: our own deletes older than that are echoed.
    pub fn applied(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
        let r = self.revision;
        self.gone.retain(|_, at| *at > r);
    }

    /// Our own write of `target`'s owner key at `revision` (None: deleted).
    pub fn wrote_owner(&mut self, target: &str, key: Option<OwnerKey>, revision: i64) {
        if self.stale(target, revision) {
            return;
        }
        match key {
            Some(k) => {
                self.gone.remove(target);
                self.owners.insert(target.to_string(), k);
            }
            None => {
                self.owners.remove(target);
                self.gone.insert(target.to_string(), revision);
            }
        }
    }

    /// A change to `target`'s owner key older than what this view holds of it.
    fn stale(&self, target: &str, revision: i64) -> bool {
        self.owners
            .get(target)
            .is_some_and(|k| k.revision > revision)
            || self.gone.get(target).is_some_and(|at| *at > revision)
    }

    fn set_member(&mut self, id: String, lease: Option<i64>) {
        self.members.retain(|m| m.id != id);
        if let Some(lease) = lease {
            let at = self.members.partition_point(|m| m.id < id);
            self.members.insert(at, Member { id, lease });
        }
        self.placement_gen = self.placement_gen.wrapping_add(1);
    }

    /// The live members' listings (members without one yet are left out): who can own what.
    pub fn live_listings(&self) -> BTreeMap<&str, &BTreeSet<String>> {
        self.members
            .iter()
            .filter_map(|m| Some((m.id.as_str(), &self.listings.get(&m.id)?.targets)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv<'a>(key: &'a str, value: &'a str, lease: i64, revision: i64) -> Kv<'a> {
        Kv {
            key,
            value: value.as_bytes(),
            lease,
            revision,
        }
    }

    #[test]
    fn an_echo_or_older_change_does_not_undo_our_own_write() {
        let keys = Keys::new("p");
        let mut v = View::default();
        v.put(&keys, kv("/p/owner/db1", "a", 7, 10));
        let ours = OwnerKey {
            member: "b".into(),
            lease: 8,
            revision: 12,
        };
        v.wrote_owner("db1", Some(ours.clone()), 12);
        // The claim's own echo at 10 arrives after our hand-off at 12.
        v.put(&keys, kv("/p/owner/db1", "a", 7, 10));
        assert_eq!(v.owners["db1"], ours);
        v.wrote_owner("db1", None, 14);
        v.put(&keys, kv("/p/owner/db1", "b", 8, 12));
        assert!(!v.owners.contains_key("db1"));
        v.applied(14);
        v.put(&keys, kv("/p/owner/db1", "c", 9, 15));
        assert_eq!(v.owners["db1"].member, "c");
    }

    #[test]
    fn a_full_read_keeps_listings_whose_hash_is_unchanged_and_asks_for_the_others() {
        let keys = Keys::new("p");
        let mut v = View::default();
        let (a, ha) = Listing::encode(&["db1".to_string()].into_iter().collect());
        let (b, hb) = Listing::encode(&["db2".to_string()].into_iter().collect());
        v.put(&keys, kv("/p/targets/a", &a, 1, 3));
        v.put(&keys, kv("/p/targets/b", &b, 2, 4));
        let read = [
            kv("/p/members/a", "{}", 1, 1),
            kv("/p/members/b", "{}", 2, 2),
            kv("/p/listed/a", &ha, 1, 3),
            kv("/p/listed/b", "changed", 2, 9),
        ];
        assert_eq!(v.listings_to_read(&keys, &read), vec!["b"]);
        assert!(v.load(&keys, &read, 9).is_empty());
        assert_eq!(v.live_listings().len(), 1);
        assert_eq!(v.listings["a"].hash, ha);
        assert_ne!(hb, "changed");
    }

    #[test]
    fn a_listing_that_is_not_target_names_is_refused_and_left_out() {
        let keys = Keys::new("p");
        let mut v = View::default();
        v.put(&keys, kv("/p/members/a", "{}", 1, 1));
        let (ok, _) = Listing::encode(&["db1".to_string()].into_iter().collect());
        v.put(&keys, kv("/p/targets/a", &ok, 1, 2));
        let r = v.put(&keys, kv("/p/targets/a", "[\"../etc\"]", 1, 3));
        assert!(r.is_some());
        assert!(v.live_listings().is_empty());
    }
}
