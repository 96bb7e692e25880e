//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for the probe's login, with channel binding over TLS
//! (SCRAM-SHA-256-PLUS). PBKDF2 with PostgreSQL's 4,096 rounds costs the client about a
//! millisecond of CPU per login: a fleet probed every second would spend a core on it. The
//! salt and round count are the role's and do not change between logins, so the derived keys
//! are cached per target and (salt, rounds), and later logins cost a few HMACs. The server's
//! signature is checked on every login, so a stale cache or a server that does not know the
//! password is caught. Each target keeps its own few entries (`KeyCache`), so no server can
//! churn another's keys out; behind them a bounded map shared by all targets lets targets of
//! one role derive once (see `shared`), holding its lock only to find an entry.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fmt;

/// Round counts above this are refused: the server chooses it, and an impostor could make
/// the client spin (PostgreSQL uses 4,096; pgjdbc and rust-postgres cap at 100,000).
const MAX_ITERATIONS: u32 = 100_000;

/// What went wrong in the exchange; the server's own refusal comes as an ErrorResponse instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A server message that does not follow RFC 5802.
    Malformed(&'static str),
    /// The server's nonce does not extend ours (a replay or a broken server).
    Nonce,
    /// The server asks for more PBKDF2 rounds than we accept.
    Iterations(u32),
    /// The server's signature does not match: it does not know the password.
    ServerSignature,
    /// The server ended the exchange with `e=...`.
    Server(String),
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ScramError::Malformed(what) => {
                write!(f, "malformed SCRAM message from the server: {what}")
            }
            ScramError::Nonce => {
                f.write_str("the server's SCRAM nonce does not extend the client's")
            }
            ScramError::Iterations(i) => write!(
                f,
                "the server asks for {i} SCRAM rounds (more than {MAX_ITERATIONS})"
            ),
            ScramError::ServerSignature => {
                f.write_str("the server's SCRAM signature is wrong: it does not know this password")
            }
            ScramError::Server(e) => write!(f, "the server ended the SCRAM exchange: {e}"),
        }
    }
}

/// HMAC-SHA-256 (RFC 2104) over the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// PBKDF2-HMAC-SHA-256 with one block: SCRAM's Hi().
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut prev = hmac(password, &[salt, &[0, 0, 0, 1]]);
    let mut out = prev;
    for _ in 1..iterations {
        prev = hmac(password, &[&prev]);
        for (o, p) in out.iter_mut().zip(prev) {
            *o ^= p;
        }
    }
    out
}

/// SASLprep of the password when it is valid UTF-8 and allowed; else the raw bytes, as
/// PostgreSQL itself does.
fn normalize(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password) {
        Ok(s) => match stringprep::saslprep(s) {
            Ok(p) => p.into_owned().into_bytes(),
            Err(_) => password.to_vec(),
        },
        Err(_) => password.to_vec(),
    }
}

/// The keys derived from the password for one (salt, rounds): all a login needs.
#[derive(Clone)]
pub struct Keys {
    client_key: [u8; 32],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

/// PBKDF2 and the two keys: the expensive part, about 4,096 x 2 SHA-256 blocks.
pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Keys {
    let salted = hi(&normalize(password), salt, iterations);
    let client_key = hmac(&salted, &[b"Client Key"]);
    Keys {
        client_key,
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&salted, &[b"Server Key"]),
    }
}

/// (SHA-256 of the password, salt, rounds): the keys are a pure function of these, so a
/// cached entry is never stale; a changed password comes with a new salt.
type CacheKey = ([u8; 32], Vec<u8>, u32);

/// Entries one target keeps: its role's (salt, rounds), plus room for a password change or
/// a failover to a server whose role has another salt. A server that sends a new salt at
/// every login (a broken or hostile one) only turns over its own few entries.
pub const CACHE_PER_TARGET: usize = 4;

/// One target's SCRAM keys, owned by its prober. Nothing is shared between targets: a server
/// churning salts evicts only its own entries, and derivations of different targets run side
/// by side on the blocking pool, behind no common lock. (Replicas sharing a role each derive
/// once; a millisecond each.)
#[derive(Default)]
pub struct KeyCache {
    /// Most recently used last.
    entries: VecDeque<(CacheKey, Keys)>,
    /// PBKDF2 derivations this cache asked for.
    derived: u64,
}

