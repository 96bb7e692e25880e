//! Who should own what, decided from what this daemon knows of etcd: the pure half of the
//! agent, so the rules (only a member that lists a target may own it; claim a free target
//! after rank x stagger; hand a target to the member placed first for it at a bounded pace;
//! give up what etcd says is no longer ours, and what we no longer list) are tested by tables,
//! without etcd.

use super::rendezvous;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A live daemon as registered in etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub lease: i64,
}

/// One owner key as read.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerKey {
    pub member: String,
    pub lease: i64,
    /// The key's mod revision: a claim over a ghost (below) is a compare-and-swap on it.
    pub revision: i64,
}

impl OwnerKey {
    /// Held by a live member: one registered under that id on the same lease. Any other owner
    /// key is a ghost (written by hand, or left on a lease whose member is gone or joined
    /// again on a new one): nobody runs its target, so it is as free as no key at all.
    pub fn is_live(&self, members: &[Member]) -> bool {
        members
            .iter()
            .any(|m| m.id == self.member && m.lease == self.lease)
    }
}

/// A free target to claim: no owner key (`over` None), or a ghost's key at that revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub target: String,
    pub over: Option<i64>,
}

/// What one reading of etcd shows, and what this daemon knows.
pub struct Reading<'a> {
    pub me: &'a str,
    pub my_lease: i64,
    pub members: &'a [Member],
    pub owners: &'a BTreeMap<String, OwnerKey>,
    /// The targets this daemon lists (its registry's and the discovered ones).
    pub targets: &'a BTreeSet<String>,
    /// Every live member's listing, ours being `targets`: only a member that lists a target
    /// may be handed it or claim it.
    pub listings: &'a BTreeMap<&'a str, &'a BTreeSet<String>>,
    /// Who should own each target: `rendezvous::place` over `listings`.
    pub desired: &'a HashMap<String, String>,
    /// What this daemon runs Monitors for.
    pub owned: &'a BTreeSet<String>,
    /// Targets with an open incident or failing probes: never handed off mid-incident.
    pub busy: &'a BTreeSet<String>,
    pub now: Instant,
    pub stagger: Duration,
    /// How many hand-offs this reading may start.
    pub handoffs: usize,
}

/// What to do about it.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Free targets to try to claim now (compare-and-swap on the owner key).
    pub claim: Vec<Claim>,
    /// Owned targets to hand to the member ranked first for them: (target, member, its lease).
    pub hand_off: Vec<(String, String, i64)>,
    /// Targets run here that etcd gives to another (or to nobody): stop at once.
    pub lost: Vec<String>,
    /// Targets etcd gives to us (a hand-off from another daemon) not yet run here.
    pub gained: Vec<String>,
    /// Owner keys of ours for targets we no longer list (and no incident is open on): delete
    /// them, for a member that lists them to claim.
    pub release: Vec<String>,
}

/// Decides from `r`; `free_since` remembers when each free target was first seen free (the
/// stagger counts from then) and is updated here.
pub fn plan(r: &Reading, free_since: &mut HashMap<String, Instant>) -> Plan {
    let mut p = Plan::default();
    let mine = |k: &OwnerKey| k.member == r.me && k.lease == r.my_lease;
    for t in r.owned {
        if !r.owners.get(t).is_some_and(mine) {
            p.lost.push(t.clone());
        }
    }
    for (t, k) in r.owners {
        if mine(k) && !r.targets.contains(t) && !r.busy.contains(t) {
            p.release.push(t.clone());
        }
    }
    let held = |t: &String| r.owners.get(t).is_some_and(|k| k.is_live(r.members));
    free_since.retain(|t, _| r.targets.contains(t) && !held(t));
    // The desired owner tries first, then the others that list it in rendezvous order.
    let turn = |t: &str| -> Option<usize> {
        let want = r.desired.get(t).map(String::as_str);
        if want == Some(r.me) {
            return Some(0);
        }
        let listers: Vec<String> = r
            .listings
            .iter()
            .filter(|(_, ts)| ts.contains(t))
            .map(|(m, _)| m.to_string())
            .collect();
        rendezvous::ranked(t, &listers)
            .into_iter()
            .filter(|m| Some(*m) != want)
            .position(|m| m == r.me)
            .map(|p| p + 1)
    };
    for t in r.targets {
        match r.owners.get(t) {
            Some(k) if mine(k) => {
                if !r.owned.contains(t) {
                    p.gained.push(t.clone());
                }
            }
            Some(k) if k.is_live(r.members) => {}
            ghost => {
                let since = *free_since.entry(t.clone()).or_insert(r.now);
                // Not yet registered as a member: nobody's turn is ours.
                let Some(rank) = turn(t) else {
                    continue;
                };
                if r.now.duration_since(since) >= r.stagger * rank as u32 {
                    p.claim.push(Claim {
                        target: t.clone(),
                        over: ghost.map(|k| k.revision),
                    });
                }
            }
        }
    }
    for t in r.owned {
        if p.hand_off.len() >= r.handoffs {
            break;
        }
        if p.lost.contains(t) || r.busy.contains(t) || !r.targets.contains(t) {
            continue;
        }
        if let Some(first) = r.desired.get(t).filter(|f| *f != r.me) {
            if let Some(m) = r.members.iter().find(|m| m.id == *first) {
                p.hand_off.push((t.clone(), m.id.clone(), m.lease));
            }
        }
    }
    p
}

