//! Which node should own which camera group: rendezvous (highest-random-weight) hashing with
//! bounded loads. Every node computes the same answer from the same member list, with no
//! coordination beyond reading it; no node gets more than ⌈groups / nodes⌉ groups, and a join
//! or leave moves few groups.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The weight of `node` for `group`: stable across builds and platforms (SHA-256, not the
/// standard library's hasher, whose output may change between Rust releases).
fn weight(node: &str, group: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0u8]);
    h.update(group.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// group id → node id for every group, given the live nodes (empty: no owners).
pub fn assign<'a>(groups: &'a [String], nodes: &[String]) -> BTreeMap<&'a str, String> {
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    let mut nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let capacity = groups.len().div_ceil(nodes.len());
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    // Groups in a fixed order (by id) so that the bounded fill is the same on every node.
    let mut order: Vec<&String> = groups.iter().collect();
    order.sort_unstable();
    let mut ranked: Vec<(u64, &str)> = Vec::with_capacity(nodes.len());
    for g in order {
        ranked.clear();
        ranked.extend(nodes.iter().map(|n| (weight(n, g), *n)));
        // Highest weight first; ties (astronomically rare) broken by node id.
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let chosen = ranked
            .iter()
            .map(|(_, n)| *n)
            .find(|n| load.get(n).copied().unwrap_or(0) < capacity)
            .expect("capacity × nodes ≥ groups leaves room for every group");
        *load.entry(chosen).or_default() += 1;
        out.insert(g.as_str(), chosen.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn loads(a: &BTreeMap<&str, String>) -> BTreeMap<String, usize> {
        let mut l = BTreeMap::new();
        for n in a.values() {
            *l.entry(n.clone()).or_default() += 1;
        }
        l
    }

    #[test]
    fn every_group_gets_one_owner_and_loads_are_even() {
        for (g, n) in [(12, 3), (12, 5), (7, 3), (100, 7), (3, 5), (1, 1)] {
            let groups = names("grp-", g);
            let nodes = names("node-", n);
            let a = assign(&groups, &nodes);
            assert_eq!(a.len(), g);
            let cap = g.div_ceil(n);
            for (node, count) in loads(&a) {
                assert!(
                    count <= cap,
                    "{node} has {count} > {cap} ({g} groups, {n} nodes)"
                );
            }
        }
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_nodes_are_listed() {
        let groups = names("g", 20);
        let mut nodes = names("n", 4);
        let a = assign(&groups, &nodes);
        nodes.reverse();
        nodes.push("n1".into()); // listed twice
        assert_eq!(a, assign(&groups, &nodes));
    }

    #[test]
    fn a_leaving_node_moves_its_groups_and_few_others() {
        let groups = names("group-", 60);
        let nodes = names("node-", 4);
        let before = assign(&groups, &nodes);
        let after = assign(&groups, &nodes[..3]);
        let gone = &nodes[3];
        let moved_elsewhere = groups
            .iter()
            .filter(|g| before[g.as_str()] != *gone && before[g.as_str()] != after[g.as_str()])
            .count();
        assert!(after.values().all(|n| n != gone));
        // Bounded loads move a few more than the leaver's own groups, far from a reshuffle.
        assert!(
            moved_elsewhere <= groups.len() / 4,
            "moved {moved_elsewhere}"
        );
    }

    #[test]
    fn no_nodes_no_owners() {
        assert!(assign(&names("g", 3), &[]).is_empty());
    }
}