impl KeyCache {
    /// The keys for this password and the server's salt and rounds: from the cache, else
    /// derived on the blocking pool (milliseconds of CPU that must not stall the actors).
    pub async fn keys_for(&mut self, password: &[u8], salt: &[u8], iterations: u32) -> Keys {
        let id: CacheKey = (Sha256::digest(password).into(), salt.to_vec(), iterations);
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == id) {
            let hit = self.entries.remove(i).expect("found above");
            let keys = hit.1.clone();
            self.entries.push_back(hit);
            return keys;
        }
        let cell = shared::cell(&id);
        let (pw, s) = (password.to_vec(), salt.to_vec());
        let keys = cell
            .get_or_init(|| async move {
                match tokio::task::spawn_blocking(move || derive(&pw, &s, iterations)).await {
                    Ok(k) => k,
                    // The blocking pool is shutting down: derive here rather than fail.
                    Err(_) => derive(password, salt, iterations),
                }
            })
            .await
            .clone();
        self.derived += 1;
        if self.entries.len() >= CACHE_PER_TARGET {
            self.entries.pop_front();
        }
        self.entries.push_back((id, keys.clone()));
        keys
    }

    /// PBKDF2 derivations this cache asked for.
    pub fn derived(&self) -> u64 {
        self.derived
    }

    /// Entries held (at most `CACHE_PER_TARGET`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Keys derived for any target, so that targets sharing a role (many databases of one
/// server, or a daemon taking over a share of the fleet at once) derive each (password,
/// salt, rounds) once, and concurrent logins for the same one wait on one derivation instead
/// of each spending PBKDF2's CPU. Only a target that knows the password reaches an entry (the
/// key holds its hash). Bounded: a server churning salts turns over entries here, which costs
/// other targets nothing, since their own `KeyCache` keeps their keys; the lock is held only
/// to find or add an entry, never across a derivation.
mod shared {
    use super::{CacheKey, Keys};
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex, OnceLock};
    use tokio::sync::OnceCell;

    /// Entries kept for all targets.
    const MAX: usize = 1024;

    type Cell = Arc<OnceCell<Keys>>;

    #[derive(Default)]
    struct Shared {
        cells: HashMap<CacheKey, Cell>,
        /// Insertion order, oldest first, for the bound.
        order: VecDeque<CacheKey>,
    }

    /// The one cell for this key: found, or added (evicting the oldest past `MAX`).
    pub(super) fn cell(id: &CacheKey) -> Cell {
        static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
        let mut s = SHARED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = s.cells.get(id) {
            return c.clone();
        }
        if s.order.len() >= MAX {
            if let Some(old) = s.order.pop_front() {
                s.cells.remove(&old);
            }
        }
        let c = Cell::default();
        s.cells.insert(id.clone(), c.clone());
        s.order.push_back(id.clone());
        c
    }
}

/// The server-first-message, checked: its nonce extends ours, the role's salt and rounds.
pub struct ServerFirst {
    text: String,
    nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// The channel binding of one exchange (RFC 5802's gs2 header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// "n": the client does not bind (no TLS, or channel_binding=disable).
    None,
    /// "y": the client could bind but the server offered no SCRAM-SHA-256-PLUS.
    ClientOnly,
    /// "p=tls-server-end-point": SCRAM-SHA-256-PLUS, bound to this hash of the server's
    /// certificate.
    EndPoint(Vec<u8>),
}

impl Binding {
    fn gs2_header(&self) -> &'static str {
        match self {
            Binding::None => "n,,",
            Binding::ClientOnly => "y,,",
            Binding::EndPoint(_) => "p=tls-server-end-point,,",
        }
    }
}

/// One SCRAM exchange, client side.
pub struct Exchange {
    binding: Binding,
    client_first_bare: String,
    nonce: String,
    /// The server signature we expect in server-final, once client-final is made.
    expect: Option<[u8; 32]>,
}

impl Exchange {
    /// Starts an exchange with a fresh random nonce. PostgreSQL takes the user from the
    /// startup message, so `user` is empty there.
    pub fn new(user: &str) -> Self {
        Self::bound(user, Binding::None)
    }

    /// An exchange with this channel binding.
    pub fn bound(user: &str, binding: Binding) -> Self {
        let mut raw = [0u8; 18];
        rand::thread_rng().fill(&mut raw[..]);
        let mut ex = Self::with_nonce(user, STANDARD.encode(raw));
        ex.binding = binding;
        ex
    }

