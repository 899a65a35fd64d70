//! Third-party servers for the conformance tests: nginx (its default site), HAProxy,
//! `python3 -m http.server`, and a raw-socket backend that logs every byte and how each
//! connection ended. Missing packages are installed idempotently with apt-get (under a
//! lock, so parallel tests do not collide); a server that still cannot start fails the
//! test loudly. Every process is started in its own process group and killed by that
//! group on drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Makes sure `bin` is on PATH, installing the Debian package `pkg` if it is not.
/// Panics (fails the test) when it cannot.
pub fn ensure_installed(bin: &str, pkg: &str) {
    let present = || {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present() {
        return;
    }
    let script = format!(
        "flock /tmp/scaleout-apt.lock sh -c 'command -v {bin} >/dev/null || \
         (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {pkg})'"
    );
    let status = Command::new("sh").args(["-c", &script]).status();
    assert!(
        present(),
        "{bin} is missing and installing {pkg} failed ({status:?}); this test needs it"
    );
}

/// Raises this process's soft open-file limit to its hard limit (with `prlimit`, no
/// unsafe code). Returns the soft limit afterwards.
pub fn raise_nofile() -> u64 {
    ensure_installed("prlimit", "util-linux");
    let pid = std::process::id().to_string();
    let hard = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(1024);
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status();
    let out = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--output=SOFT", "--noheadings"])
        .output()
        .expect("prlimit");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `addr` accepts TCP connections, or panics after `within`.
pub fn wait_listening(addr: SocketAddr, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start listening on {addr} within {within:?}");
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "scaleout-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A third-party server process (its own process group), killed on drop.
pub struct ServerProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Option<Child>,
    _dir: TempDir,
}

impl ServerProcess {
    fn spawn(name: &str, addr: SocketAddr, mut cmd: Command, dir: TempDir) -> ServerProcess {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let s = ServerProcess {
            name: name.to_string(),
            addr,
            child: Some(child),
            _dir: dir,
        };
        wait_listening(addr, Duration::from_secs(10), name);
        s
    }

    /// `kill -9` of the whole server (master and workers), then reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = c.id().to_string();
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{pgid}")])
                .status();
            let _ = c.wait();
        }
    }

    /// nginx with the stock `nginx.conf` http settings and the Debian default site (no
    /// `/healthz`; `keepalive_requests` and `keepalive_timeout` at their defaults), on a
    /// loopback port, with its pid and logs in a temporary prefix. One worker process
    /// (the stock `auto` would start one per core for each of several instances).
    pub fn nginx() -> ServerProcess {
        ensure_installed("nginx", "nginx");
        let dir = TempDir::new("nginx");
        let port = free_port();
        let p = dir.0.display().to_string();
        let conf = format!(
            "worker_processes 1;\n\
             pid {p}/nginx.pid;\n\
             error_log {p}/error.log;\n\
             events {{ worker_connections 768; }}\n\
             http {{\n\
               sendfile on;\n\
               tcp_nopush on;\n\
               types_hash_max_size 2048;\n\
               include /etc/nginx/mime.types;\n\
               default_type application/octet-stream;\n\
               access_log off;\n\
               client_body_temp_path {p}/body;\n\
               proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi;\n\
               scgi_temp_path {p}/scgi;\n\
               server {{\n\
                 listen 127.0.0.1:{port} default_server;\n\
                 root /var/www/html;\n\
                 index index.html index.htm index.nginx-debian.html;\n\
                 server_name _;\n\
                 location / {{ try_files $uri $uri/ =404; }}\n\
               }}\n\
             }}\n"
        );
        std::fs::write(dir.0.join("nginx.conf"), conf).unwrap();
        if !std::path::Path::new("/var/www/html/index.nginx-debian.html").exists() {
            std::fs::create_dir_all("/var/www/html").unwrap();
            std::fs::write("/var/www/html/index.html", "<h1>Welcome to nginx!</h1>\n").unwrap();
        }
        let mut cmd = Command::new("nginx");
        cmd.args([
            "-p",
            &p,
            "-c",
            &format!("{p}/nginx.conf"),
            "-e",
            &format!("{p}/error.log"),
            "-g",
            "daemon off;",
        ]);
        ServerProcess::spawn("nginx", SocketAddr::from(([127, 0, 0, 1], port)), cmd, dir)
    }

    /// `python3 -m http.server` serving an empty temporary directory (its listing).
    pub fn python_http() -> ServerProcess {
        ensure_installed("python3", "python3");
        let dir = TempDir::new("pyhttp");
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
            &dir.0.display().to_string(),
        ]);
        ServerProcess::spawn(
            "python3 -m http.server",
            SocketAddr::from(([127, 0, 0, 1], port)),
            cmd,
            dir,
        )
    }

    /// HAProxy (its default `tune.bufsize` and `tune.http.maxhdr`) answering every
    /// request itself with 200.
    pub fn haproxy() -> ServerProcess {
        ensure_installed("haproxy", "haproxy");
        let dir = TempDir::new("haproxy");
        let port = free_port();
        let conf = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode http\n  timeout client 30s\n  timeout server 30s\n  timeout connect 5s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  http-request return status 200 content-type text/plain string ok\n"
        );
        let path = dir.0.join("haproxy.cfg");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new("haproxy");
        cmd.args(["-db", "-f", &path.display().to_string()]);
        ServerProcess::spawn(
            "haproxy",
            SocketAddr::from(([127, 0, 0, 1], port)),
            cmd,
            dir,
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// How a raw backend connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Still open when looked at.
    Open,
    /// The peer closed cleanly (FIN).
    Eof,
    /// The peer reset the connection (RST).
    Reset,
    /// Another read error.
    Error(String),
}

/// What a raw backend saw on one connection.
#[derive(Debug, Clone)]
pub struct ConnLog {
    pub bytes: Vec<u8>,
    pub end: End,
}

/// A backend on a raw socket: logs every byte of every connection and how it ended, and
/// answers `200 ok` once a request is complete (head without body, a `Content-Length`
/// body, or a chunked body up to its last chunk). Never answers a partial request.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<ConnLog>>>,
}

fn request_complete(buf: &[u8]) -> bool {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = &buf[head_end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= len
}

impl RawBackend {
    pub fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<ConnLog>>> = Arc::default();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(10_000) {
                let Ok(mut s) = stream else { continue };
                let log = l2.clone();
                let idx = {
                    let mut g = log.lock().unwrap();
                    g.push(ConnLog {
                        bytes: Vec::new(),
                        end: End::Open,
                    });
                    g.len() - 1
                };
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut pending = Vec::new();
                    let end = loop {
                        match s.read(&mut buf) {
                            Ok(0) => break End::Eof,
                            Ok(n) => {
                                log.lock().unwrap()[idx].bytes.extend_from_slice(&buf[..n]);
                                pending.extend_from_slice(&buf[..n]);
                                if request_complete(&pending) {
                                    pending.clear();
                                    let _ = s.write_all(
                                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok",
                                    );
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                                break End::Reset;
                            }
                            Err(e) => break End::Error(e.to_string()),
                        }
                    };
                    log.lock().unwrap()[idx].end = end;
                });
            }
        });
        RawBackend { addr, log }
    }

    /// Connections that carried at least one byte.
    pub fn connections(&self) -> Vec<ConnLog> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.bytes.is_empty())
            .cloned()
            .collect()
    }

    /// Every byte received on all connections.
    pub fn total_bytes(&self) -> usize {
        self.log.lock().unwrap().iter().map(|c| c.bytes.len()).sum()
    }
}
