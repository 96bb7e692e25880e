//! The probe query over the probe's own connection (simple query protocol), keeping only the
//! first column of the first row; every byte read counts against the connection's budget.

use super::login::server_error;
use super::wire::Wire;
use super::{FailureClass, ProbeFailure};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

/// The first row's first column: `None` no row, `Some(None)` NULL.
pub type FirstValue = Option<Option<String>>;

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
    let mut out = BytesMut::new();
    let mut first: FirstValue = None;
    let mut failed: Option<ProbeFailure> = None;
    loop {
        match w.read().await? {
            Message::DataRow(row) if first.is_none() => {
                let buf = row.buffer();
                let v = row
                    .ranges()
                    .next()
                    .ok()
                    .flatten()
                    .map(|r| r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                first = Some(v.flatten());
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