    fn with_nonce(user: &str, nonce: String) -> Self {
        Self {
            binding: Binding::None,
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            expect: None,
        }
    }

    /// The SASL mechanism this exchange speaks.
    pub fn mechanism(&self) -> &'static str {
        match self.binding {
            Binding::EndPoint(_) => "SCRAM-SHA-256-PLUS",
            _ => "SCRAM-SHA-256",
        }
    }

    /// client-first-message: the gs2 header (channel binding) and the bare part.
    pub fn client_first(&self) -> String {
        format!("{}{}", self.binding.gs2_header(), self.client_first_bare)
    }

    /// Parses and checks the server-first-message.
    pub fn server_first(&self, msg: &[u8]) -> Result<ServerFirst, ScramError> {
        let text = std::str::from_utf8(msg)
            .map_err(|_| ScramError::Malformed("server-first is not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => return Err(ScramError::Malformed("mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = STANDARD
            .decode(salt.ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(ScramError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        if iterations == 0 {
            return Err(ScramError::Malformed("iteration count is 0"));
        }
        if iterations > MAX_ITERATIONS {
            return Err(ScramError::Iterations(iterations));
        }
        Ok(ServerFirst {
            text: text.to_string(),
            nonce: nonce.to_string(),
            salt,
            iterations,
        })
    }

    /// client-final-message, with the proof made from `keys`.
    pub fn client_final(&mut self, sf: &ServerFirst, keys: &Keys) -> String {
        let (server_first, nonce) = (&sf.text, &sf.nonce);
        // c=: the gs2 header and, when bound, the channel binding data ("biws" for "n,,").
        let mut cbind = self.binding.gs2_header().as_bytes().to_vec();
        if let Binding::EndPoint(data) = &self.binding {
            cbind.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&keys.stored_key, &[auth_message.as_bytes()]);
        let mut proof = keys.client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.expect = Some(hmac(&keys.server_key, &[auth_message.as_bytes()]));
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }

    /// Checks server-final-message (`v=` signature, or `e=` error).
    pub fn verify_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("server-final is not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::Server(e.to_string()));
        }
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(ScramError::Malformed("no verifier"))?;
        let got = STANDARD
            .decode(v)
            .map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        let expect = self
            .expect
            .ok_or(ScramError::Malformed("server-final before server-first"))?;
        // Constant time: the comparison runs over every byte whatever differs.
        let diff = got.len() ^ expect.len()
            | got
                .iter()
                .zip(expect.iter())
                .fold(0usize, |acc, (a, b)| acc | usize::from(a ^ b));
        if diff == 0 {
            Ok(())
        } else {
            Err(ScramError::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    /// The signature printed in the RFC is wrong (a reported erratum); this is the value the
    /// vector's inputs give, checked with Python's hmac and hashlib.pbkdf2_hmac.
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The exchange with keys derived directly (no cache).
    fn final_for(
        ex: &mut Exchange,
        server_first: &str,
        password: &[u8],
    ) -> Result<String, ScramError> {
        let sf = ex.server_first(server_first.as_bytes())?;
        let keys = derive(password, &sf.salt, sf.iterations);
        Ok(ex.client_final(&sf, &keys))
    }

    #[test]
    fn the_rfc_7677_exchange_is_reproduced_and_verified() {
        let mut ex = Exchange::with_nonce("user", NONCE.into());
        assert_eq!(ex.client_first(), format!("n,,n=user,r={NONCE}"));
        let fin = final_for(&mut ex, SERVER_FIRST, b"pencil").unwrap();
        assert_eq!(fin, CLIENT_FINAL);
        ex.verify_final(SERVER_FINAL.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn logins_reuse_cached_keys_and_still_verify() {
        let mut cache = KeyCache::default();
        for _ in 0..3 {
            let mut ex = Exchange::with_nonce("user", NONCE.into());
            let sf = ex.server_first(SERVER_FIRST.as_bytes()).unwrap();
            let keys = cache.keys_for(b"pencil", &sf.salt, sf.iterations).await;
            assert_eq!(ex.client_final(&sf, &keys), CLIENT_FINAL);
            ex.verify_final(SERVER_FINAL.as_bytes()).unwrap();
        }
        assert_eq!(cache.derived(), 1, "PBKDF2 ran once for three logins");
        // Another salt (the role's password was set again) derives again.
        cache.keys_for(b"pencil", b"another salt", 4096).await;
        assert_eq!(cache.derived(), 2);
    }

    #[tokio::test]
    async fn a_server_churning_salts_evicts_only_its_own_keys() {
        let (mut steady, mut churning) = (KeyCache::default(), KeyCache::default());
        steady.keys_for(b"pencil", b"the role's salt", 16).await;
        for i in 0..50u32 {
            churning
                .keys_for(b"pencil", format!("salt {i}").as_bytes(), 16)
                .await;
        }
        assert_eq!(churning.derived(), 50);
        assert_eq!(churning.len(), CACHE_PER_TARGET, "bounded");
        steady.keys_for(b"pencil", b"the role's salt", 16).await;
        assert_eq!(
            steady.derived(),
            1,
            "the steady target's keys are still cached"
        );
        // Within one target the least recently used entry goes first.
        let mut c = KeyCache::default();
        for salt in [b"a", b"b", b"c", b"d", b"a", b"e"] {
            c.keys_for(b"pw", salt, 16).await;
        }
        assert_eq!(c.derived(), 5, "'a' was a hit");
        c.keys_for(b"pw", b"a", 16).await;
        assert_eq!(c.derived(), 5, "'a', used recently, outlived 'b'");
        c.keys_for(b"pw", b"b", 16).await;
        assert_eq!(c.derived(), 6, "'b' was evicted");
    }

    /// A derivation in flight for one target does not hold up another's: the first is left
    /// pending (never polled again) while the second runs to its end. Behind one process-wide
    /// lock the second would wait for the first forever.
    #[tokio::test]
    async fn a_derivation_in_flight_for_one_target_does_not_hold_up_another() {
        use std::future::Future;
        let (mut a, mut b) = (KeyCache::default(), KeyCache::default());
        let mut first = Box::pin(a.keys_for(b"pencil", b"salt of a", MAX_ITERATIONS));
        std::future::poll_fn(|cx| {
            assert!(
                first.as_mut().poll(cx).is_pending(),
                "a's derivation is under way"
            );
            std::task::Poll::Ready(())
        })
        .await;
        let second = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            b.keys_for(b"pencil", b"salt of b", 16),
        )
        .await;
        assert!(
            second.is_ok(),
            "b's keys came while a's derivation was in flight"
        );
        first.await;
        assert_eq!((a.derived(), b.derived()), (1, 1));
    }

    #[tokio::test]
    async fn targets_sharing_a_role_are_served_by_one_derivation() {
        let (mut a, mut b) = (KeyCache::default(), KeyCache::default());
        let ka = a.keys_for(b"shared", b"one role's salt", 4096).await;
        let id: CacheKey = (
            Sha256::digest(b"shared").into(),
            b"one role's salt".to_vec(),
            4096,
        );
        let kept = shared::cell(&id);
        let kept = kept.get().expect("a's derivation is kept for the others");
        assert_eq!(kept.stored_key, ka.stored_key);
        let kb = b.keys_for(b"shared", b"one role's salt", 4096).await;
        assert_eq!(kb.stored_key, ka.stored_key);
        // Another password never reaches that entry.
        let other: CacheKey = (
            Sha256::digest(b"guess").into(),
            b"one role's salt".to_vec(),
            4096,
        );
        assert!(shared::cell(&other).get().is_none());
    }

    #[test]
    fn a_wrong_server_signature_nonce_or_round_count_is_refused() {
        let mut ex = Exchange::with_nonce("user", NONCE.into());
        final_for(&mut ex, SERVER_FIRST, b"not-pencil").unwrap();
        assert_eq!(
            ex.verify_final(SERVER_FINAL.as_bytes()),
            Err(ScramError::ServerSignature)
        );
        let mut ex = Exchange::with_nonce("user", "another-nonce".into());
        assert_eq!(
            final_for(&mut ex, SERVER_FIRST, b"pencil").err(),
            Some(ScramError::Nonce)
        );
        let greedy = SERVER_FIRST.replace("i=4096", "i=5000000");
        let mut ex = Exchange::with_nonce("user", NONCE.into());
        assert_eq!(
            final_for(&mut ex, &greedy, b"pencil").err(),
            Some(ScramError::Iterations(5_000_000))
        );
    }
}
