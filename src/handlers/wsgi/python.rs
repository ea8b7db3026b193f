//! The Python side of the `wsgi` handler: the interpreter, the app's thread pool, and PEP 3333's
//! objects (`wsgi.input`, `start_response`, `write`, `wsgi.errors`, `wsgi.file_wrapper`).
//!
//! A request crosses from the async gateway to a pool thread as a [`Job`] (through a [`Queue`]), and
//! comes back as an [`Answer`]: the head with the first piece of the body (a oneshot), then the other
//! pieces, if any (a bounded channel, for backpressure). A body known to be whole when the head leaves
//! (its `Content-Length` reached, or the iterable done) travels in that one message. A pool thread
//! keeps its Python thread state for its whole life, holds the GIL while Python code runs, and
//! releases it ([`Python::detach`]) only when it waits: for a job, a piece of the request body, or a
//! slow client.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use parapet_middlewares::{
    Body, BoxError, ClientAddr, ClientIp, GatewayError, GatewayErrorKind, TlsInfo,
};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTraceback, PyTuple};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc as tmpsc, oneshot};

use super::Wsgi;
use crate::router::MountPoint;
use crate::service::NeverFails;
use crate::{AppService, Request, Response};

/// Body pieces buffered between the app and a slow client before the app waits.
const RESPONSE_PIECES: usize = 4;
/// How much of a file `wsgi.file_wrapper` sends at a time.
const FILE_CHUNK: usize = 64 * 1024;

/// A loaded WSGI app: its callable and the threads that run it. Shared by every config that names
/// the same settings, so a reload that keeps them keeps the app (and imports nothing).
pub(super) struct WsgiApp {
    jobs: Arc<Queue>,
}

impl Drop for WsgiApp {
    /// The app's threads end once they have served what is queued.
    fn drop(&mut self) {
        self.jobs.close();
    }
}

/// How long queued jobs wait for the busy threads to make progress before an idle thread takes
/// one: a thread that is blocked (in `time.sleep`, on a socket, on a slow client) lets another run.
const PATIENCE: Duration = Duration::from_millis(2);

/// The jobs waiting for a pool thread, dealt out so that Python runs on as few threads as keep up.
///
/// Python runs one thread at a time (the GIL). Handing each request to another thread costs a
/// futex wake, a context switch and, worse, Python's working set moving between cores' caches:
/// measured on a 2-core machine with a hello-world Flask view, 8 threads taking turns served ~40%
/// fewer requests/s than one. So a thread that finishes a request takes the next one while it still
/// holds the GIL, and an idle thread is woken for a new job only when no thread is busy. When busy
/// threads stop making progress (no job finished for [`PATIENCE`]: they are blocked, with the GIL
/// released), one idle thread, the watcher, takes a queued job; then the next watcher waits its
/// turn. So a view that sleeps or waits still never holds back the others beyond [`PATIENCE`] per
/// thread, and `threads` still bounds how many requests run at once.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Threads running a job.
    busy: usize,
    /// Threads waiting in [`Queue::pop`].
    idle: usize,
    /// Whether an idle thread is watching the busy ones' progress.
    watching: bool,
    /// Jobs finished so far: the busy threads' progress.
    done: u64,
    /// No more jobs will come: the app was dropped.
    closed: bool,
}

impl Queue {
    fn new() -> Self {
        Self {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                busy: 0,
                idle: 0,
                watching: false,
                done: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job; false if the app is gone. An idle thread is woken when no thread is busy, or
    /// to become the watcher when there is none.
    fn push(&self, job: Job) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.jobs.push_back(job);
        let wake = state.idle > 0 && (state.busy == 0 || !state.watching);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// After a job: the next one if one is queued, taken without waiting (the thread stays busy);
    /// otherwise the thread is no longer busy and goes to [`Queue::pop`].
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        state.done += 1;
        let job = state.jobs.pop_front();
        if job.is_none() {
            state.busy -= 1;
        }
        job
    }

    /// The next job for an idle thread, waiting for one; `None` once the app is gone and nothing
    /// is queued.
    fn pop(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if state.jobs.is_empty() && state.closed {
                return None;
            }
            if !state.jobs.is_empty() && state.busy == 0 {
                return Some(self.take(state));
            }
            if !state.jobs.is_empty() && !state.watching {
                // Watch the busy threads: a job if none of them finishes one for PATIENCE.
                state.watching = true;
                let done = state.done;
                state.idle += 1;
                state = self
                    .ready
                    .wait_timeout(state, PATIENCE)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                state.idle -= 1;
                state.watching = false;
                if state.done == done && !state.jobs.is_empty() {
                    return Some(self.take(state));
                }
                continue;
            }
            state.idle += 1;
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            state.idle -= 1;
        }
    }

