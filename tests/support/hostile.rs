//! A hostile webhook receiver on a real socket: it records every request (headers and body)
//! and answers whatever the test scripts, including redirects, nonsense `Retry-After` values
//! and bodies of hundreds of megabytes, streamed without being held in memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One request received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path with the query string.
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub enum Body {
    Text(String),
    /// This many zero bytes, streamed in 64 KiB writes until sent or the client hangs up.
    Zeros(u64),
}

impl Answer {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: Body::Text(String::new()),
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn text(mut self, body: &str) -> Self {
        self.body = Body::Text(body.into());
        self
    }
    pub fn zeros(mut self, n: u64) -> Self {
        self.body = Body::Zeros(n);
        self
    }
}

type Script = dyn Fn(&Request, usize) -> Answer + Send + Sync;

/// The receiver; its thread ends with the test process.
#[derive(Clone)]
pub struct Hostile {
    base: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Hostile {
    /// Starts answering with `script(request, how many requests came before it)`.
    pub fn start(script: impl Fn(&Request, usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile receiver");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (reqs, script) = (reqs.clone(), script.clone());
                std::thread::spawn(move || serve(conn, &reqs, &*script));
            }
        });
        Self { base, requests }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// One request per connection (`Connection: close`); I/O errors just end the connection.
fn serve(conn: TcpStream, reqs: &Mutex<Vec<Request>>, script: &Script) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(read_half);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let req = Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let answer = {
        let mut all = reqs.lock().unwrap();
        let a = script(&req, all.len());
        all.push(req);
        a
    };
    let _ = respond(conn, answer);
}

fn respond(mut conn: TcpStream, a: Answer) -> std::io::Result<()> {
    let len = match &a.body {
        Body::Text(t) => t.len() as u64,
        Body::Zeros(n) => *n,
    };
    let mut head = format!(
        "HTTP/1.1 {} Hostile\r\nConnection: close\r\nContent-Length: {len}\r\n",
        a.status
    );
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    match a.body {
        Body::Text(t) => conn.write_all(t.as_bytes())?,
        Body::Zeros(n) => {
            let chunk = vec![0u8; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                conn.write_all(&chunk[..k])?;
                left -= k as u64;
            }
        }
    }
    conn.flush()
}
