//! Shared helpers for the integration tests: a parapet started from TOML text, real upstream servers,
//! and real HTTP clients. Every socket is on 127.0.0.1 with a port the system picks.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parapet::{Body, Config, Registry, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts parapet on `toml` (whose listeners bind 127.0.0.1:0) with the built-in kinds.
pub async fn start(toml: &str) -> Server {
    start_with(toml, &Registry::new()).await
}

/// Starts parapet on `toml` with the kinds of `registry`.
pub async fn start_with(toml: &str, registry: &Registry) -> Server {
    let config = Config::parse("test.toml", toml, registry)
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
    Server::start(config, registry.clone())
        .await
        .expect("parapet starts")
}

/// A listener on 127.0.0.1:0 sending every request to the upstream `backend` of these `servers`
/// (TOML values: `"\"http://...\""` or `{ url = ..., weight = ... }`), with `extra` keys of the upstream.
pub fn upstream_config(servers: &[String], extra: &str) -> String {
    format!(
        r#"
[listeners.main]
bind = "127.0.0.1:0"
[[routes]]
app = "api"
[apps.api]
upstream = "backend"
[upstreams.backend]
servers = [{}]
{extra}
"#,
        servers.join(", ")
    )
}

/// An upstream server answering every request with `handler`.
pub async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An address where nothing listens: connections are refused.
///
/// The port stays bound (a socket that never listens, kept for the life of the test process), so
/// no other test running beside this one can be given it and answer in its place.
pub async fn dead_address() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// An upstream that accepts connections and never answers.
pub async fn silent_upstream() -> SocketAddr {
    silent_upstream_reporting().await.0
}

/// A silent upstream that says each time a request has fully arrived.
pub async fn silent_upstream_reporting() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                let _ = tx.send(());
                // Hold the connection open, answering nothing, until the peer closes it.
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Reads until a request head has ended; false if the peer closed first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 8192];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// An upstream that answers every connection with these raw bytes, then closes.
pub async fn raw_upstream(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head before answering, so the client is not reset mid-write.
                if !read_head(&mut stream).await {
                    return;
                }
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// An HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// GETs `url` with optional Host and returns status, headers and body text.
pub async fn get(
    addr: SocketAddr,
    host: Option<&str>,
    path: &str,
) -> (u16, http::HeaderMap, String) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(host) = host {
        req = req.header("host", host);
    }
    send(req.body(Body::empty()).unwrap()).await
}

/// Sends a request and reads the whole answer.
pub async fn send(req: Request<Body>) -> (u16, http::HeaderMap, String) {
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("answer within 20s")
        .expect("request succeeds");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Writes raw request bytes on a new connection and reads until the server closes it.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    exchange(&mut stream, request).await
}

/// Writes `request` on `stream` and reads until the server closes it, as text.
pub async fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .expect("server closes within 20s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A response with this status and body.
pub fn text(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::full(body.into()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}

/// FNV-1a, 64 bits: enough to tell two 50 MB streams apart without a hashing dependency.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The `i`th chunk of a deterministic test stream: 64 KiB whose bytes depend on `i`.
pub fn pattern_chunk(i: usize) -> Bytes {
    const SIZE: usize = 64 * 1024;
    let mut v = vec![0u8; SIZE];
    let seed = (i as u32).wrapping_mul(2_654_435_761);
    for (j, b) in v.iter_mut().enumerate() {
        *b = (seed.wrapping_add(j as u32 * 7) >> 3) as u8;
    }
    Bytes::from(v)
}

/// A streaming body of `chunks` pattern chunks, produced as it is read.
pub fn pattern_body(chunks: usize) -> Body {
    Body::new(http_body_util::StreamBody::new(PatternStream {
        next: 0,
        end: chunks,
    }))
}

struct PatternStream {
    next: usize,
    end: usize,
}

impl futures_core::Stream for PatternStream {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.next == self.end {
            return std::task::Poll::Ready(None);
        }
        let chunk = pattern_chunk(self.next);
        self.next += 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
}

/// The hash of `chunks` pattern chunks.
pub fn pattern_hash(chunks: usize) -> u64 {
    let mut h = Fnv::default();
    for i in 0..chunks {
        h.update(&pattern_chunk(i));
    }
    h.0
}

/// Reads a body to its end, hashing it; an error if the body broke off.
pub async fn hash_body<B>(mut body: B) -> Result<(u64, usize), B::Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut h = Fnv::default();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            h.update(&data);
            len += data.len();
        }
    }
    Ok((h.0, len))
}

