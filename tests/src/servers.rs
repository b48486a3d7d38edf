//! Local servers the scenarios talk to (a TLS server with a fresh self-signed certificate) and
//! a client script.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `openssl s_server` on `addr` with a fresh self-signed certificate; killed on drop.
pub struct TlsServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    pub fn start(host: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        self_signed(&key, &cert, "api.example.test");
        let port = free_port(host);
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(format!("{}:{port}", bracket(host)))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let addr: SocketAddr = format!("{}:{port}", bracket(host)).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh self-signed EC P-256 certificate for `cn`, and its key.
pub fn self_signed(key: &std::path::Path, cert: &std::path::Path, cn: &str) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
        ])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl req");
    assert!(status.success(), "openssl req failed");
}

pub fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

pub fn free_port(host: &str) -> u16 {
    TcpListener::bind(format!("{}:0", bracket(host)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal AWS SigV4 client (what awscli and the SDKs send; only the key id is public):
/// `python3 -c SIGV4_CLIENT PORT [CREDENTIALS_FILE]` signs a GET to
/// `https://s3.example.test:PORT/` (resolved to 127.0.0.1) with the key pair from the shared
/// credentials file's default profile, else from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
pub const SIGV4_CLIENT: &str = r#"
import configparser, datetime, hashlib, hmac, os, socket, ssl, sys, urllib.request
port = int(sys.argv[1])
if len(sys.argv) > 2:
    profile = configparser.ConfigParser()
    profile.read(sys.argv[2])
    key_id = profile["default"]["aws_access_key_id"]
    secret = profile["default"]["aws_secret_access_key"]
else:
    key_id, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
host, region, service = f"s3.example.test:{port}", "us-east-1", "s3"
t = datetime.datetime.now(datetime.timezone.utc)
amz_date, day = t.strftime("%Y%m%dT%H%M%SZ"), t.strftime("%Y%m%d")
empty = hashlib.sha256(b"").hexdigest()
signed = "host;x-amz-content-sha256;x-amz-date"
canonical = "\n".join(["GET", "/", "", f"host:{host}", f"x-amz-content-sha256:{empty}",
                       f"x-amz-date:{amz_date}", "", signed, empty])
scope = f"{day}/{region}/{service}/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(canonical.encode()).hexdigest()])
k = ("AWS4" + secret).encode()
for part in (day, region, service, "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
auth = f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, Signature={signature}"
orig = socket.getaddrinfo
socket.getaddrinfo = lambda h, *a, **kw: orig("127.0.0.1" if h == "s3.example.test" else h, *a, **kw)
req = urllib.request.Request(f"https://{host}/", headers={
    "Authorization": auth, "x-amz-date": amz_date, "x-amz-content-sha256": empty})
urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=5).read()
"#;
