//! The console channel: one readable line per notice on standard output (the demo uses it).

use super::Notice;

pub fn line(n: &Notice) -> String {
    let facts: Vec<String> = n
        .facts()
        .into_iter()
        .skip(1)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!(
        "[{}] {} — {} | {}",
        n.timestamp.format("%H:%M:%S"),
        n.title(),
        n.summary,
        facts.join(" | ")
    )
}
