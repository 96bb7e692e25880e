//! Registry text → a YAML mapping with `${VAR}` expanded, and typed sections out of it. Each
//! section (and each target) is deserialized on its own, so one typo does not hide the next.

use super::error::Problems;
use super::expand::{expand, VarSource};
use super::trust::MAX_CONFIG_BYTES;
use super::yaml_guard;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

/// The keys a registry may have at its top level.
const TOP_LEVEL_KEYS: &[&str] = &[
    "defaults",
    "server",
    "fleet_guard",
    "lease",
    "cluster",
    "heartbeat",
    "docker",
    "archive",
    "notify",
    "targets",
    "discovery",
];

/// Parses the registry into its top-level mapping, expanding `${VAR}` and reporting unknown
/// keys. None when nothing more can be judged (the problems say why).
pub(crate) fn parse(text: &str, vars: &VarSource, problems: &mut Problems) -> Option<Mapping> {
    // Bounded before anything is built: a reload must never take the running daemon down.
    if text.len() as u64 > MAX_CONFIG_BYTES {
        problems.push(
            "(document)",
            format!(
                "the registry is {} bytes, more than {}",
                text.len(),
                MAX_CONFIG_BYTES
            ),
            "split the fleet over several daemons",
        );
        return None;
    }
    if let Err(e) = yaml_guard::check_nodes(text, yaml_guard::MAX_NODES) {
        problems.push(
            "(document)",
            e,
            "write the values out instead of nesting aliases (`*name`) inside anchors",
        );
        return None;
    }
    let mut doc: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(
                "(document)",
                format!("not valid YAML: {e}"),
                "fix the YAML syntax at the position shown",
            );
            return None;
        }
    };
    expand_tree(&mut doc, "", vars, problems);
    let Value::Mapping(map) = doc else {
        problems.push(
            "(document)",
            "the registry must be a mapping with a `targets:` list",
            "start from targets.yaml.example",
        );
        return None;
    };
    unknown_keys(&map, problems);
    Some(map)
}

/// Reports every top-level key the registry does not know.
fn unknown_keys(map: &Mapping, problems: &mut Problems) {
    for key in map.keys() {
        let k = key.as_str().unwrap_or("?");
        if !TOP_LEVEL_KEYS.contains(&k) {
            problems.push(
                k,
                format!("unknown key `{k}`"),
                format!("remove it or use one of: {}", TOP_LEVEL_KEYS.join(", ")),
            );
        }
    }
}

/// Deserializes one top-level section, recording a problem (with its key path) on failure.
pub(crate) fn section<T: DeserializeOwned>(
    map: &Mapping,
    key: &str,
    problems: &mut Problems,
) -> Option<T> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => typed(v.clone(), key, problems),
    }
}

/// Deserializes `v`, recording a problem at `at` plus the path inside `v` on failure.
pub(crate) fn typed<T: DeserializeOwned>(v: Value, at: &str, problems: &mut Problems) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                at.to_string()
            } else {
                format!("{at}.{inner}")
            };
            let msg = e.inner().to_string();
            let fix = if msg.starts_with("unknown field") {
                "remove the key or correct its spelling (see targets.yaml.example)".to_string()
            } else if msg.starts_with("missing field") {
                "add the key (see targets.yaml.example)".to_string()
            } else {
                "give a value of the type shown (see targets.yaml.example)".to_string()
            };
            problems.push(path, msg, fix);
            None
        }
    }
}

/// Expands `${VAR}` in every string of the document, recording each missing variable.
fn expand_tree(v: &mut Value, at: &str, vars: &VarSource, problems: &mut Problems) {
    match v {
        Value::String(s) => match expand(s, vars) {
            Ok(e) => *s = e,
            Err(missing) => {
                for name in missing {
                    problems.push(
                        if at.is_empty() { "(document)" } else { at },
                        format!("environment variable {name} is not set"),
                        format!("export {name}=... or add it to .env in the working directory"),
                    );
                }
            }
        },
        Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                expand_tree(item, &format!("{at}[{i}]"), vars, problems);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let path = if at.is_empty() {
                    key.to_string()
                } else {
                    format!("{at}.{key}")
                };
                expand_tree(item, &path, vars, problems);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, at, vars, problems),
        _ => {}
    }
}