    /// Takes the first job for a thread that becomes busy; another idle thread is woken to watch
    /// if jobs remain.
    fn take(&self, mut state: std::sync::MutexGuard<'_, QueueState>) -> Job {
        let job = state.jobs.pop_front().expect("a queued job");
        state.busy += 1;
        let wake = !state.jobs.is_empty() && !state.watching && state.idle > 0;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        job
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Apps loaded, by settings: a reload finds the app its settings already loaded.
static APPS: Mutex<Option<HashMap<Wsgi, Weak<WsgiApp>>>> = Mutex::new(None);

/// The app for `settings`: the one already loaded, or a new import with a new pool.
pub(super) fn app(settings: &Wsgi) -> Result<Arc<WsgiApp>, String> {
    let mut apps = APPS.lock().unwrap_or_else(|e| e.into_inner());
    let apps = apps.get_or_insert_with(HashMap::new);
    apps.retain(|_, app| app.strong_count() > 0);
    if let Some(app) = apps.get(settings).and_then(Weak::upgrade) {
        return Ok(app);
    }
    let app = Arc::new(load(settings)?);
    apps.insert(settings.clone(), Arc::downgrade(&app));
    Ok(app)
}

/// Imports the app and starts its threads.
fn load(settings: &Wsgi) -> Result<WsgiApp, String> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "a WSGI app is built inside parapet's runtime".to_owned())?;
    Python::initialize();
    let callable = Python::attach(|py| -> PyResult<Py<PyAny>> {
        let sys_path = py.import("sys")?.getattr("path")?;
        let sys_path = sys_path.cast::<PyList>()?;
        // Put the entries first, in their order, each once.
        for dir in settings.pythonpath.iter().rev() {
            let dir = dir.to_string_lossy();
            if !sys_path.contains(dir.as_ref())? {
                sys_path.insert(0, dir.as_ref())?;
            }
        }
        let (module, path) = settings
            .app
            .split_once(':')
            .ok_or_else(|| PyValueError::new_err("app is module:callable"))?;
        let mut object = py.import(module)?.into_any();
        for attr in path.split('.') {
            object = object.getattr(attr)?;
        }
        if !object.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "{} is not callable",
                settings.app
            )));
        }
        Ok(object.unbind())
    })
    .map_err(|err| {
        format!(
            "cannot load the WSGI app {:?}: {}",
            settings.app,
            Python::attach(|py| describe(py, &err))
        )
    })?;
    let callable = Arc::new(callable);
    let queue = Arc::new(Queue::new());
    for i in 0..settings.threads {
        let queue = Arc::clone(&queue);
        let callable = Arc::clone(&callable);
        let handle = handle.clone();
        std::thread::Builder::new()
            .name(format!("wsgi-{i}"))
            .spawn(move || worker(&queue, &callable, &handle))
            .map_err(|e| format!("cannot start a WSGI thread: {e}"))?;
    }
    tracing::info!(app = %settings.app, threads = settings.threads, "WSGI app loaded");
    Ok(WsgiApp { jobs: queue })
}

impl WsgiApp {
    /// The service handing each request to the app's threads.
    pub(super) fn service(self: Arc<Self>) -> AppService {
        AppService::from_fn(move |req| {
            let app = Arc::clone(&self);
            NeverFails::boxed(move || app.handle(req))
        })
    }

    async fn handle(self: Arc<Self>, req: Request) -> Response {
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = tmpsc::channel(RESPONSE_PIECES);
        let job = Job {
            request: req,
            head: head_tx,
            body: body_tx,
        };
        if !self.jobs.push(job) {
            return GatewayError::new(GatewayErrorKind::Internal)
                .with_detail("the WSGI app's threads are gone")
                .into_response();
        }
        match head_rx.await {
            Ok(Ok(answer)) => {
                let body = if answer.whole {
                    // Everything came with the head: the channel is not read (dropping it tells
                    // the app's thread that nothing more is wanted).
                    drop(body_rx);
                    Body::new(http_body_util::Full::new(answer.first))
                } else {
                    Body::new(PieceBody {
                        first: Some(answer.first).filter(|first| !first.is_empty()),
                        rx: body_rx,
                    })
                };
                let mut response = Response::new(body);
                *response.status_mut() = answer.head.status;
                *response.headers_mut() = answer.head.headers;
                response
            }
            Ok(Err(failure)) => GatewayError::new(GatewayErrorKind::Internal)
                .with_detail("the WSGI app failed before its response head")
                .with_source(failure)
                .into_response(),
            Err(_) => GatewayError::new(GatewayErrorKind::Internal)
                .with_detail("the WSGI app's thread dropped the request")
                .into_response(),
        }
    }
}

