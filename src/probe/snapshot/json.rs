//! The server's rows parsed as JSON under bounds. A row's bytes are already capped by the
//! reader, but JSON of a megabyte can still nest deep or hold half a million tiny values,
//! each taking far more memory than its bytes; so the parser counts values against one
//! budget for the whole snapshot and refuses nesting past [`MAX_DEPTH`], failing the row.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// Deepest nesting kept: the sections nest three deep (rows, a row, its `blocked_by`).
pub const MAX_DEPTH: usize = 32;

/// Which bound a row broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Depth,
    Values,
}

/// Why a row was not kept.
#[derive(Debug)]
pub enum RowError {
    /// Over a bound (the snapshot says so).
    Limit(Limit),
    /// Not JSON at all (said in the section, as a server error would be).
    Malformed(serde_json::Error),
}

/// The JSON values the rest of the snapshot may still hold.
pub struct Budget {
    left: Cell<usize>,
    hit: Cell<Option<Limit>>,
}

impl Budget {
    pub fn new(values: usize) -> Self {
        Self {
            left: Cell::new(values),
            hit: Cell::new(None),
        }
    }

    /// `text` as JSON, its values charged to the budget (a failed row's stay charged: a
    /// server answering only refused rows still runs the budget down).
    pub fn parse(&self, text: &[u8]) -> Result<Value, RowError> {
        self.hit.set(None);
        let mut de = serde_json::Deserializer::from_slice(text);
        let v = Bounded {
            budget: self,
            depth: 0,
        }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
        match (v, self.hit.get()) {
            (_, Some(limit)) => Err(RowError::Limit(limit)),
            (Ok(v), None) => Ok(v),
            (Err(e), None) => Err(RowError::Malformed(e)),
        }
    }

    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get() {
            0 => self.refuse(Limit::Values),
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }

    fn refuse<T, E: de::Error>(&self, limit: Limit) -> Result<T, E> {
        self.hit.set(Some(limit));
        Err(E::custom("over the snapshot's JSON limits"))
    }
}

/// A `Value` deserializer that charges each value to the budget and counts its depth.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    budget: &'a Budget,
    depth: usize,
}

impl Bounded<'_> {
    fn inner<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return self.budget.refuse(Limit::Depth);
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }

    fn leaf<E: de::Error>(self, v: Value) -> Result<Value, E> {
        self.budget.take()?;
        Ok(v)
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.leaf(Value::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.leaf(Value::Number(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.leaf(Value::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        self.leaf(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.leaf(Value::String(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.leaf(Value::String(s))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.leaf(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.leaf(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let inner = self.inner()?;
        let mut v = Vec::new();
        while let Some(x) = seq.next_element_seed(inner)? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let inner = self.inner()?;
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            // The key is charged with its value: a member is one value more.
            let v = map.next_value_seed(inner)?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_within_the_bounds_parse_as_serde_json_would() {
        let text =
            br#"{"pid": 7, "blocked_by": [1, 2], "ok": true, "x": null, "f": 1.5, "s": "q"}"#;
        let b = Budget::new(100);
        assert_eq!(
            b.parse(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
        assert_eq!(b.left.get(), 100 - 9);
    }

    #[test]
    fn deep_nesting_and_too_many_values_fail_the_row_naming_the_limit() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            Budget::new(1000).parse(deep.as_bytes()),
            Err(RowError::Limit(Limit::Depth))
        ));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(Budget::new(1000).parse(ok.as_bytes()).is_ok());

        let b = Budget::new(10);
        assert!(matches!(
            b.parse(b"[0,0,0,0,0,0,0,0,0,0,0]"),
            Err(RowError::Limit(Limit::Values))
        ));
        assert!(matches!(b.parse(b"1"), Err(RowError::Limit(Limit::Values))));
        assert!(matches!(
            Budget::new(10).parse(b"xxxx"),
            Err(RowError::Malformed(_))
        ));
    }
}