/// A parapet process started from the built binary, with its listeners' addresses.
pub struct Process {
    pub child: std::process::Child,
    pub addrs: std::collections::HashMap<String, SocketAddr>,
    pub dir: std::path::PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Process {
    /// Writes `toml` to a fresh directory and runs `parapet run -c` on it, waiting until every one of
    /// `listeners` reports its address on stderr.
    pub fn run(toml: &str, listeners: &[&str]) -> Process {
        use std::io::BufRead;
        let dir = temp_dir();
        let path = dir.join("parapet.toml");
        std::fs::write(&path, toml).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_parapet"))
            .arg("run")
            .arg("-c")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("parapet starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log2.lock().unwrap().push_str(&line);
                log2.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        let mut addrs = std::collections::HashMap::new();
        while addrs.len() < listeners.len() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| {
                    panic!(
                        "parapet did not report its listeners:\n{}",
                        log.lock().unwrap()
                    )
                });
            if let Some((name, addr)) = parse_listening(&line) {
                addrs.insert(name, addr);
            }
        }
        Process {
            child,
            addrs,
            dir,
            stderr: log,
        }
    }

    /// The address of a listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.addrs[listener]
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// A line of /proc/PID/status, in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`), with `kill(2)` itself: the `kill` program is
    /// procps', which a minimal Debian does not have and `.ci/run` does not install.
    pub fn signal(&self, name: &str) {
        let signal = match name {
            "TERM" => libc::SIGTERM,
            "HUP" => libc::SIGHUP,
            "INT" => libc::SIGINT,
            other => panic!("no signal {other} here"),
        };
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a child's pid and a signal number; it touches no memory of ours.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            sent,
            0,
            "kill -{name} failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "parapet did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `... listening listener=NAME addr=ADDR` from parapet's stderr.
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains(" listening ") {
        return None;
    }
    let name = line.split("listener=").nth(1)?.split_whitespace().next()?;
    let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
    Some((name.trim_matches('"').to_owned(), addr.parse().ok()?))
}

/// A new empty directory under the system's temp directory, named after this test process. The
/// first call in a process removes the directories that processes no longer running left (a test
/// cannot know when the last user of its directory is done, so each run cleans up after the last).
pub fn temp_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| remove_stale_dirs("parapet-test-"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "parapet-test-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes the directories under the system's temp directory named `PREFIX-PID-...` whose process
/// `PID` is gone (Linux: no `/proc/PID`); elsewhere, none.
fn remove_stale_dirs(prefix: &str) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A body fed chunk by chunk by the test through a channel; it ends when the sender is dropped.
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    Body::new(http_body_util::StreamBody::new(ChannelStream(rx)))
}

struct ChannelStream(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// What a [`recording_upstream`] answers each complete request with, unless told otherwise.
pub const RECORDER_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

/// A raw upstream that records every byte it receives, connection by connection, and answers each
/// complete request (as [`parse_requests`] frames it) with `answer`. It keeps reading after it
/// answered, so whatever else reaches it is recorded too.
pub async fn recording_upstream(answer: &'static [u8]) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = std::sync::Arc::new(RecorderState::default());
    let shared = std::sync::Arc::clone(&state);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            shared.connections.lock().unwrap().push(record.clone());
            shared.open.send_modify(|n| *n += 1);
            let shared = std::sync::Arc::clone(&shared);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut answered = 0;
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let complete = {
                        let mut record = record.lock().unwrap();
                        record.extend_from_slice(&buf[..n]);
                        parse_requests(&record).requests.len()
                    };
                    while answered < complete {
                        answered += 1;
                        if stream.write_all(answer).await.is_err() {
                            break;
                        }
                    }
                }
                shared.open.send_modify(|n| *n -= 1);
            });
        }
    });
    Recorder { addr, state }
}

/// A [`recording_upstream`]: its address and what it received.
pub struct Recorder {
    pub addr: SocketAddr,
    state: std::sync::Arc<RecorderState>,
}

#[derive(Default)]
struct RecorderState {
    connections: std::sync::Mutex<Vec<std::sync::Arc<std::sync::Mutex<Vec<u8>>>>>,
    /// Connections accepted and not yet closed by the peer.
    open: tokio::sync::watch::Sender<usize>,
}

impl Recorder {
    /// The bytes each connection received so far, in the order they were accepted.
    pub fn received(&self) -> Vec<Vec<u8>> {
        let connections = self.state.connections.lock().unwrap();
        connections
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Waits up to `limit` until every connection it accepted was closed by its peer; false if one
    /// is still open then.
    pub async fn all_closed(&self, limit: Duration) -> bool {
        let mut open = self.state.open.subscribe();
        let closed = tokio::time::timeout(limit, open.wait_for(|n| *n == 0))
            .await
            .is_ok();
        closed
    }
}

/// One request as an upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub target: String,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, chunked coding removed.
    pub body: Vec<u8>,
}