/// A request on its way to a pool thread, and where its answer goes.
struct Job {
    request: Request,
    head: oneshot::Sender<Result<Answer, AppFailure>>,
    body: tmpsc::Sender<Result<Bytes, BoxError>>,
}

/// The response head with the first piece of the body, sent together in one message.
struct Answer {
    head: Head,
    /// The first non-empty piece, or empty when the body is.
    first: Bytes,
    /// Whether `first` is the whole body (the channel then carries nothing).
    whole: bool,
}

/// The response head `start_response` was given.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
}

/// What the app raised: the exception and its traceback, as text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AppFailure(String);

/// The response body: the first piece (which came with the head), then the pieces the app's thread
/// sends, an error if the app failed after its head.
struct PieceBody {
    first: Option<Bytes>,
    rx: tmpsc::Receiver<Result<Bytes, BoxError>>,
}

impl HttpBody for PieceBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        self.rx
            .poll_recv(cx)
            .map(|piece| piece.map(|r| r.map(Frame::data)))
    }
}

/// A pool thread: takes jobs until the app is dropped. It attaches to Python once, so its thread
/// state lives as long as it does (attaching anew for each request would create and destroy one,
/// with its frame stack, every time), and lets go of the GIL only to wait for a job when none is
/// queued ([`Queue`] says which thread takes which job).
fn worker(queue: &Queue, callable: &Py<PyAny>, handle: &tokio::runtime::Handle) {
    Python::attach(|py| {
        let errors = match Py::new(py, Errors::default()) {
            Ok(errors) => errors,
            Err(err) => {
                tracing::error!("cannot start a WSGI thread: {}", describe(py, &err));
                return;
            }
        };
        let mut next = None;
        loop {
            let job = match next.take() {
                Some(job) => job,
                None => match py.detach(|| queue.pop()) {
                    Some(job) => job,
                    None => return,
                },
            };
            run(py, callable, handle, &errors, job);
            errors.get().flush();
            next = queue.next();
        }
    });
}

/// Runs the app for one request, PEP 3333 §"The Server/Gateway Side".
fn run(
    py: Python<'_>,
    callable: &Py<PyAny>,
    handle: &tokio::runtime::Handle,
    errors: &Py<Errors>,
    job: Job,
) {
    let Job {
        request,
        head,
        body,
    } = job;
    let (parts, request_body) = request.into_parts();
    let state = Arc::new(State {
        head: Mutex::new(HeadState {
            pending: None,
            sent: false,
            tx: Some(head),
        }),
        body: Mutex::new(Some(body)),
    });
    let outcome = (|| -> PyResult<()> {
        let environ = environ(py, &parts, request_body, handle, errors)?;
        let start_response = Py::new(
            py,
            StartResponse {
                state: Arc::clone(&state),
            },
        )?;
        let result = callable.bind(py).call1((environ, start_response))?;
        let sent = send_result(py, &state, &result);
        // PEP 3333: "If the iterable returned by the application has a close() method, the server
        // or gateway must call that method upon completion of the current request, whether the
        // request was completed normally, or terminated early due to an application error".
        let close = pyo3::intern!(py, "close");
        let closed = match result.hasattr(close) {
            Ok(true) => result.call_method0(close).map(drop),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        sent.and(closed)
    })();
    match outcome {
        Ok(()) => {
            // The end of the body: the head goes out now (with an empty body) if no piece carried
            // it.
            if let Err(err) = state.send_head(Bytes::new(), true) {
                fail(py, &state, err);
            }
        }
        Err(err) => fail(py, &state, err),
    }
    // The end of the body, even if the app keeps a reference to `write` or `start_response`.
    state.body.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// Sends the iterable's pieces; a `wsgi.file_wrapper` around a real file is sent from Rust.
fn send_result(py: Python<'_>, state: &State, result: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        if let Some(file) = wrapper.get().file(py)? {
            return send_file(py, state, file);
        }
    }
    // A list or tuple is all there already: its pieces go out as one, with the head if it has not
    // gone out yet, so that the gateway is woken once for the whole response.
    if let Ok(list) = result.cast::<PyList>() {
        return send_whole(py, state, list.iter());
    }
    if let Ok(tuple) = result.cast::<PyTuple>() {
        return send_whole(py, state, tuple.iter());
    }
    for piece in result.try_iter()? {
        let piece = piece?;
        if !state.send_piece(py, Bytes::copy_from_slice(as_bytes(&piece)?))? {
            // The client went away, or the body is whole (its Content-Length reached): stop
            // pulling (close() still runs).
            return Ok(());
        }
    }
    Ok(())
}

