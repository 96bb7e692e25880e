//! Key paths into a registry tree (`targets[0].heal.docker.container`), for building a
//! registry from something other than a file (the sidecar variables).

use serde_yaml::{Mapping, Value};

/// The steps of a key path: mapping keys, each maybe with a list index (`webhooks[0]`).
fn steps(path: &str) -> impl Iterator<Item = (&str, Option<usize>)> {
    path.split('.').map(|s| match s.split_once('[') {
        Some((key, index)) => (key, index.trim_end_matches(']').parse().ok()),
        None => (s, None),
    })
}

/// Sets the value at `path`, creating the mappings and list entries on the way.
pub(crate) fn set(tree: &mut Mapping, path: &str, value: Value) {
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut m = tree;
    for (key, index) in steps(parent).filter(|(k, _)| !k.is_empty()) {
        let mut slot = m.entry(key.into()).or_insert_with(|| match index {
            Some(_) => Value::Sequence(Vec::new()),
            None => Value::Mapping(Mapping::new()),
        });
        if let Some(i) = index {
            let seq = as_sequence(slot);
            if seq.len() <= i {
                seq.resize(i + 1, Value::Mapping(Mapping::new()));
            }
            slot = &mut seq[i];
        }
        m = as_mapping(slot);
    }
    m.insert(last.into(), value);
}

fn as_mapping(v: &mut Value) -> &mut Mapping {
    if !v.is_mapping() {
        *v = Value::Mapping(Mapping::new());
    }
    match v {
        Value::Mapping(m) => m,
        _ => unreachable!("just made a mapping"),
    }
}

fn as_sequence(v: &mut Value) -> &mut Vec<Value> {
    if !v.is_sequence() {
        *v = Value::Sequence(Vec::new());
    }
    match v {
        Value::Sequence(s) => s,
        _ => unreachable!("just made a sequence"),
    }
}

/// The value at `path`, if set.
pub(crate) fn get<'a>(tree: &'a Mapping, path: &str) -> Option<&'a Value> {
    let mut steps = steps(path);
    let (key, index) = steps.next()?;
    let mut v = tree.get(key)?;
    if let Some(i) = index {
        v = v.get(i)?;
    }
    for (key, index) in steps {
        v = v.get(key)?;
        if let Some(i) = index {
            v = v.get(i)?;
        }
    }
    Some(v)
}

/// The value at `path`, if set, for changing.
pub(crate) fn get_mut<'a>(tree: &'a mut Mapping, path: &str) -> Option<&'a mut Value> {
    let mut steps = steps(path);
    let (key, index) = steps.next()?;
    let mut v = tree.get_mut(key)?;
    if let Some(i) = index {
        v = v.get_mut(i)?;
    }
    for (key, index) in steps {
        v = v.get_mut(key)?;
        if let Some(i) = index {
            v = v.get_mut(i)?;
        }
    }
    Some(v)
}

/// Removes the key at `path`, if set.
pub(crate) fn remove(tree: &mut Mapping, path: &str) {
    match path.rsplit_once('.') {
        None => {
            tree.remove(path);
        }
        Some((parent, last)) => {
            if let Some(Value::Mapping(m)) = get_mut(tree, parent) {
                m.remove(last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_makes_the_mappings_and_list_entries_on_the_way_and_get_and_remove_find_them() {
        let mut t = Mapping::new();
        set(&mut t, "notify.webhooks[0].url", "u".into());
        set(&mut t, "targets[0].heal.docker.container", "pg1".into());
        set(&mut t, "targets[0].name", "a".into());
        assert_eq!(get(&t, "notify.webhooks[0].url"), Some(&Value::from("u")));
        assert_eq!(
            get(&t, "notify.webhooks")
                .and_then(Value::as_sequence)
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(
            get(&t, "targets[0].heal.docker.container"),
            Some(&Value::from("pg1"))
        );
        remove(&mut t, "targets[0].heal");
        assert_eq!(get(&t, "targets[0].heal"), None);
        assert_eq!(get(&t, "targets[0].name"), Some(&Value::from("a")));
        remove(&mut t, "notify");
        assert_eq!(get(&t, "notify.webhooks[0].url"), None);
    }
}
