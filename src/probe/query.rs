//! The probe's queries over its own connection (simple query protocol), keeping only the
//! first row (of the probe query, its first column); every byte read counts against the
//! connection's budget.

use super::login::server_error;
use super::wire::Wire;
use super::{FailureClass, ProbeFailure};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

/// The first row's first column: `None` no row, `Some(None)` NULL.
pub type FirstValue = Option<Option<String>>;

/// The first row's columns (`None` a NULL), or `None` when no row came.
pub type FirstRow = Option<Vec<Option<String>>>;

/// Appends a Query message for `sql` to `out` (sent with the login).
pub fn push(sql: &str, out: &mut BytesMut) -> Result<(), ProbeFailure> {
    frontend::query(sql, out).map_err(|e| {
        ProbeFailure::new(
            FailureClass::QueryError,
            format!("the probe query cannot be sent: {e}"),
        )
    })
}

/// Reads the answer to one query already sent, through to ReadyForQuery.
pub async fn first_value(w: &mut Wire) -> Result<FirstValue, ProbeFailure> {
    Ok(first_row(w)
        .await?
        .map(|cols| cols.into_iter().next().flatten()))
}

/// Reads the answer to one query already sent, through to ReadyForQuery, keeping the first
/// row's columns.
pub async fn first_row(w: &mut Wire) -> Result<FirstRow, ProbeFailure> {
    let mut out = BytesMut::new();
    let mut first: FirstRow = None;
    let mut failed: Option<ProbeFailure> = None;
    loop {
        match w.read().await? {
            Message::DataRow(row) if first.is_none() => {
                let buf = row.buffer();
                let mut cols = Vec::new();
                let mut ranges = row.ranges();
                while let Ok(Some(r)) = ranges.next() {
                    cols.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                }
                first = Some(cols);
            }
            Message::ErrorResponse(body) => {
                failed.get_or_insert(server_error(body.fields()));
            }
            Message::CopyInResponse(_) => {
                out.clear();
                frontend::copy_fail("a probe sends no COPY data", &mut out)
                    .map_err(|e| ProbeFailure::new(FailureClass::QueryError, e.to_string()))?;
                w.send(&out).await?;
            }
            Message::ReadyForQuery(_) => break,
            // RowDescription, further rows, CommandComplete, notices, COPY out data: read
            // (within the budget) and dropped.
            _ => {}
        }
    }
    match failed {
        Some(f) => Err(f),
        None => Ok(first),
    }
}