/// Sends every piece of a list or tuple as one.
fn send_whole<'py>(
    py: Python<'py>,
    state: &State,
    pieces: impl Iterator<Item = Bound<'py, PyAny>>,
) -> PyResult<()> {
    let mut body = BytesMut::new();
    for piece in pieces {
        body.extend_from_slice(as_bytes(&piece)?);
    }
    if body.is_empty() {
        return Ok(());
    }
    match state.send_head(body.freeze(), true)? {
        None => Ok(()),
        Some(body) => state.send_piece(py, body).map(drop),
    }
}

/// A piece of the body, which PEP 3333 says is a bytestring.
fn as_bytes<'a>(piece: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    let bytes = piece.cast::<PyBytes>().map_err(|_| {
        PyTypeError::new_err(format!(
            "a WSGI app's iterable yields bytes, not {}",
            piece
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    Ok(bytes.as_bytes())
}

/// Sends a file by its descriptor, reading it without the GIL.
fn send_file(py: Python<'_>, state: &State, mut file: File) -> PyResult<()> {
    loop {
        let piece = py.detach(|| {
            let mut buf = BytesMut::zeroed(FILE_CHUNK);
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>(buf.freeze())
        })?;
        if piece.is_empty() || !state.send_piece(py, piece)? {
            return Ok(());
        }
    }
}

/// The app failed: a 500 if its head has not gone out, else an aborted body. Logged with the
/// traceback either way.
fn fail(py: Python<'_>, state: &State, err: PyErr) {
    let text = describe(py, &err);
    let mut head = state.head.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = head.tx.take() {
        tracing::error!("WSGI app failed before its response head:\n{text}");
        let _ = tx.send(Err(AppFailure(text)));
    } else {
        tracing::error!("WSGI app failed after its response head, aborting the response:\n{text}");
        drop(head);
        state.abort(py, AppFailure(text));
    }
}

/// The exception with its traceback, as Python prints it.
fn describe(py: Python<'_>, err: &PyErr) -> String {
    let traceback = err
        .traceback(py)
        .and_then(|tb: Bound<'_, PyTraceback>| tb.format().ok())
        .unwrap_or_default();
    format!("{traceback}{err}")
}

/// What `start_response`, `write` and the iteration share for one request.
struct State {
    head: Mutex<HeadState>,
    /// Where the pieces after the first go; `None` once the body ended.
    body: Mutex<Option<tmpsc::Sender<Result<Bytes, BoxError>>>>,
}

struct HeadState {
    /// The head `start_response` was last given.
    pending: Option<Head>,
    /// Whether it went out (with the first non-empty piece, or at the end).
    sent: bool,
    /// Where it goes.
    tx: Option<oneshot::Sender<Result<Answer, AppFailure>>>,
}

impl State {
    /// Sends the head with `first`, the first non-empty piece of the body (or an empty one at the
    /// end), if the head has not gone out yet; `end` says that no piece follows. `first` back if the
    /// head went out before (it goes through the channel then). An error if the app never called
    /// start_response.
    fn send_head(&self, first: Bytes, end: bool) -> PyResult<Option<Bytes>> {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        if head.sent {
            return Ok(Some(first));
        }
        let Some(pending) = head.pending.take() else {
            return Err(PyRuntimeError::new_err(
                "the WSGI app returned without calling start_response",
            ));
        };
        head.sent = true;
        // A body whose Content-Length the first piece reaches is whole: what the app might yield
        // after it could not be sent anyway.
        let whole = end
            || pending
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                == Some(first.len());
        if let Some(tx) = head.tx.take() {
            let _ = tx.send(Ok(Answer {
                head: pending,
                first,
                whole,
            }));
        }
        Ok(None)
    }

    /// Sends a piece of the body (the head first), waiting without the GIL only while the client is
    /// slow. False if no more is wanted: the client went away, or the body was whole already.
    /// Empty pieces are skipped: they carry no head (PEP 3333).
    fn send_piece(&self, py: Python<'_>, piece: Bytes) -> PyResult<bool> {
        if piece.is_empty() {
            return Ok(true);
        }
        let Some(piece) = self.send_head(piece, false)? else {
            return Ok(true);
        };
        let Some(tx) = self.body.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(false);
        };
        match tx.try_send(Ok(piece)) {
            Ok(()) => Ok(true),
            Err(TrySendError::Closed(_)) => Ok(false),
            Err(TrySendError::Full(piece)) => Ok(py.detach(|| tx.blocking_send(piece).is_ok())),
        }
    }

    /// Aborts the body after its head: the gateway aborts the client's connection. Waits (without
    /// the GIL) for room in the channel if a slow client has not taken the pieces before it, so that
    /// the abort is never lost and a cut body never ends as if whole.
    fn abort(&self, py: Python<'_>, failure: AppFailure) {
        let tx = self.body.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            if let Err(TrySendError::Full(failure)) = tx.try_send(Err(Box::new(failure))) {
                py.detach(|| {
                    let _ = tx.blocking_send(failure);
                });
            }
        }
    }
}

