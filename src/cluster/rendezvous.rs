//! Rendezvous (highest random weight) ranking of members for a target: every daemon computes
//! the same order from the same member list, so after an owner's death the first-ranked
//! member tries first and the others wait their rank's turn. The order only spreads the work
//! and avoids a stampede; the compare-and-swap in etcd decides who owns.

use sha2::{Digest, Sha256};

/// The weight of `member` for `target`: stable across processes, builds and hosts.
fn weight(target: &str, member: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(target.as_bytes());
    h.update([0]);
    h.update(member.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// `members` ordered for `target`, first choice first.
pub fn ranked<'a>(target: &str, members: &'a [String]) -> Vec<&'a str> {
    let mut m: Vec<(u64, &str)> = members
        .iter()
        .map(|id| (weight(target, id), id.as_str()))
        .collect();
    m.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    m.into_iter().map(|(_, id)| id).collect()
}

/// Where `member` stands for `target` (0 first), None when it is not a member.
pub fn rank(target: &str, members: &[String], member: &str) -> Option<usize> {
    ranked(target, members).iter().position(|m| *m == member)
}

/// Who should own each target, among only the members that list it: its first-ranked such
/// member that still has room, each member taking at most ceil(targets / members listing
/// any); a target whose every lister is full goes to its first choice anyway. Every daemon
/// computes the same map from the same listings, so shares are even (rendezvous alone leaves
/// +-30 % on 30 targets) while most targets still go to their first choice and stay there,
/// and no target is ever placed on a daemon that does not list it.
pub fn place(
    listings: &std::collections::BTreeMap<&str, &std::collections::BTreeSet<String>>,
) -> std::collections::HashMap<String, String> {
    use std::collections::{BTreeMap, HashMap};
    let mut out = HashMap::new();
    let mut listers: BTreeMap<&String, Vec<String>> = BTreeMap::new();
    for (m, targets) in listings {
        for t in targets.iter() {
            listers.entry(t).or_default().push(m.to_string());
        }
    }
    let busy = listings.values().filter(|t| !t.is_empty()).count();
    if busy == 0 {
        return out;
    }
    let cap = listers.len().div_ceil(busy);
    let mut load: HashMap<String, usize> = HashMap::new();
    // In name order, so every daemon fills the same members first.
    for (t, ms) in listers {
        let ranks = ranked(t, &ms);
        let room = ranks
            .iter()
            .find(|m| load.get(**m).copied().unwrap_or(0) < cap);
        if let Some(m) = room.or(ranks.first()) {
            *load.entry(m.to_string()).or_insert(0) += 1;
            out.insert(t.clone(), m.to_string());
        }
    }
    out
}

/// `place` when every member lists every target.
#[cfg(test)]
pub fn balanced<'a>(
    targets: impl IntoIterator<Item = &'a String>,
    members: &[String],
) -> std::collections::HashMap<String, String> {
    let all: std::collections::BTreeSet<String> = targets.into_iter().cloned().collect();
    place(&members.iter().map(|m| (m.as_str(), &all)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn shares_are_even_and_stable_when_a_member_leaves() {
        let three = members(3);
        let targets: Vec<String> = (0..300).map(|i| format!("db{i}")).collect();
        let first = |ms: &[String], t: &str| ranked(t, ms)[0].to_string();
        let mut counts = std::collections::HashMap::new();
        for t in &targets {
            *counts.entry(first(&three, t)).or_insert(0) += 1;
        }
        for m in &three {
            let c = counts[m];
            assert!((70..=130).contains(&c), "{m} got {c} of 300");
        }
        // Removing node-2 moves only node-2's targets.
        let two = members(2);
        for t in &targets {
            let before = first(&three, t);
            if before != "node-2" {
                assert_eq!(
                    before,
                    first(&two, t),
                    "{t} moved although its owner stayed"
                );
            }
        }
    }

    #[test]
    fn balanced_shares_differ_by_at_most_one() {
        for n in [1usize, 2, 3, 5] {
            let ms = members(n);
            let targets: Vec<String> = (0..30).map(|i| format!("db{i}")).collect();
            let map = balanced(&targets, &ms);
            assert_eq!(map.len(), 30);
            let mut counts = std::collections::HashMap::new();
            for m in map.values() {
                *counts.entry(m.clone()).or_insert(0) += 1;
            }
            let (lo, hi) = (
                counts.values().min().copied().unwrap_or(0),
                counts.values().max().copied().unwrap_or(0),
            );
            assert!(
                hi <= 30usize.div_ceil(n) && hi - lo <= 30 / n,
                "{n}: {counts:?}"
            );
        }
    }

    #[test]
    fn rank_follows_the_order() {
        let ms = members(4);
        let order = ranked("db7", &ms);
        for (i, m) in order.iter().enumerate() {
            assert_eq!(rank("db7", &ms, m), Some(i));
        }
        assert_eq!(rank("db7", &ms, "stranger"), None);
    }

    #[test]
    fn a_target_is_placed_only_on_a_member_that_lists_it() {
        let set = |ts: &[&str]| -> std::collections::BTreeSet<String> {
            ts.iter().map(|s| s.to_string()).collect()
        };
        let (a, b) = (
            set(&["only-a", "s1", "s2", "s3"]),
            set(&["s1", "s2", "s3", "only-b"]),
        );
        let map = place(&[("a", &a), ("b", &b)].into_iter().collect());
        assert_eq!(map.len(), 5);
        assert_eq!(map["only-a"], "a");
        assert_eq!(map["only-b"], "b");
        // Nobody lists it: placed nowhere.
        assert!(!map.contains_key("gone"));
        let lone = place(&[("a", &a), ("b", &set(&[]))].into_iter().collect());
        assert!(lone.values().all(|m| m == "a"));
        assert_eq!(lone.len(), 4);
    }
}
