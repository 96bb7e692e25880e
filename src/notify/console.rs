//! The console channel: one readable line per notice on standard output (the demo uses it).

use super::Notice;

pub fn line(n: &Notice) -> String {
    let facts: Vec<String> = n
        .facts()
        .into_iter()
        .skip(1)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    // A terminal reads this: the server's text must not move the cursor or start a line.
    crate::logging::escape_controls_str(&format!(
        "[{}] {} — {} | {}",
        n.timestamp.format("%H:%M:%S"),
        n.title(),
        n.summary,
        facts.join(" | ")
    ))
}