/// `start_response(status, response_headers, exc_info=None)`, PEP 3333 §"The start_response()
/// Callable".
#[pyclass(frozen)]
struct StartResponse {
    state: Arc<State>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let py = status.py();
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let head = self.state.head.lock().unwrap_or_else(|e| e.into_inner());
            match (exc_info, head.sent, head.pending.is_some()) {
                // "if exc_info is provided, and the HTTP headers have already been sent,
                // start_response must raise an error, and should re-raise using the exc_info tuple"
                (Some(info), true, _) => return Err(PyErr::from_value(info.get_item(1)?)),
                // "it is a fatal error to call start_response without the exc_info argument if
                // start_response has already been called within the current invocation"
                (None, _, true) | (None, true, _) => {
                    return Err(PyRuntimeError::new_err(
                        "start_response called a second time without exc_info",
                    ))
                }
                _ => {}
            }
        }
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("the status is a str, like \"200 OK\""))?
            .to_str()?;
        let code = status
            .get(..3)
            .filter(|_| status.len() == 3 || status.as_bytes().get(3) == Some(&b' '))
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .filter(|code| code.as_u16() >= 200)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "invalid status {status:?}: expected \"NNN Reason\", NNN from 200 to 999"
                ))
            })?;
        let mut map = HeaderMap::new();
        for item in headers.try_iter()? {
            let item = item?;
            let pair = item
                .cast::<PyTuple>()
                .map_err(|_| PyTypeError::new_err("each header is a (name, value) tuple"))?;
            if pair.len() != 2 {
                return Err(PyTypeError::new_err("each header is a (name, value) tuple"));
            }
            let name = latin1(&pair.get_item(0)?)?;
            let value = latin1(&pair.get_item(1)?)?;
            let name = HeaderName::from_bytes(&name)
                .map_err(|_| PyValueError::new_err(format!("invalid header name {name:?}")))?;
            // PEP 3333: the app must not send hop-by-hop headers; the gateway owns the connection.
            if is_hop_by_hop(&name) {
                return Err(PyValueError::new_err(format!(
                    "a WSGI app may not set the hop-by-hop header {name}"
                )));
            }
            let value = HeaderValue::from_bytes(&value)
                .map_err(|_| PyValueError::new_err(format!("invalid value for header {name}")))?;
            map.append(name, value);
        }
        self.state
            .head
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending = Some(Head {
            status: code,
            headers: map,
        });
        let _ = py;
        Ok(Write {
            state: Arc::clone(&self.state),
        })
    }
}

/// The `write` callable `start_response` returns (PEP 3333 §"The write() Callable"): the head, then
/// the data, out before it returns (or buffered for a slow client).
#[pyclass(frozen)]
struct Write {
    state: Arc<State>,
}

#[pymethods]
impl Write {
    fn __call__(&self, data: &Bound<'_, PyBytes>) -> PyResult<()> {
        let py = data.py();
        let piece = Bytes::copy_from_slice(data.as_bytes());
        if !self.state.send_piece(py, piece)? {
            return Err(PyOSError::new_err("the client went away"));
        }
        Ok(())
    }
}

/// A header name or value as PEP 3333 gives them: a `str` of latin-1 code points.
fn latin1(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let s = value
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("header names and values are str"))?
        .to_str()?;
    s.chars()
        .map(|c| u8::try_from(u32::from(c)))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| PyValueError::new_err("header text must be latin-1"))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Bytes as the latin-1 `str` PEP 3333 uses for the environ's text.
