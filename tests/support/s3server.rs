//! A real S3-API server on loopback: moto's server mode (from PyPI, installed by
//! scripts/test.sh), as a child process that the tests can pause (SIGSTOP) and resume.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIATESTSENTINEL0001";
pub const SECRET_KEY: &str = "test-secret-key-sentinel-remedy-0001";

pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub body: Vec<u8>,
    pub etag: String,
    pub sha256_meta: Option<String>,
    pub sse: Option<String>,
    pub storage_class: Option<String>,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

impl S3Server {
    /// Starts moto; with `auth`, unknown access keys are refused (InvalidAccessKeyId).
    pub fn start(auth: bool) -> Self {
        let port = sentinel_remedy::pgcluster::free_port().expect("port");
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = cmd
            .spawn()
            .expect("moto_server not found: run scripts/test.sh, or pip install 'moto[server]'");
        let endpoint = format!("http://127.0.0.1:{port}");
        let s = Self { child, endpoint };
        let end = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "moto_server did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "tests",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let c = self.client();
        rt().block_on(async { c.create_bucket().bucket(bucket).send().await })
            .expect("create bucket");
    }

    /// Every object in the bucket, with its bytes.
    pub fn objects(&self, bucket: &str) -> Vec<Object> {
        let c = self.client();
        rt().block_on(async {
            let list = c
                .list_objects_v2()
                .bucket(bucket)
                .send()
                .await
                .expect("list");
            let mut out = Vec::new();
            for o in list.contents() {
                let key = o.key().unwrap_or_default().to_string();
                let got = c
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .expect("get");
                let sha256_meta = got.metadata().and_then(|m| m.get("sha256")).cloned();
                let etag = got.e_tag().unwrap_or_default().to_string();
                let sse = got.server_side_encryption().map(|s| s.as_str().to_string());
                let storage_class = got.storage_class().map(|s| s.as_str().to_string());
                let body = got
                    .body
                    .collect()
                    .await
                    .expect("body")
                    .into_bytes()
                    .to_vec();
                out.push(Object {
                    key,
                    body,
                    etag,
                    sha256_meta,
                    sse,
                    storage_class,
                });
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            out
        })
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_multipart_uploads(&self, bucket: &str) -> usize {
        let c = self.client();
        rt().block_on(async { c.list_multipart_uploads().bucket(bucket).send().await })
            .expect("list uploads")
            .uploads()
            .len()
    }

    /// SIGSTOP: the server hangs with its sockets open, as a wedged endpoint does.
    pub fn pause(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// Environment for the daemon: credentials through the standard AWS variables.
    pub fn daemon_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// The `archive.s3` section for this server.
    pub fn yaml(&self, bucket: &str, extra: &str) -> String {
        format!("  s3: {{ bucket: {bucket}, prefix: incidents, endpoint: \"{}\", force_path_style: true{extra} }}\n", self.endpoint)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
