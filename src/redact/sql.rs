//! Masking in SQL text: a small lexer for PostgreSQL's literals, quoted identifiers, comments
//! and dollar quotes, so the value after `PASSWORD` is found however it is quoted, and SQL
//! quoted inside SQL is parsed again.

use super::redact_text;

/// How deep SQL quoted inside SQL (`EXECUTE '...'`, a `DO $$...$$` body) is parsed again.
const SQL_DEPTH: u8 = 3;

/// SQL text (a query from `pg_stat_activity`): the literal after `PASSWORD` (`ENCRYPTED
/// PASSWORD 'x'`, `PASSWORD E'x'`, `password $$x$$`, `OPTIONS (password 'x')`) becomes
/// `'***'`; every other literal and comment is masked as free text (a conninfo or URI given to
/// dblink or a subscription), and a literal holding SQL is parsed again (`EXECUTE '...'`).
/// A query cut short inside a literal masks that literal to the end.
pub fn redact_sql(sql: &str) -> String {
    redact_sql_at(sql, SQL_DEPTH)
}

fn redact_sql_at(sql: &str, depth: u8) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut after_password = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            out.push(c as char);
            i += 1;
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            let end = sql[i..].find('\n').map_or(b.len(), |n| i + n);
            out.push_str(&redact_text(&sql[i..end]));
            i = end;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = block_comment_end(b, i);
            out.push_str(&redact_text(&sql[i..end]));
            i = end;
            continue;
        }
        if let Some(lit) = string_literal(sql, i) {
            if after_password {
                out.push_str("'***'");
            } else {
                let inner = redact_literal(&lit.content, depth);
                if inner == lit.content {
                    out.push_str(&sql[i..lit.end]);
                } else {
                    out.push('\'');
                    out.push_str(&inner.replace('\'', "''"));
                    out.push('\'');
                }
            }
            after_password = false;
            i = lit.end;
            continue;
        }
        if c == b'"' {
            let end = sql[i + 1..].find('"').map_or(b.len(), |n| i + 2 + n);
            out.push_str(&sql[i..end]);
            after_password = sql[i..end]
                .trim_matches('"')
                .eq_ignore_ascii_case("password");
            i = end;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let end = i + sql[i..]
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$'))
                .unwrap_or(sql.len() - i);
            let word = &sql[i..end];
            after_password = word.eq_ignore_ascii_case("password");
            out.push_str(word);
            i = end;
            continue;
        }
        let ch = sql[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        // `SET password = 'x'` and `password := 'x'` are as secret as `PASSWORD 'x'`.
        after_password &= ch == '=' || ch == ':';
        i += ch.len_utf8();
    }
    out
}

/// The inside of a literal, masked as free text and, while depth allows, as SQL.
fn redact_literal(content: &str, depth: u8) -> String {
    let inner = if depth > 0 {
        redact_sql_at(content, depth - 1)
    } else {
        content.to_string()
    };
    redact_text(&inner)
}

fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut j = start;
    while j + 1 < b.len() {
        if b[j] == b'/' && b[j + 1] == b'*' {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && b[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

/// A string literal found in SQL text: its decoded content and where it ends.
struct Literal {
    content: String,
    end: usize,
}

/// The string literal starting at `i`, if one does: `'...'`, `E'...'`, `U&'...'`, `N'...'`,
/// `B'...'`/`X'...'`, or a dollar quote `$tag$...$tag$`.
fn string_literal(sql: &str, i: usize) -> Option<Literal> {
    let b = sql.as_bytes();
    let (quote, backslashes) = match b[i] {
        b'\'' => (i, false),
        b'E' | b'e' if b.get(i + 1) == Some(&b'\'') => (i + 1, true),
        b'N' | b'n' | b'B' | b'b' | b'X' | b'x' if b.get(i + 1) == Some(&b'\'') => (i + 1, false),
        b'U' | b'u' if b.get(i + 1) == Some(&b'&') && b.get(i + 2) == Some(&b'\'') => {
            (i + 2, false)
        }
        b'$' => return dollar_literal(sql, i),
        _ => return None,
    };
    // A prefix letter must start a token: `vale'x'` is not `E'x'`.
    if quote > i
        && i > 0
        && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] >= 0x80)
    {
        return None;
    }
    let mut content = Vec::new();
    let mut j = quote + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if backslashes => {
                if let Some(&n) = b.get(j + 1) {
                    content.push(n);
                }
                j += 2;
            }
            b'\'' if b.get(j + 1) == Some(&b'\'') => {
                content.push(b'\'');
                j += 2;
            }
            b'\'' => {
                return Some(Literal {
                    content: String::from_utf8_lossy(&content).into_owned(),
                    end: j + 1,
                })
            }
            c => {
                content.push(c);
                j += 1;
            }
        }
    }
    Some(Literal {
        content: String::from_utf8_lossy(&content).into_owned(),
        end: b.len(),
    })
}

fn dollar_literal(sql: &str, i: usize) -> Option<Literal> {
    let b = sql.as_bytes();
    let tag_len = b[i + 1..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) || b.get(i + 1 + tag_len) != Some(&b'$') {
        return None; // `$1` is a parameter, not a quote
    }
    let tag = &sql[i..i + tag_len + 2];
    let body = i + tag.len();
    match sql[body..].find(tag) {
        Some(n) => Some(Literal {
            content: sql[body..body + n].to_string(),
            end: body + n + tag.len(),
        }),
        None => Some(Literal {
            content: sql[body..].to_string(),
            end: sql.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_password_literals_in_every_form_are_masked() {
        let cases = [
            "ALTER ROLE x PASSWORD 'sekrit'",
            "ALTER ROLE x PASSWORD E'sek\\'rit'",
            "alter role x with encrypted password 'sek''rit' valid until 'infinity'",
            "CREATE ROLE x LOGIN PASSWORD $pw$sekrit$pw$",
            "CREATE USER MAPPING FOR x SERVER s OPTIONS (user 'u', password 'sekrit')",
            "SELECT dblink_connect('host=h dbname=d password=sekrit')",
            "SELECT dblink('postgres://u:sek/rit?@h/db', 'SELECT 1')",
            "CREATE SUBSCRIPTION s CONNECTION 'password = ''sekrit'' host=h' PUBLICATION p",
            "DO $$BEGIN EXECUTE 'ALTER ROLE x PASSWORD ''sekrit'''; END$$",
            "SELECT 1 /* password=sekrit */",
            "SELECT 1 -- PGPASSWORD=sekrit",
            "ALTER ROLE x PASSWORD 'sekrit-cut-off-by-track_activity_query_si",
            "ALTER ROLE x PASSWORD E'sek\\",
            "UPDATE users SET password = 'sekrit' WHERE id = 1",
        ];
        for sql in cases {
            let r = redact_sql(sql);
            assert!(!r.contains("sekrit") && !r.contains("rit"), "{sql} -> {r}");
        }
        assert_eq!(
            redact_sql("alter role x password 'a' valid until 'infinity'"),
            "alter role x password '***' valid until 'infinity'"
        );
        assert_eq!(
            redact_sql("SELECT 'it''s', $1, \"Password\" FROM t"),
            "SELECT 'it''s', $1, \"Password\" FROM t"
        );
    }
}