fn latin1_str(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Decodes `%XX` escapes (PATH_INFO is the decoded path, PEP 3333 via CGI).
fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The environ's values that are the same for every request, made once.
struct Constants {
    version: Py<PyTuple>,
    file_wrapper: Py<PyAny>,
}

static CONSTANTS: PyOnceLock<Constants> = PyOnceLock::new();

/// The environ key for a request header: `HTTP_` and its name in capitals, `-` as `_`; interned
/// for the common ones. `None` for a name holding `_`, which would pose as the one with `-`
/// (X_Forwarded_For as X-Forwarded-For): dropped, as nginx and gunicorn do.
fn header_key<'py>(py: Python<'py>, name: &HeaderName) -> Option<Bound<'py, PyString>> {
    use pyo3::intern;
    let key = match name.as_str() {
        "host" => intern!(py, "HTTP_HOST"),
        "user-agent" => intern!(py, "HTTP_USER_AGENT"),
        "accept" => intern!(py, "HTTP_ACCEPT"),
        "accept-encoding" => intern!(py, "HTTP_ACCEPT_ENCODING"),
        "accept-language" => intern!(py, "HTTP_ACCEPT_LANGUAGE"),
        "cookie" => intern!(py, "HTTP_COOKIE"),
        "connection" => intern!(py, "HTTP_CONNECTION"),
        "referer" => intern!(py, "HTTP_REFERER"),
        "authorization" => intern!(py, "HTTP_AUTHORIZATION"),
        "x-forwarded-for" => intern!(py, "HTTP_X_FORWARDED_FOR"),
        "x-forwarded-proto" => intern!(py, "HTTP_X_FORWARDED_PROTO"),
        "x-forwarded-host" => intern!(py, "HTTP_X_FORWARDED_HOST"),
        "x-request-id" => intern!(py, "HTTP_X_REQUEST_ID"),
        "content-type" => intern!(py, "CONTENT_TYPE"),
        "content-length" => intern!(py, "CONTENT_LENGTH"),
        n if n.contains('_') => return None,
        n => {
            return Some(PyString::new(
                py,
                &format!("HTTP_{}", n.to_ascii_uppercase().replace('-', "_")),
            ))
        }
    };
    Some(key.clone())
}

/// The environ of PEP 3333 §"environ Variables" for one request. Its keys and constant values are
/// interned Python strings made once, so that building it allocates little more than the
/// request's own text.
fn environ<'py>(
    py: Python<'py>,
    parts: &http::request::Parts,
    body: Body,
    handle: &tokio::runtime::Handle,
    errors: &Py<Errors>,
) -> PyResult<Bound<'py, PyDict>> {
    use pyo3::intern;
    let constants = CONSTANTS.get_or_try_init(py, || -> PyResult<Constants> {
        Ok(Constants {
            version: PyTuple::new(py, [1, 0])?.unbind(),
            file_wrapper: py.get_type::<FileWrapper>().into_any().unbind(),
        })
    })?;
    let env = PyDict::new(py);
    let path = parts.uri.path();
    // SCRIPT_NAME is where the route is mounted; PATH_INFO what follows.
    let (script_name, path_info) = match parts.extensions.get::<MountPoint>() {
        Some(mount) if mount.stripped => (&*mount.prefix, path),
        Some(mount) => (
            &*mount.prefix,
            path.strip_prefix(&*mount.prefix).unwrap_or(path),
        ),
        None => ("", path),
    };
    let method = match parts.method {
        http::Method::GET => intern!(py, "GET").clone(),
        http::Method::POST => intern!(py, "POST").clone(),
        http::Method::HEAD => intern!(py, "HEAD").clone(),
        ref other => PyString::new(py, other.as_str()),
    };
    env.set_item(intern!(py, "REQUEST_METHOD"), method)?;
    env.set_item(intern!(py, "SCRIPT_NAME"), script_name)?;
    let path_info = if path_info.contains('%') {
        PyString::new(py, &latin1_str(&percent_decode(path_info)))
    } else {
        // Without escapes, the path is ASCII already (the URI's characters are).
        PyString::new(py, path_info)
    };
    env.set_item(intern!(py, "PATH_INFO"), path_info)?;
    env.set_item(intern!(py, "QUERY_STRING"), parts.uri.query().unwrap_or(""))?;
    env.set_item(
        intern!(py, "RAW_URI"),
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
    )?;
    let protocol = match parts.version {
        http::Version::HTTP_10 => intern!(py, "HTTP/1.0"),
        http::Version::HTTP_2 => intern!(py, "HTTP/2"),
        _ => intern!(py, "HTTP/1.1"),
    };
    env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    // Over TLS, the connection said so once (`TlsInfo`); an HTTP/2 request's URI carries `:scheme`.
    let scheme = if parts.extensions.get::<TlsInfo>().is_some() {
        "https"
    } else {
        parts.uri.scheme_str().unwrap_or("http")
    };
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("localhost");
    let (server_name, server_port) = split_host(host, scheme);
    env.set_item(intern!(py, "SERVER_NAME"), server_name)?;
    env.set_item(intern!(py, "SERVER_PORT"), server_port)?;
    // REMOTE_ADDR is the client as resolved with `server.trusted_proxies`; REMOTE_PORT the peer's.
    if let Some(client) = ClientIp::of(&parts.extensions) {
        env.set_item(intern!(py, "REMOTE_ADDR"), client.ip.to_string())?;
    }
    if let Some(ClientAddr(addr)) = parts.extensions.get::<ClientAddr>() {
        env.set_item(intern!(py, "REMOTE_PORT"), addr.port().to_string())?;
    }
    // Repeated headers are joined (`,`, or `; ` for cookies); the others are set as they are.
    for name in parts.headers.keys() {
        let mut values = parts.headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        let Some(key) = header_key(py, name) else {
            continue;
        };
        let mut rest = values.peekable();
        if rest.peek().is_none() {
            env.set_item(key, latin1_text(py, first.as_bytes()))?;
            continue;
        }
        let sep: &[u8] = if name == http::header::COOKIE {
            b"; "
        } else {
            b","
        };
        let mut value = first.as_bytes().to_vec();
        for more in rest {
            value.extend_from_slice(sep);
            value.extend_from_slice(more.as_bytes());
        }
        env.set_item(key, latin1_text(py, &value))?;
    }
    env.set_item(intern!(py, "wsgi.version"), constants.version.bind(py))?;
    let scheme = match scheme {
        "https" => intern!(py, "https").clone(),
        "http" => intern!(py, "http").clone(),
        other => PyString::new(py, other),
    };
    env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
    env.set_item(
        intern!(py, "wsgi.input"),
        Py::new(
            py,
            Input {
                state: Mutex::new(InputState {
                    body: Some(body),
                    buf: BytesMut::new(),
                }),
                handle: handle.clone(),
            },
        )?,
    )?;
    env.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    env.set_item(intern!(py, "wsgi.errors"), errors.bind(py))?;
    env.set_item(intern!(py, "wsgi.multithread"), true)?;
    env.set_item(intern!(py, "wsgi.multiprocess"), false)?;
    env.set_item(intern!(py, "wsgi.run_once"), false)?;
    env.set_item(
        intern!(py, "wsgi.file_wrapper"),
        constants.file_wrapper.bind(py),
    )?;
    Ok(env)
}

