//! Bounds a YAML document before it is built into a tree. Aliases are expanded when a document
//! is deserialized, so a few kilobytes of nested aliases ("billion laughs") can stand for
//! billions of nodes; below serde_yaml's own repetition limit that exhausts memory and aborts
//! the process, also on a SIGHUP reload. The nodes are counted as the parser replays them,
//! without keeping any, and counting stops at the limit.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// Most nodes a registry may expand to (a thousand targets take about 40 000).
pub const MAX_NODES: u64 = 250_000;

const TOO_MANY: &str = "sentinel-remedy: node limit reached";

/// `Err(message)` when `text` expands to more than `max` nodes. Other parse errors are left to
/// the real parse, which reports them with their position.
pub fn check_nodes(text: &str, max: u64) -> Result<(), String> {
    let left = Cell::new(max);
    match (Counter { left: &left }).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(TOO_MANY) => Err(format!(
            "the document expands to more than {max} nodes (through aliases `*name`)"
        )),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy)]
struct Counter<'a> {
    left: &'a Cell<u64>,
}

impl Counter<'_> {
    fn tick<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get() {
            0 => Err(E::custom(TOO_MANY)),
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! scalar {
    ($($f:ident: $t:ty),*) => {$(
        fn $f<E: de::Error>(self, _: $t) -> Result<(), E> { self.tick() }
    )*};
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128, visit_u128: u128,
        visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged node (`!tag value`).
        self.tick()?;
        let (_, variant) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// About 10 KB: one anchor of 3000 scalars, then five levels of ten aliases each, which
    /// stays below serde_yaml's repetition limit and expands to 3 * 10^8 nodes.
    pub(crate) fn laughs() -> String {
        let mut s = format!("a0: &a0 [{}]\n", vec!["x"; 3000].join(","));
        for i in 1..=5 {
            let p = format!("*a{}", i - 1);
            s.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 10].join(", ")));
        }
        s
    }

    #[test]
    fn an_alias_bomb_is_stopped_at_the_limit() {
        let e = check_nodes(&laughs(), MAX_NODES).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn an_ordinary_document_passes_and_aliases_count_once_per_use() {
        check_nodes("a: &x [1, 2]\nb: *x\n", 100).unwrap();
        assert!(check_nodes("a: &x [1, 2]\nb: *x\n", 5).is_err());
        check_nodes("targets:\n  - name: [\n", 100).expect("syntax errors are left to the parse");
    }
}
