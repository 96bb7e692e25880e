//! A hostile PostgreSQL on a loopback port, speaking just enough of the wire protocol for the
//! daemon's clients (its own probe code and tokio-postgres): every login is accepted without a
//! password (AuthenticationOk, ParameterStatus, ReadyForQuery), and every query, simple
//! (`Query`) or extended (`Parse`/`Bind`/`Execute`/`Sync`), is answered with the rows a script
//! chooses from the query's text and the client's `application_name`. Rows are streamed in
//! 64 KiB writes, so a 32 MB field costs this process nothing; whoever reads them pays.
//!
//! ```ignore
//! let pg = HostilePg::start(|q| vec![Field::Filled { len: 32 << 20, byte: b'x' }; 4]);
//! let dsn = pg.dsn();
//! ```

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A query as the server received it.
#[derive(Debug, Clone)]
pub struct Query {
    /// The client's `application_name` startup parameter ("" when not sent).
    pub app: String,
    pub sql: String,
}

/// One row's only field (typed `json`).
#[derive(Debug, Clone)]
pub enum Field {
    Text(String),
    /// `len` copies of `byte`, streamed.
    Filled {
        len: usize,
        byte: u8,
    },
}

type Script = dyn Fn(&Query) -> Vec<Field> + Send + Sync;

/// The server; its threads end with the test process. Each connection is served on a thread
/// of its own, so a script may block one client (the others go on).
#[derive(Clone)]
pub struct HostilePg {
    port: u16,
    queries: Arc<Mutex<Vec<Query>>>,
}

impl HostilePg {
    /// Starts answering every query with the rows `script(query)` returns.
    pub fn start(script: impl Fn(&Query) -> Vec<Field> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile PostgreSQL");
        let port = listener.local_addr().expect("addr").port();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let seen = queries.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, script) = (seen.clone(), script.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &seen, &*script);
                });
            }
        });
        Self { port, queries }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A DSN for it (user `postgres`, no password: the server asks for none).
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<Query> {
        self.queries.lock().unwrap().clone()
    }
}

/// One session: startup, then messages until Terminate or an I/O error (the client hanging up
/// in the middle of an answer is the usual end).
fn serve(conn: TcpStream, seen: &Mutex<Vec<Query>>, script: &Script) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let app = startup(&mut r, &mut out)?;
    let mut parsed = String::new();
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        let body = read_body(&mut r)?;
        let answer = |sql: &str, out: &mut TcpStream| {
            let q = Query {
                app: app.clone(),
                sql: sql.to_string(),
            };
            seen.lock().unwrap().push(q.clone());
            rows(out, &script(&q))
        };
        match tag[0] {
            b'Q' => {
                let sql = cstr(&body);
                msg(&mut out, b'T', &row_description())?;
                answer(&sql, &mut out)?;
                msg(&mut out, b'Z', b"I")?;
            }
            // Extended protocol, as tokio-postgres speaks it: each step answered at once.
            b'P' => {
                parsed = cstr(body.get(cstr(&body).len() + 1..).unwrap_or(&[]));
                msg(&mut out, b'1', &[])?;
            }
            b'D' => {
                msg(&mut out, b't', &0i16.to_be_bytes())?;
                msg(&mut out, b'T', &row_description())?;
            }
            b'B' => msg(&mut out, b'2', &[])?,
            b'E' => answer(&parsed, &mut out)?,
            b'S' => msg(&mut out, b'Z', b"I")?,
            b'X' => return Ok(()),
            _ => {}
        }
        out.flush()?;
    }
}

/// Reads the startup message (refusing TLS first if asked) and accepts the login; returns the
/// client's `application_name`.
fn startup(r: &mut impl Read, out: &mut TcpStream) -> std::io::Result<String> {
    loop {
        let body = read_body(r)?;
        let code = i32::from_be_bytes(body[..4].try_into().unwrap_or_default());
        if code == 80877103 {
            out.write_all(b"N")?; // SSLRequest: no TLS here
            continue;
        }
        let params: Vec<String> = body[4..]
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let app = params
            .chunks(2)
            .find(|kv| kv[0] == "application_name")
            .and_then(|kv| kv.get(1).cloned())
            .unwrap_or_default();
        msg(out, b'R', &0i32.to_be_bytes())?;
        msg(out, b'S', b"server_version\x0016.0\x00")?;
        msg(out, b'S', b"client_encoding\x00UTF8\x00")?;
        msg(out, b'Z', b"I")?;
        return Ok(app);
    }
}

/// A message body after its length word (the startup message has no tag byte before it).
fn read_body(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = (i32::from_be_bytes(len).max(4) - 4) as usize;
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn msg(out: &mut impl Write, tag: u8, body: &[u8]) -> std::io::Result<()> {
    out.write_all(&[tag])?;
    out.write_all(&(body.len() as i32 + 4).to_be_bytes())?;
    out.write_all(body)
}

/// One column named `v` of type `json` (OID 114), text format.
fn row_description() -> Vec<u8> {
    let mut b = 1i16.to_be_bytes().to_vec();
    b.extend_from_slice(b"v\0");
    b.extend_from_slice(&0i32.to_be_bytes()); // table
    b.extend_from_slice(&0i16.to_be_bytes()); // column
    b.extend_from_slice(&114i32.to_be_bytes()); // json
    b.extend_from_slice(&(-1i16).to_be_bytes()); // varlena
    b.extend_from_slice(&(-1i32).to_be_bytes()); // typmod
    b.extend_from_slice(&0i16.to_be_bytes()); // text
    b
}

/// The DataRows, each field streamed, then CommandComplete.
fn rows(out: &mut TcpStream, fields: &[Field]) -> std::io::Result<()> {
    for f in fields {
        let len = match f {
            Field::Text(t) => t.len(),
            Field::Filled { len, .. } => *len,
        };
        out.write_all(b"D")?;
        out.write_all(&(4 + 2 + 4 + len as i32).to_be_bytes())?;
        out.write_all(&1i16.to_be_bytes())?;
        out.write_all(&(len as i32).to_be_bytes())?;
        match f {
            Field::Text(t) => out.write_all(t.as_bytes())?,
            Field::Filled { len, byte } => {
                let chunk = vec![*byte; 64 * 1024];
                let mut left = *len;
                while left > 0 {
                    let k = left.min(chunk.len());
                    out.write_all(&chunk[..k])?;
                    left -= k;
                }
            }
        }
    }
    msg(out, b'C', format!("SELECT {}\0", fields.len()).as_bytes())
}