/// Bytes as a latin-1 `str`, without a copy through Rust's UTF-8 when they are ASCII.
fn latin1_text<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.is_ascii() => PyString::new(py, text),
        _ => PyString::new(py, &latin1_str(bytes)),
    }
}

/// `Host` split into SERVER_NAME and SERVER_PORT (the scheme's port when it names none).
fn split_host<'h>(host: &'h str, scheme: &str) -> (&'h str, &'h str) {
    let default = if scheme == "https" { "443" } else { "80" };
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return match rest.split_once(']') {
            Some((ip, port)) => (
                &host[..ip.len() + 2],
                port.strip_prefix(':')
                    .filter(|p| !p.is_empty())
                    .unwrap_or(default),
            ),
            None => (host, default),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() => (name, port),
        _ => (host, default),
    }
}

/// `wsgi.input`: the request body, read as the app asks, without the GIL while it waits.
#[pyclass(frozen)]
struct Input {
    state: Mutex<InputState>,
    handle: tokio::runtime::Handle,
}

struct InputState {
    /// The body still to read; `None` once it ended.
    body: Option<Body>,
    /// Read from the body, not yet given to the app.
    buf: BytesMut,
}

impl Input {
    /// Reads from the body until `buf` holds `want` bytes (or a newline, with `line`), or the body
    /// ends.
    fn fill(&self, py: Python<'_>, want: Option<usize>, line: bool) -> PyResult<()> {
        py.detach(|| {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let enough = match want {
                    Some(n) => state.buf.len() >= n,
                    None => false,
                } || (line && state.buf.contains(&b'\n'));
                if enough {
                    return Ok(());
                }
                let Some(body) = state.body.as_mut() else {
                    return Ok(());
                };
                match self.handle.block_on(body.frame()) {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            state.buf.extend_from_slice(&data);
                        }
                    }
                    Some(Err(err)) => {
                        state.body = None;
                        return Err(PyOSError::new_err(format!(
                            "the request body failed: {}",
                            parapet_middlewares::ErrorChain(&*err)
                        )));
                    }
                    None => state.body = None,
                }
            }
        })
    }

    fn take(&self, n: Option<usize>) -> Bytes {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.map_or(state.buf.len(), |n| n.min(state.buf.len()));
        state.buf.split_to(n).freeze()
    }
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: up to `size` bytes, everything left if negative or absent.
    #[pyo3(signature = (size=-1))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let want = size.and_then(|s| usize::try_from(s).ok());
        self.fill(py, want, false)?;
        Ok(PyBytes::new(py, &self.take(want)))
    }

    /// `readline(size=-1)`: up to and including the next newline.
    #[pyo3(signature = (size=-1))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size.and_then(|s| usize::try_from(s).ok());
        self.fill(py, limit, true)?;
        let n = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let line = state.buf.iter().position(|&b| b == b'\n').map(|i| i + 1);
            match (line, limit) {
                (Some(l), Some(m)) => l.min(m),
                (Some(l), None) => l,
                (None, Some(m)) => m,
                (None, None) => state.buf.len(),
            }
        };
        Ok(PyBytes::new(py, &self.take(Some(n))))
    }

    /// `readlines(hint=-1)`: lines until their total reaches `hint`, or all of them.
    #[pyo3(signature = (hint=-1))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = hint
            .and_then(|h| usize::try_from(h).ok())
            .filter(|h| *h > 0);
        let mut lines = Vec::new();
        let mut total = 0;
        loop {
            let line = self.readline(py, None)?;
            if line.as_bytes().is_empty() {
                return Ok(lines);
            }
            total += line.as_bytes().len();
            lines.push(line);
            if hint.is_some_and(|h| total >= h) {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}

/// `wsgi.errors`: text the app writes to its error stream, into parapet's log line by line.
#[pyclass(frozen)]
#[derive(Default)]
struct Errors {
    partial: Mutex<String>,
}

#[pymethods]
impl Errors {
    fn write(&self, text: &str) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        partial.push_str(text);
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            tracing::warn!(target: "parapet::wsgi", "{}", line.trim_end());
        }
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?.extract::<String>()?);
        }
        Ok(())
    }

    fn flush(&self) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        if !partial.is_empty() {
            tracing::warn!(target: "parapet::wsgi", "{}", partial.trim_end());
            partial.clear();
        }
    }
}