/// Targets some live members list and others do not (registries that differ: a rolling
/// config change, one daemon's reload), each with the members that list it. Empty while
/// fewer than two members have published a listing.
pub fn disputed(listings: &BTreeMap<&str, &BTreeSet<String>>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if listings.len() < 2 {
        return out;
    }
    for (m, targets) in listings {
        for t in targets.iter() {
            out.entry(t.clone()).or_default().push(m.to_string());
        }
    }
    out.retain(|_, ms| ms.len() < listings.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Member {
                id: id.to_string(),
                lease: 100 + i as i64,
            })
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    struct Case {
        members: Vec<Member>,
        owners: BTreeMap<String, OwnerKey>,
        targets: BTreeSet<String>,
        owned: BTreeSet<String>,
        busy: BTreeSet<String>,
        /// What each member lists when not `targets`.
        lists: BTreeMap<String, BTreeSet<String>>,
    }

    impl Case {
        fn new(ids: &[&str], targets: &[&str]) -> Self {
            Self {
                members: members(ids),
                owners: BTreeMap::new(),
                targets: set(targets),
                owned: BTreeSet::new(),
                busy: BTreeSet::new(),
                lists: BTreeMap::new(),
            }
        }
        fn own(&mut self, t: &str, m: &str) {
            let lease = self
                .members
                .iter()
                .find(|x| x.id == m)
                .map_or(1, |x| x.lease);
            self.owners.insert(
                t.into(),
                OwnerKey {
                    member: m.into(),
                    lease,
                    revision: 1,
                },
            );
        }
        fn plan(&self, me: &str, after: Duration, handoffs: usize) -> Plan {
            let t0 = Instant::now();
            let mut free = HashMap::new();
            let lease = self
                .members
                .iter()
                .find(|x| x.id == me)
                .map_or(0, |x| x.lease);
            let mine = self.lists.get(me).unwrap_or(&self.targets);
            let listings: BTreeMap<&str, &BTreeSet<String>> = self
                .members
                .iter()
                .map(|m| {
                    (
                        m.id.as_str(),
                        self.lists.get(&m.id).unwrap_or(&self.targets),
                    )
                })
                .collect();
            let desired = rendezvous::place(&listings);
            let mut r = Reading {
                me,
                my_lease: lease,
                members: &self.members,
                owners: &self.owners,
                targets: mine,
                listings: &listings,
                desired: &desired,
                owned: &self.owned,
                busy: &self.busy,
                now: t0,
                stagger: Duration::from_millis(250),
                handoffs,
            };
            let first = plan(&r, &mut free);
            if after.is_zero() {
                return first;
            }
            r.now = t0 + after;
            plan(&r, &mut free)
        }
    }

    #[test]
    fn a_free_target_is_claimed_by_its_first_ranked_member_at_once_and_by_others_after_their_turn()
    {
        let c = Case::new(&["a", "b", "c"], &["db1"]);
        let ids: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // One target: its first choice has room.
        let order = rendezvous::ranked("db1", &ids);
        let free = |t: &str| Claim {
            target: t.into(),
            over: None,
        };
        assert_eq!(c.plan(order[0], Duration::ZERO, 0).claim, vec![free("db1")]);
        assert!(c.plan(order[2], Duration::ZERO, 0).claim.is_empty());
        assert!(c
            .plan(order[2], Duration::from_millis(400), 0)
            .claim
            .is_empty());
        assert_eq!(
            c.plan(order[2], Duration::from_millis(500), 0).claim,
            vec![free("db1")]
        );
    }

    #[test]
    fn an_owned_target_given_to_another_or_expired_is_lost_at_once() {
        let mut c = Case::new(&["a", "b"], &["db1", "db2"]);
        c.owned = set(&["db1", "db2"]);
        c.own("db1", "b");
        // db2's key vanished with our lease: lost too (then claimed again like any free one).
        let p = c.plan("a", Duration::ZERO, 0);
        assert_eq!(p.lost, vec!["db1", "db2"]);
    }

    #[test]
    fn a_key_on_an_old_lease_of_ours_is_not_ours() {
        let mut c = Case::new(&["a"], &["db1"]);
        c.owned = set(&["db1"]);
        c.owners.insert(
            "db1".into(),
            OwnerKey {
                member: "a".into(),
                lease: 7,
                revision: 1,
            },
        );
        assert_eq!(c.plan("a", Duration::ZERO, 0).lost, vec!["db1"]);
    }

    #[test]
    fn hand_offs_go_to_the_first_ranked_member_at_the_given_pace_never_mid_incident() {
        let targets: Vec<String> = (0..30).map(|i| format!("db{i}")).collect();
        let names: Vec<&str> = targets.iter().map(|s| s.as_str()).collect();
        let mut c = Case::new(&["a", "b"], &names);
        for t in &names {
            c.own(t, "a");
        }
        c.owned = set(&names);
        let p = c.plan("a", Duration::ZERO, 3);
        assert_eq!(p.hand_off.len(), 3);
        for (t, to, lease) in &p.hand_off {
            assert_eq!(to, "b");
            assert_eq!(*lease, 101);
            c.busy.insert(t.clone());
        }
        let again = c.plan("a", Duration::ZERO, 100);
        // Balanced: b's share is half of 30.
        assert_eq!(again.hand_off.len(), 15 - 3, "busy ones are kept");
        assert!(again.lost.is_empty() && again.claim.is_empty());
    }

    #[test]
    fn a_hand_off_to_us_is_gained_and_a_removed_target_released() {
        let mut c = Case::new(&["a", "b"], &["db1"]);
        c.own("db1", "a");
        c.own("gone", "a");
        let p = c.plan("a", Duration::ZERO, 0);
        assert_eq!(p.gained, vec!["db1"]);
        assert_eq!(p.release, vec!["gone"]);
    }

    #[test]
    fn a_daemon_not_yet_registered_claims_nothing() {
        let c = Case::new(&["b"], &["db1"]);
        let p = c.plan("a", Duration::from_secs(10), 0);
        assert!(p.claim.is_empty());
    }

    #[test]
    fn an_owner_key_without_a_live_member_is_claimed_over_its_revision() {
        let mut c = Case::new(&["a"], &["db1", "db2", "db3"]);
        // A member that never registered; our own id on a lease that is not our session's.
        c.owners.insert(
            "db1".into(),
            OwnerKey {
                member: "ghost".into(),
                lease: 0,
                revision: 41,
            },
        );
        c.owners.insert(
            "db2".into(),
            OwnerKey {
                member: "a".into(),
                lease: 7,
                revision: 42,
            },
        );
        c.own("db3", "a");
        c.owned = set(&["db3"]);
        let p = c.plan("a", Duration::ZERO, 0);
        let over = |t: &str, rev| Claim {
            target: t.into(),
            over: Some(rev),
        };
        assert_eq!(p.claim, vec![over("db1", 41), over("db2", 42)]);
        assert!(p.lost.is_empty());
    }

    #[test]
    fn only_a_member_that_lists_a_target_claims_it_or_is_handed_it() {
        let mut c = Case::new(&["a", "b"], &[]);
        c.lists.insert("a".into(), set(&["only-a", "s1", "s2"]));
        c.lists.insert("b".into(), set(&["s1", "s2", "only-b"]));
        // Long after every turn: b never claims only-a, a never only-b.
        let pa = c.plan("a", Duration::from_secs(60), 0);
        let pb = c.plan("b", Duration::from_secs(60), 0);
        let claimed =
            |p: &Plan| -> Vec<String> { p.claim.iter().map(|c| c.target.clone()).collect() };
        assert!(claimed(&pa).contains(&"only-a".to_string()));
        assert!(!claimed(&pa).contains(&"only-b".to_string()));
        assert!(!claimed(&pb).contains(&"only-a".to_string()));
        // a owns everything it lists: only the shared ones may move to b, never only-a.
        for t in ["only-a", "s1", "s2"] {
            c.own(t, "a");
        }
        c.owned = set(&["only-a", "s1", "s2"]);
        let p = c.plan("a", Duration::ZERO, 100);
        assert!(p
            .hand_off
            .iter()
            .all(|(t, to, _)| t != "only-a" && to == "b"));
    }

    #[test]
    fn a_target_we_no_longer_list_is_released_once_its_incident_is_over() {
        let mut c = Case::new(&["a", "b"], &["db1"]);
        c.lists.insert("b".into(), set(&["db1", "db2"]));
        c.own("db2", "a");
        c.owned = set(&["db2"]);
        c.busy = set(&["db2"]);
        assert!(c.plan("a", Duration::ZERO, 10).release.is_empty());
        c.busy.clear();
        let p = c.plan("a", Duration::ZERO, 10);
        assert_eq!(p.release, vec!["db2"]);
        assert!(
            p.hand_off.is_empty(),
            "released, not handed off: b claims it"
        );
    }

    #[test]
    fn targets_only_some_members_list_are_disputed() {
        let (a, b) = (set(&["only-a", "s1"]), set(&["s1", "only-b"]));
        let d = disputed(&[("a", &a), ("b", &b)].into_iter().collect());
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["only-a", "only-b"]);
        assert_eq!(d["only-a"], vec!["a"]);
        assert!(disputed(&[("a", &a)].into_iter().collect()).is_empty());
    }
}