impl Received {
    /// Every value of a header.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What a stream of request bytes holds, read strictly.
#[derive(Debug, Default)]
pub struct ParsedRequests {
    /// The complete, unambiguously framed requests, in order.
    pub requests: Vec<Received>,
    /// Bytes after the last complete request that do not (yet) make a complete one.
    pub incomplete: usize,
    /// Why the bytes after the last complete request are not a well-framed HTTP/1.1 request, if
    /// they are not: the stream is then ambiguous.
    pub error: Option<String>,
}

/// Reads `bytes` as HTTP/1.1 requests, strictly (RFC 9112): CRLF line ends only, no obs-fold, no
/// whitespace before a colon, header names tokens, values without control bytes; the body framed by
/// exactly one of one `Transfer-Encoding: chunked` (chunk sizes plain hex, no extensions) or one
/// all-digit `Content-Length`, or none. A request carrying both framings is an error.
pub fn parse_requests(bytes: &[u8]) -> ParsedRequests {
    let mut parsed = ParsedRequests::default();
    let mut at = 0;
    while at < bytes.len() {
        match parse_request(&bytes[at..]) {
            Ok(Some((request, used))) => {
                parsed.requests.push(request);
                at += used;
            }
            Ok(None) => {
                parsed.incomplete = bytes.len() - at;
                break;
            }
            Err(e) => {
                parsed.error = Some(e);
                parsed.incomplete = bytes.len() - at;
                break;
            }
        }
    }
    parsed
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One request at the start of `bytes` and its length; `None` if incomplete.
fn parse_request(bytes: &[u8]) -> Result<Option<(Received, usize)>, String> {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        if let Some(bad) = bytes.iter().position(|&b| b == b'\n') {
            if bad == 0 || bytes[bad - 1] != b'\r' {
                return Err("bare LF in the head".into());
            }
        }
        return Ok(None);
    };
    // Every line up to its CR (the last one's LF starts the blank line that ends the head).
    let head = &bytes[..head_end + 1];
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r"));
    let line = lines.next().flatten().ok_or("request line without CRLF")?;
    if line.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("control byte in the request line".into());
    }
    let line = std::str::from_utf8(line).map_err(|_| "request line is not UTF-8")?;
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(format!(
            "request line {line:?} is not METHOD SP TARGET SP VERSION"
        ));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) || target.is_empty() {
        return Err(format!("request line {line:?} is malformed"));
    }
    if version != "HTTP/1.1" {
        return Err(format!("version {version:?} forwarded"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let line = line.ok_or("header line without CRLF")?;
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or("header line without a colon")?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().copied().all(is_tchar) {
            return Err(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(format!(
                "control byte in header {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let value = String::from_utf8_lossy(value)
            .trim_matches([' ', '\t'])
            .to_owned();
        headers.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value));
    }
    let mut request = Received {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: Vec::new(),
    };
    let te = request.header("transfer-encoding");
    let cl = request.header("content-length");
    let body = &bytes[head_end + 4..];
    let used = match (te.as_slice(), cl.as_slice()) {
        ([], []) => 0,
        ([_, ..], [_, ..]) => return Err("both Transfer-Encoding and Content-Length".into()),
        ([te], []) if te.eq_ignore_ascii_case("chunked") => match dechunk(body)? {
            Some((data, used)) => {
                request.body = data;
                used
            }
            None => return Ok(None),
        },
        ([_, ..], []) => return Err(format!("Transfer-Encoding {te:?} forwarded")),
        ([], [cl]) => {
            if cl.is_empty() || !cl.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("Content-Length {cl:?} forwarded"));
            }
            let len: usize = cl.parse().map_err(|_| "Content-Length too large")?;
            if body.len() < len {
                return Ok(None);
            }
            request.body = body[..len].to_vec();
            len
        }
        ([], _) => return Err(format!("Content-Length lines {cl:?} forwarded")),
    };
    Ok(Some((request, head_end + 4 + used)))
}

/// A strict chunked body at the start of `bytes`: its data and length; `None` if incomplete.
fn dechunk(bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = bytes[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = &bytes[at..at + eol];
        if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size {:?}", String::from_utf8_lossy(size)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16).unwrap();
        at += eol + 2;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let Some(eol) = bytes[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some((data, at)));
                }
            }
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&bytes[at..at + size]);
        at += size;
        if &bytes[at..at + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
}

/// The responses in the bytes a client received: each final status, interim (1xx) ones skipped;
/// an error if the bytes are not a sequence of well-framed responses.
pub fn parse_responses(bytes: &[u8]) -> Result<Vec<u16>, String> {
    let mut statuses = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let head_end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("incomplete response: {:?}", String::from_utf8_lossy(rest)))?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let status: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| head.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {head:?}"))?;
        at += head_end + 4;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        if (100..200).contains(&status) {
            continue;
        }
        statuses.push(status);
        if status == 204 || status == 304 {
            continue;
        }
        if header("transfer-encoding").is_some() {
            let (_, used) = dechunk(&bytes[at..])?.ok_or("incomplete chunked response")?;
            at += used;
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().map_err(|_| "bad content-length")?;
            if bytes.len() < at + len {
                return Err("response body cut short".into());
            }
            at += len;
        } else {
            // Delimited by the close.
            at = bytes.len();
        }
    }
    Ok(statuses)
}
