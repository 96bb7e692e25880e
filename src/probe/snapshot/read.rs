//! One answer after another on the snapshot's connection, read under the snapshot's limits
//! while it streams: each message at most [`ROW_LIMIT`] (a longer row is read in small
//! chunks and dropped), all of them together at most [`READ_LIMIT`] (past it the connection
//! is given up), and the rows' JSON within the [`json`](super::json) bounds. Each answer says
//! what was cut from it, so the bundle can.

use super::json::{Budget, Limit, RowError, MAX_DEPTH};
use crate::probe::login::server_error;
use crate::probe::wire::{Incoming, Wire};
use crate::probe::ProbeFailure;
use postgres_protocol::message::backend::{DataRowBody, Message};
use serde_json::Value;

/// Bytes read from the server after the login, rows kept or dropped: the snapshot of a server
/// with thousands of sessions stays well under it.
pub const READ_LIMIT: usize = 16 << 20;
/// Longest message kept, so longest row and field: a session's row with its query text cut to
/// 64 Ki characters fits.
pub const ROW_LIMIT: usize = 1 << 20;
/// JSON values kept in all (each costs tens of bytes in memory, whatever its text).
pub const VALUE_LIMIT: usize = 200_000;

/// Why the connection was given up.
enum Ended {
    /// The read limit: the message that did not fit had this many bytes.
    ReadLimit(usize),
    /// The server closed it, or sent something that is not the protocol.
    Lost(ProbeFailure),
}

/// Reads the answers of queries already sent, in order.
pub struct Reader<'w> {
    wire: &'w mut Wire,
    json: Budget,
    ended: Option<Ended>,
}

/// One query's answer.
#[derive(Default)]
pub struct Answer {
    /// The rows kept (each one JSON value).
    pub rows: Vec<Value>,
    /// The server's error, or why the answer could not be read.
    pub error: Option<String>,
    /// What a limit cut from this answer, or `None` when nothing was.
    pub cut: Option<String>,
}

/// What was dropped while reading one answer.
#[derive(Default)]
struct Dropped {
    over_row: usize,
    other_over: usize,
    too_deep: usize,
    over_values: usize,
}

impl<'w> Reader<'w> {
    /// Reads from `wire`, charging every byte to [`READ_LIMIT`].
    pub fn new(wire: &'w mut Wire) -> Self {
        wire.set_budget(READ_LIMIT);
        Self {
            wire,
            json: Budget::new(VALUE_LIMIT),
            ended: None,
        }
    }

    /// The next answer, through its ReadyForQuery.
    pub async fn answer(&mut self) -> Answer {
        let mut a = Answer::default();
        match &self.ended {
            Some(Ended::ReadLimit(_)) => {
                a.cut = Some(format!(
                    "not read: the snapshot's {} MiB read limit was reached before this section",
                    READ_LIMIT >> 20
                ));
                return a;
            }
            Some(Ended::Lost(e)) => {
                a.error = Some(format!("error: not read: {}", e.detail));
                return a;
            }
            None => {}
        }
        let mut dropped = Dropped::default();
        loop {
            let msg = match self.wire.read_within(ROW_LIMIT).await {
                Ok(Incoming::Message(m)) => m,
                Ok(Incoming::Skipped { tag: b'D', .. }) => {
                    dropped.over_row += 1;
                    continue;
                }
                Ok(Incoming::Skipped { tag: b'E', .. }) => {
                    a.error.get_or_insert_with(|| {
                        format!(
                            "error: the server's error message was over the {} MiB message limit",
                            ROW_LIMIT >> 20
                        )
                    });
                    continue;
                }
                Ok(Incoming::Skipped { .. }) => {
                    dropped.other_over += 1;
                    continue;
                }
                Ok(Incoming::OverBudget { len }) => {
                    self.ended = Some(Ended::ReadLimit(len));
                    break;
                }
                Err(e) => {
                    a.error
                        .get_or_insert_with(|| format!("error: {}", e.detail));
                    self.ended = Some(Ended::Lost(e));
                    break;
                }
            };
            match msg {
                Message::DataRow(row) => self.row(&row, &mut a, &mut dropped),
                Message::ErrorResponse(body) => {
                    let e = server_error(body.fields());
                    a.error
                        .get_or_insert_with(|| format!("error: {}", e.detail));
                }
                Message::ReadyForQuery(_) => break,
                // RowDescription, CommandComplete, notices: nothing to keep.
                _ => {}
            }
        }
        a.cut = self.says(&dropped, a.rows.len());
        a
    }

    /// Keeps a row's first field as JSON, or counts why not.
    fn row(&self, row: &DataRowBody, a: &mut Answer, dropped: &mut Dropped) {
        let field = match first_field(row) {
            Ok(Some(f)) => f,
            Ok(None) => return a.rows.push(Value::Null),
            Err(e) => {
                a.error.get_or_insert_with(|| format!("unreadable: {e}"));
                return;
            }
        };
        match self.json.parse(field) {
            Ok(v) => a.rows.push(v),
            Err(RowError::Limit(Limit::Depth)) => dropped.too_deep += 1,
            Err(RowError::Limit(Limit::Values)) => dropped.over_values += 1,
            Err(RowError::Malformed(e)) => {
                a.error.get_or_insert_with(|| format!("unreadable: {e}"));
            }
        }
    }

    /// What the limits cut from the answer just read, in words naming each limit.
    fn says(&self, d: &Dropped, kept: usize) -> Option<String> {
        let mut said = Vec::new();
        let mut count = |n: usize, what: String| {
            if n > 0 {
                said.push(format!("{n} {what}"));
            }
        };
        count(
            d.over_row,
            format!("rows over the {} MiB row limit dropped", ROW_LIMIT >> 20),
        );
        count(
            d.other_over,
            format!(
                "other messages over the {} MiB message limit dropped",
                ROW_LIMIT >> 20
            ),
        );
        count(
            d.too_deep,
            format!("rows nested deeper than the JSON depth limit ({MAX_DEPTH}) dropped"),
        );
        count(
            d.over_values,
            format!("rows dropped at the snapshot's limit of {VALUE_LIMIT} JSON values"),
        );
        if let Some(Ended::ReadLimit(len)) = &self.ended {
            said.push(format!(
                "cut at the snapshot's {} MiB read limit (by a message of {len} bytes); {kept} rows kept",
                READ_LIMIT >> 20
            ));
        }
        (!said.is_empty()).then(|| said.join("; "))
    }
}

/// The first column of a row: `None` for SQL NULL.
fn first_field(row: &DataRowBody) -> std::io::Result<Option<&[u8]>> {
    use fallible_iterator::FallibleIterator;
    let buf = row.buffer();
    Ok(row.ranges().next()?.flatten().map(|r| &buf[r]))
}