/// `wsgi.file_wrapper(filelike, blksize=8192)`: an iterable over a file; when the file has a
/// `fileno()`, parapet sends it from Rust instead of iterating in Python.
#[pyclass(frozen)]
struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

impl FileWrapper {
    /// The file to send from Rust, a duplicate of its descriptor at its current position; `None`
    /// when it has no usable `fileno()`.
    fn file(&self, py: Python<'_>) -> PyResult<Option<File>> {
        let filelike = self.filelike.bind(py);
        if !filelike.hasattr("fileno")? {
            return Ok(None);
        }
        let Ok(fd) = filelike
            .call_method0("fileno")
            .and_then(|n| n.extract::<i32>())
        else {
            return Ok(None);
        };
        // Python's buffered file may hold bytes read ahead of the descriptor's position: flushing
        // a reader is not possible, so only a file whose Python-side position matches its
        // descriptor's is sent from Rust.
        let position = filelike
            .call_method0("tell")
            .and_then(|p| p.extract::<u64>())
            .ok();
        // SAFETY: `fd` is open for as long as `filelike` is, which outlives this call; it is only
        // borrowed here to be duplicated.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let Ok(owned) = borrowed.try_clone_to_owned() else {
            return Ok(None);
        };
        let mut file = File::from(owned);
        use std::io::Seek;
        let at = file.stream_position().ok();
        if position.is_none() || at != position {
            return Ok(None);
        }
        Ok(Some(file))
    }
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        Self {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        let empty = data.len().map(|n| n == 0).unwrap_or(true);
        Ok((!empty).then_some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let filelike = self.filelike.bind(py);
        if filelike.hasattr("close")? {
            filelike.call_method0("close")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_splits_into_server_name_and_port() {
        assert_eq!(split_host("example.com", "http"), ("example.com", "80"));
        assert_eq!(
            split_host("example.com:8080", "http"),
            ("example.com", "8080")
        );
        assert_eq!(split_host("example.com", "https"), ("example.com", "443"));
        assert_eq!(split_host("[::1]:9000", "http"), ("[::1]", "9000"));
        assert_eq!(split_host("[::1]", "http"), ("[::1]", "80"));
    }

    #[test]
    fn path_info_is_percent_decoded_bytes() {
        assert_eq!(percent_decode("/a%20b/%C3%A9"), b"/a b/\xc3\xa9");
        assert_eq!(percent_decode("/bad%zz/%4"), b"/bad%zz/%4");
        assert_eq!(latin1_str(b"\xc3\xa9"), "\u{c3}\u{a9}");
    }
}
