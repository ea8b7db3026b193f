//! parapet's own HTTP/1.1 client, for the common request: one without a body, to a server over plain
//! TCP.
//!
//! hyper's client runs each connection in a task of its own: a request is handed to that task over
//! a channel, the task writes it, reads and parses the response head and hands it back over
//! another channel, and the body's frames cross the same way. For a proxied `GET` that is two task
//! wake-ups and a third of the request's instructions (about 13,000 of 40,000 on the `bare`
//! benchmark, by callgrind). Here the request's own future writes the head and reads the answer on
//! the connection it checked out of the pool ([`Conn`]), as Pingora and nginx do; a body that came
//! whole with the head (the usual small answer) is handed on as one chunk and the connection goes
//! back to the pool at once, without a task, a channel or a body future.
//!
//! What it does, and the hard cases it keeps as hyper's client does (RFC 9112):
//!
//! - The head is written in one piece: request line in origin form, the headers as the proxy made
//!   them (`Transfer-Encoding` dropped: there is no body), an empty line.
//! - The response head is parsed by `httparse` (as hyper's is), at most [`MAX_HEAD`] bytes and
//!   [`MAX_HEADERS`] fields, else the response is refused (502). Values are slices of the bytes
//!   read: no copy. A reason phrase other than the status's canonical one is kept in hyper's
//!   `ReasonPhrase` extension, as hyper's client keeps it, so the client sees it too.
//! - Interim responses (`100 Continue`, `103 Early Hints`, any 1xx but 101) are read and skipped; a
//!   `101` (never asked for here: upgrades go through hyper) is returned without a body and the
//!   connection closed, for the proxy to refuse.
//! - Body framing (§6.3): none for a `HEAD` request or a 204 or 304; else `Transfer-Encoding`
//!   ending in `chunked` is decoded (extensions skipped, trailers passed on as a trailers frame);
//!   another `Transfer-Encoding`, or none and no `Content-Length`, is read until the connection
//!   closes; `Content-Length` (several equal values allowed, as a list or as lines) is read
//!   exactly; differing or invalid lengths, or `Transfer-Encoding` in an HTTP/1.0 response, are
//!   refused (502). A body cut short is an error, never a clean end.
//! - Keep-alive: an HTTP/1.1 response keeps the connection unless a `Connection` line says `close`;
//!   an HTTP/1.0 one only if it says `keep-alive`. The connection goes back to the pool only after
//!   its body was read to its end, with no byte left over (an upstream that sent more than it
//!   framed is not trusted again).
//! - Stale connections: an idle connection is checked at checkout from the reactor's readiness (no
//!   system call unless the server wrote or closed); one that sent nothing and closed when the
//!   request came is dropped and the request sent again on a new connection, if it is idempotent
//!   (RFC 9110 §9.2.2) or the close came before the request was written.
//!
//! Requests with a body, upgrades, TLS and HTTP/2 servers go through hyper's client (`pool.rs`).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Frame, SizeHint};
use parapet_middlewares::{Body, BoxError, GatewayError, GatewayErrorKind};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The largest response head read (status line and fields); a larger one is refused.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most fields a response head may have (hyper's default too).
pub(crate) const MAX_HEADERS: usize = 100;

/// A field's place in its head: where its name starts and ends, then where its value starts and
/// ends (byte offsets, ends excluded), as both parsers, the server's and the upstream client's,
/// write them.
pub(crate) type Span = (u32, u32, u32, u32);

/// Room for a head's [`Span`]s on the stack, never zeroed: an array of a hundred zeroed spans was
/// 1.6 KB of stores on every head, the server's and the upstream's. Not in [`FieldSpans`] itself:
/// LLVM zeroes a struct's uninitialised array when the struct is built and moved.
pub(crate) type SpanRoom = [std::mem::MaybeUninit<Span>; MAX_HEADERS];

/// An empty [`SpanRoom`].
#[inline(always)]
pub(crate) const fn span_room() -> SpanRoom {
    [std::mem::MaybeUninit::uninit(); MAX_HEADERS]
}

/// Where a head's fields lie in its bytes, written as the parser's fields are read, in a
/// [`SpanRoom`] on the caller's stack.
pub(crate) struct FieldSpans<'a> {
    room: &'a mut SpanRoom,
    len: usize,
}

impl<'a> FieldSpans<'a> {
    /// No spans yet.
    #[inline(always)]
    pub(crate) fn new(room: &'a mut SpanRoom) -> Self {
        FieldSpans { room, len: 0 }
    }

    /// Adds the next field's span; panics past [`MAX_HEADERS`] (the parsers are given no more
    /// slots than that).
    #[inline(always)]
    pub(crate) fn push(&mut self, span: Span) {
        self.room[self.len].write(span);
        self.len += 1;
    }

    /// The spans pushed, in order.
    #[inline(always)]
    pub(crate) fn as_slice(&self) -> &[Span] {
        // SAFETY: the first `len` spans were written by `push`; `MaybeUninit<T>` has `T`'s layout.
        unsafe { std::slice::from_raw_parts(self.room.as_ptr().cast(), self.len) }
    }
}

/// The fields a response's header map has room for at least (see [`Conn::parse`]).
const MIN_MAP_CAPACITY: usize = 24;
/// The most bytes of a chunk-size line (the size and its extensions), and of a body's trailers.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// What the read buffer grows by when it runs out of room, and the least room a read is given.
const READ_CHUNK: usize = 8 * 1024;
const MIN_READ_ROOM: usize = 1024;

/// One kept-alive connection to an upstream server.
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed. A read buffer's chunk is shared with the bodies carved out
    /// of it, and replaced when it runs out of room.
    read: BytesMut,
    /// The request head being written; its capacity kept from one request to the next.
    write: Vec<u8>,
    /// The timer bounding an exchange ([`Self::exchange_by`]), kept from one request to the next:
    /// re-armed rather than made anew, and only when an earlier deadline fires (see there).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The [`HeaderName`] of a field name as sent: a thread's recent names, parsed once and kept by
/// their bytes (case as sent), or parsed now.
///
/// Peers send the same few names request after request (a client's `Host`, `User-Agent`,
/// `Accept`; a server's `Server`, `Date`, `Content-Type`), so a name is looked up by its bytes in a
/// small table of the thread's, and on a match its parsed name is copied (a copy, or a reference
/// count) rather than parsed again. The table is the thread's rather than each connection's: a
/// thread's next request, whatever its connection, finds it in the processor's caches, where a
/// connection's own table has gone cold since its last request once the thread serves many
/// connections, and it needs no room per connection. It is direct-mapped: a name takes its slot
/// from a hash of its length and first and last eight bytes, and replaces what was there. Names
/// longer than [`KNOWN_LEN`] are parsed each time.
pub(crate) fn header_name(sent: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let n = sent.len();
    if n == 0 || n > KNOWN_LEN {
        return HeaderName::from_bytes(sent);
    }
    let slot = known_slot(sent);
    let kept = KNOWN
        .try_with(|known| {
            known.borrow()[slot]
                .as_ref()
                .filter(|k| same_bytes(&k.bytes[..usize::from(k.len)], sent))
                .map(|k| k.name.clone())
        })
        .ok()
        .flatten();
    if let Some(name) = kept {
        return Ok(name);
    }
    let name = HeaderName::from_bytes(sent)?;
    let mut bytes = [0; KNOWN_LEN];
    bytes[..n].copy_from_slice(sent);
    let _ = KNOWN.try_with(|known| {
        known.borrow_mut()[slot] = Some(Known {
            len: n as u8,
            bytes,
            name: name.clone(),
        });
    });
    Ok(name)
}

/// The longest name [`header_name`] keeps.
const KNOWN_LEN: usize = 32;
/// Slots in a thread's table of names (a power of two).
const KNOWN_SLOTS: usize = 64;

/// A name kept: its bytes as sent and its parsed form.
struct Known {
    len: u8,
    bytes: [u8; KNOWN_LEN],
    name: HeaderName,
}

thread_local! {
    static KNOWN: std::cell::RefCell<[Option<Known>; KNOWN_SLOTS]> =
        const { std::cell::RefCell::new([const { None }; KNOWN_SLOTS]) };
}

/// The slot of a name of 1 to [`KNOWN_LEN`] bytes: its length and its first and last eight bytes
/// (fewer for a shorter name), mixed by a multiplication.
#[inline]
fn known_slot(sent: &[u8]) -> usize {
    let n = sent.len();
    let word = |at: usize| u64::from_ne_bytes(sent[at..at + 8].try_into().unwrap());
    let (first, last) = if n >= 8 {
        (word(0), word(n - 8))
    } else {
        let mut small = [0u8; 8];
        small[..n].copy_from_slice(sent);
        (u64::from_ne_bytes(small), 0)
    };
    let mixed = (first ^ last.rotate_left(29) ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> (64 - KNOWN_SLOTS.trailing_zeros())) as usize
}

/// Whether `a` and `b` are the same bytes: for short strings (field names), words compared inline
/// rather than a call to `memcmp`.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n >= 8 {
        let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().unwrap());
        let mut at = 0;
        while at + 8 < n {
            if word(a, at) != word(b, at) {
                return false;
            }
            at += 8;
        }
        // The last eight bytes, overlapping the words before when `n` is not a multiple of 8.
        return word(a, n - 8) == word(b, n - 8);
    }
    if n >= 4 {
        let word = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().unwrap());
        return word(a, 0) == word(b, 0) && word(a, n - 4) == word(b, n - 4);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The connection closed or broke before any byte of a response came; `written` says whether
    /// the request had been written whole.
    Closed {
        written: bool,
        source: std::io::Error,
    },
    /// The connection broke in the middle of a response head.
    Broken(std::io::Error),
    /// The response head is not one this client takes (why, for the log and the 502's detail).
    Malformed(&'static str),
}

/// How a response's body is framed, and where its reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes still to come.
    Length(u64),
    /// Chunked coding.
    Chunked(Chunk),
    /// Until the server closes the connection.
    Eof,
    /// Read to its end.
    Done,
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line comes next.
    Size,
    /// This many bytes of the current chunk's data still to come.
    Data(u64),
    /// The CRLF after a chunk's data comes next.
    DataEnd,
    /// The trailer section (possibly empty) after the last chunk comes next.
    Trailers,
}

/// What [`Conn::parse`] found at the start of the read buffer.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) response, taken out of the buffer and skipped.
    Interim,
    /// A final response's head, taken out of the buffer.
    Final(Head),
}

/// A response head as read: the response without its body, and how the body is framed.
pub(crate) struct Head {
    pub(crate) response: http::Response<()>,
    framing: Framing,
    keep_alive: bool,
}

impl Conn {
    /// A new connection's state.
    pub(crate) fn new(io: TcpStream) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            timer: None,
        }
    }

    /// Whether an idle connection can take a request: the server sent nothing since and did not
    /// close it. Asks the reactor first (no system call): only if the socket was marked readable
    /// is it read, without blocking.
    pub(crate) fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the head of `req` (which has no body) and reads the response head, skipping interim
    /// (1xx) responses. The bytes of the body that came with the head stay in the read buffer.
    pub(crate) fn exchange(
        &mut self,
        req: &http::Request<Body>,
    ) -> impl std::future::Future<Output = Result<Head, Failed>> + Send + '_ {
        encode(&mut self.write, req);
        self.answer_to(req.method() == Method::HEAD)
    }

    /// [`Self::exchange`] bounded by `deadline` on the connection's own timer; `None` if the
    /// deadline passed first (the connection is then not to be used again).
    pub(crate) fn exchange_by(
        &mut self,
        req: &http::Request<Body>,
        deadline: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Option<Result<Head, Failed>>> + Send + '_ {
        encode(&mut self.write, req);
        let head_only = req.method() == Method::HEAD;
        async move {
            // Re-armed lazily, as the body timer is (see `ReadTimeout`): a timer still armed for an
            // earlier exchange's deadline, which is sooner, is left as it is, and moved to this
            // one's only if it fires first. Requests in a row on a connection come well within a
            // timeout of each other, so the timer is re-armed about once per timeout rather than
            // once per request (each a trip through tokio's timer wheel). The cost: one early
            // wake-up per timeout, of this exchange or, if the connection sits idle, of the task
            // that last polled it.
            let mut timer = match self.timer.take() {
                Some(mut timer) => {
                    if timer.deadline() > deadline || timer.is_elapsed() {
                        timer.as_mut().reset(deadline);
                    }
                    timer
                }
                None => Box::pin(tokio::time::sleep_until(deadline)),
            };
            let answer = {
                let mut exchange = std::pin::pin!(self.answer_to(head_only));
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(answer) = exchange.as_mut().poll(cx) {
                        return Poll::Ready(Some(answer));
                    }
                    while timer.as_mut().poll(cx).is_ready() {
                        if timer.deadline() >= deadline {
                            return Poll::Ready(None);
                        }
                        // An earlier exchange's deadline: this one's is later.
                        timer.as_mut().reset(deadline);
                    }
                    Poll::Pending
                })
                .await
            };
            self.timer = Some(timer);
            answer
        }
    }

    async fn answer_to(&mut self, head_only: bool) -> Result<Head, Failed> {
        if let Err(source) = self.io.write_all(&self.write).await {
            // Whether some of it went: the server may have read a part, never a whole request.
            return Err(Failed::Closed {
                written: false,
                source,
            });
        }
        let mut got_any = false;
        loop {
            if !self.read.is_empty() {
                got_any = true;
                match self.parse(head_only)? {
                    Parsed::Final(head) => return Ok(head),
                    // What follows it, if anything, is parsed next.
                    Parsed::Interim => continue,
                    Parsed::Partial if self.read.len() >= MAX_HEAD => {
                        return Err(Failed::Malformed("response head larger than 64 KiB"))
                    }
                    Parsed::Partial => {}
                }
            }
            match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if got_any => {
                    return Err(Failed::Broken(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of the response head",
                    )))
                }
                Ok(0) => {
                    return Err(Failed::Closed {
                        written: true,
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "connection closed before the response",
                        ),
                    })
                }
                Ok(_) => {}
                Err(source) if got_any => return Err(Failed::Broken(source)),
                Err(source) => {
                    return Err(Failed::Closed {
                        written: true,
                        source,
                    })
                }
            }
        }
    }

    /// Reads what the socket has into the read buffer (at least [`MIN_READ_ROOM`] bytes of room);
    /// `Ok(0)` at the end of the stream.
    ///
    /// An empty buffer whose chunk nothing else holds any more (the bodies and heads carved out of
    /// it are gone) starts again at the chunk's start, with all its room: a response of up to
    /// [`READ_CHUNK`] comes in one read, into memory the last one just used, rather than in two
    /// where the chunk's tail is short (and the next chunk allocated sooner).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let room = self.read.capacity() - self.read.len();
        if room < READ_CHUNK && self.read.is_empty() {
            // Only if that costs no allocation: a chunk still shared keeps its tail's room.
            let _ = self.read.try_reclaim(READ_CHUNK);
        }
        if self.read.capacity() - self.read.len() < MIN_READ_ROOM {
            self.read.reserve(READ_CHUNK);
        }
        let spare = self.read.spare_capacity_mut();
        let mut buf = ReadBuf::uninit(spare);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
                unsafe { self.read.set_len(self.read.len() + n) };
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Parses a response head at the start of the read buffer and takes it out of it, if whole.
    fn parse(&mut self, head_only: bool) -> Result<Parsed, Failed> {
        let mut fields =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        // Each field as (name, value) byte ranges of the head.
        let mut room = span_room();
        let mut ranges = FieldSpans::new(&mut room);
        let mut res = httparse::Response::new(&mut []);
        let bytes: &[u8] = &self.read;
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            bytes,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Failed::Malformed("response head has over 100 fields"))
            }
            Err(_) => return Err(Failed::Malformed("malformed response head")),
        };
        let code = res.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| Failed::Malformed("invalid response status"))?;
        let version = if res.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let reason = res
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .map(|r| Bytes::copy_from_slice(r.as_bytes()));
        let base = bytes.as_ptr() as usize;
        let count = res.headers.len();
        for field in res.headers.iter() {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            ranges.push((
                name as u32,
                (name + field.name.len()) as u32,
                value as u32,
                (value + field.value.len()) as u32,
            ));
        }
        let head = self.read.split_to(len).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Parsed::Interim);
        }
        // Room for the fields layers add on the way out, and, as hyper's server keeps a response's
        // (cleared) map to parse the connection's next request into, for that request's fields and
        // the forwarding ones the proxy adds to it: neither grows the map then.
        // A map the proxy gave back (the request's just sent, see `crate::spare`), if there is one.
        let mut headers = crate::spare::take_headers(count.max(MIN_MAP_CAPACITY));
        let mut keep_alive = version == Version::HTTP_11;
        let mut close = false;
        // The framing fields seen on the way: `Transfer-Encoding` at all, and how many
        // `Content-Length` lines with the first one's value, so that framing needs no lookup in the
        // map for the usual head (a `Content-Length` line and no `Transfer-Encoding`).
        let mut transfer_encoding = false;
        let (mut lengths, mut first_length) = (0usize, None);
        for &(n0, n1, v0, v1) in ranges.as_slice() {
            let name = header_name(&head[n0 as usize..n1 as usize])
                .map_err(|_| Failed::Malformed("invalid field name in response head"))?;
            let value = head.slice(v0 as usize..v1 as usize);
            // SAFETY: httparse admits in a field value only what a `HeaderValue` may hold (tab,
            // visible ASCII, obs-text; no CR, LF, NUL or DEL): not checked twice, as hyper's
            // client does not check it twice either.
            let value = unsafe { HeaderValue::from_maybe_shared_unchecked(value) };
            if name == header::CONNECTION {
                if close || has_token(&value, "close") {
                    close = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = has_token(&value, "keep-alive");
                }
                // A line of `keep-alive` or `close` only, the usual one, describes this connection
                // and names no header but `Keep-Alive` (hop-by-hop anyway) and `Close` (removed
                // below): it is not kept, so the proxy's hop-by-hop pass has no option to parse.
                if only_tokens(&value, &["keep-alive", "close"]) {
                    continue;
                }
            }
            if name == header::TRANSFER_ENCODING {
                transfer_encoding = true;
            } else if name == header::CONTENT_LENGTH {
                lengths += 1;
                if first_length.is_none() {
                    first_length = Some(agreed_length([value.as_bytes()]));
                }
            }
            headers.append(name, value);
        }
        if close {
            // RFC 9110 §7.6.1: a header named by a `Connection` option is not forwarded (a line
            // kept above and naming `close` would have it removed by the hop-by-hop pass too).
            headers.remove("close");
        }
        let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
            keep_alive = false;
            Framing::Done
        } else if head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Done
        } else if transfer_encoding {
            if version == Version::HTTP_10 {
                return Err(Failed::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 response",
                ));
            }
            if is_chunked(&headers) {
                Framing::Chunked(Chunk::Size)
            } else {
                keep_alive = false;
                Framing::Eof
            }
        } else if let Some(first) = first_length {
            // One line: its value, read on the way; several: all of them, which must agree.
            let length = if lengths == 1 {
                first
            } else {
                content_length(&headers)
            };
            match length {
                Some(0) => Framing::Done,
                Some(n) => Framing::Length(n),
                None => return Err(Failed::Malformed("invalid or differing Content-Length")),
            }
        } else {
            keep_alive = false;
            Framing::Eof
        };
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
            response.extensions_mut().insert(reason);
        }
        Ok(Parsed::Final(Head {
            response,
            framing,
            keep_alive,
        }))
    }
}

/// Writes `req`'s head into `out`: request line in the target's origin form, fields, empty line.
fn encode(out: &mut Vec<u8>, req: &http::Request<Body>) {
    out.clear();
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(req.method().as_str().len() + target.len() + 13 + fields + 2);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        // No body, so no framing of one (hyper's client drops it too).
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a comma-separated field value lists `token` (case-insensitively).
pub(crate) fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether every comma-separated element of `value` is one of `tokens` (case-insensitively), empty
/// elements aside.
fn only_tokens(value: &HeaderValue, tokens: &[&str]) -> bool {
    value.as_bytes().split(|&b| b == b',').all(|t| {
        let t = t.trim_ascii();
        t.is_empty() || tokens.iter().any(|k| t.eq_ignore_ascii_case(k.as_bytes()))
    })
}

/// Whether the last transfer coding is `chunked` (RFC 9112 §6.3).
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .is_some_and(ends_chunked)
}

/// Whether the last coding a `Transfer-Encoding` line lists is `chunked`.
pub(crate) fn ends_chunked(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The body length `Content-Length` says: every value (lines, and comma-separated lists in them)
/// must be the same number (RFC 9110 §8.6); `None` if one is not a number or they differ.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    agreed_length(
        headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

/// The length `Content-Length` lines (`values`) agree on: every comma-separated number of every
/// line (`5, 5`) the same; `None` if one is not a number, two differ, or there is none.
fn agreed_length<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<u64> {
    let mut length = None;
    for part in values.into_iter().flat_map(|v| v.split(|&b| b == b',')) {
        let n = length_digits(part.trim_ascii())?;
        match length {
            Some(l) if l != n => return None,
            _ => length = Some(n),
        }
    }
    length
}

/// One `Content-Length` number: 1 to 19 digits, nothing else.
pub(crate) fn length_digits(part: &[u8]) -> Option<u64> {
    if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// What to do with a response once its head is in: its body, and whether the connection can be
/// pooled at once (the body came whole with the head, or there is none).
pub(crate) enum Answer {
    /// The body is complete: the connection may go back to the pool now, if `reusable`.
    Whole { body: Body, reusable: bool },
    /// The body is still coming: read by a [`Streamed`] body, which holds the connection.
    Streaming(Rest),
}

/// How a still-coming body is framed, and whether its connection may be kept after it.
pub(crate) struct Rest {
    framing: Framing,
    keep_alive: bool,
}

impl Head {
    /// What the body is: taken whole from the read buffer if it is all there.
    pub(crate) fn answer(&self, conn: &mut Conn) -> Answer {
        match self.framing {
            Framing::Done => Answer::Whole {
                body: Body::empty(),
                reusable: self.keep_alive && conn.read.is_empty(),
            },
            Framing::Length(n) if conn.read.len() as u64 >= n => {
                let body = Body::full(conn.read.split_to(n as usize).freeze());
                Answer::Whole {
                    body,
                    reusable: self.keep_alive && conn.read.is_empty(),
                }
            }
            framing => Answer::Streaming(Rest {
                framing,
                keep_alive: self.keep_alive,
            }),
        }
    }
}

/// Gives a connection back when its body is done: what [`Streamed`] calls at the body's end.
pub(crate) trait Release: Send + Sync + 'static {
    /// `conn` finished a response cleanly and may take another.
    fn release(&self, conn: Conn);
}

pin_project_lite::pin_project! {
    /// `read_timeout` on a response body, shared by [`Streamed`] and hyper's bodies in the pool:
    /// a pause between two reads longer than it fails the body. The timer is re-armed only when it
    /// fires (from the time of the last read), not at every read.
    pub(crate) struct ReadTimeout {
        timeout: Option<Duration>,
        last_read: tokio::time::Instant,
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl ReadTimeout {
    /// A timer for `timeout` (none: never fires).
    pub(crate) fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            last_read: tokio::time::Instant::now(),
            // Armed only if `timeout` is set (polled only then).
            sleep: tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600))),
        }
    }

    /// The body made progress.
    pub(crate) fn read(self: Pin<&mut Self>) {
        let this = self.project();
        if this.timeout.is_some() {
            *this.last_read = tokio::time::Instant::now();
        }
    }

    /// At a `Pending` read: the error to fail the body with if it paused longer than the timeout
    /// (the timer is then disarmed).
    pub(crate) fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<BoxError> {
        let mut this = self.project();
        let timeout = (*this.timeout)?;
        while this.sleep.as_mut().poll(cx).is_ready() {
            let deadline = *this.last_read + timeout;
            if tokio::time::Instant::now() >= deadline {
                *this.timeout = None;
                let err = GatewayError::new(GatewayErrorKind::UpstreamTimeout)
                    .with_detail("response body paused longer than read_timeout");
                return Some(Box::new(err));
            }
            this.sleep.as_mut().reset(deadline);
        }
        None
    }
}

pin_project_lite::pin_project! {
    /// A response body still coming on its connection: frames as they are read, the connection
    /// handed back ([`Release`]) once the body was read to its end with nothing after it, dropped
    /// (closed) otherwise. With `read_timeout`, a pause between two reads longer than it fails the
    /// body; the timer is re-armed only when it fires, from the time of the last read.
    pub(crate) struct Streamed<R> {
        conn: Option<Conn>,
        framing: Framing,
        keep_alive: bool,
        pool: R,
        #[pin]
        read_timeout: ReadTimeout,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        // An error found while data read with it may not have left yet: returned at the next poll
        // (see `poll_frame`).
        failed: Option<BoxError>,
    }
}

impl<R: Release> Streamed<R> {
    /// The body of a response whose head came on `conn`.
    pub(crate) fn new(
        conn: Conn,
        rest: Rest,
        pool: R,
        read_timeout: Option<Duration>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            conn: Some(conn),
            framing: rest.framing,
            keep_alive: rest.keep_alive,
            pool,
            read_timeout: ReadTimeout::new(read_timeout),
            permit,
            failed: None,
        }
    }
}

/// A body error: the connection broke, or its framing did.
fn body_error(kind: std::io::ErrorKind, why: &'static str) -> BoxError {
    Box::new(std::io::Error::new(kind, why))
}

/// What the decoder made of the buffered bytes.
enum Decoded {
    Frame(Frame<Bytes>),
    /// More bytes are needed.
    More,
    /// The body ended.
    End,
}

/// Takes the next frame of a body framed by `framing` out of `buf`, advancing `framing`.
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Decoded, BoxError> {
    loop {
        match framing {
            Framing::Done => return Ok(Decoded::End),
            Framing::Length(left) => {
                let (decoded, left) = take(*left, buf);
                *framing = if left == 0 {
                    Framing::Done
                } else {
                    Framing::Length(left)
                };
                return Ok(decoded);
            }
            Framing::Eof => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                return Ok(Decoded::Frame(Frame::data(buf.split().freeze())));
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(body_error(
                            std::io::ErrorKind::InvalidData,
                            "chunk-size line too long",
                        ));
                    }
                    return Ok(Decoded::More);
                };
                let size = chunk_size(&buf[..=end]).ok_or_else(|| {
                    body_error(std::io::ErrorKind::InvalidData, "invalid chunk-size line")
                })?;
                let _ = buf.split_to(end + 1);
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::Data(left)) => {
                let (decoded, left) = take(*left, buf);
                *framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                return Ok(decoded);
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(body_error(
                        std::io::ErrorKind::InvalidData,
                        "chunk data not followed by CRLF",
                    ));
                }
                let _ = buf.split_to(2);
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers) => {
                let mut fields = [httparse::EMPTY_HEADER; 64];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::new();
                        for field in fields.iter() {
                            let (Ok(name), Ok(value)) = (
                                HeaderName::from_bytes(field.name.as_bytes()),
                                HeaderValue::from_bytes(field.value),
                            ) else {
                                return Err(body_error(
                                    std::io::ErrorKind::InvalidData,
                                    "invalid trailer field",
                                ));
                            };
                            trailers.append(name, value);
                        }
                        let _ = buf.split_to(len);
                        *framing = Framing::Done;
                        if !trailers.is_empty() {
                            return Ok(Decoded::Frame(Frame::trailers(trailers)));
                        }
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => {
                        return Ok(Decoded::More)
                    }
                    _ => {
                        return Err(body_error(
                            std::io::ErrorKind::InvalidData,
                            "invalid or too large trailer section",
                        ))
                    }
                }
            }
        }
    }
}

/// Takes up to `left` bytes of data out of `buf` as a frame (`More` if `buf` is empty), and what
/// is left to take after it.
fn take(left: u64, buf: &mut BytesMut) -> (Decoded, u64) {
    if buf.is_empty() {
        return (Decoded::More, left);
    }
    let n = left.min(buf.len() as u64);
    let data = buf.split_to(n as usize).freeze();
    (Decoded::Frame(Frame::data(data)), left - n)
}

/// The size a chunk-size line (ending in CRLF) gives: hexadecimal digits, then optionally
/// whitespace and `;` extensions (skipped; RFC 9112 §7.1.1). `None` if it is not one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let size = line[..digits].iter().fold(0u64, |n, &d| {
        n << 4 | u64::from(char::from(d).to_digit(16).unwrap_or(0))
    });
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    // Extensions: no control characters but tab.
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return None;
    }
    Some(size)
}

impl<R: Release> http_body::Body for Streamed<R> {
    type Data = Bytes;
    type Error = BoxError;

    /// A body that breaks (cut short, framing broken, a read failed) fails at its next poll after
    /// the one that found it out: the server writes out what it has at a `Pending`, so the data
    /// that came before the break (often in the same read) reaches the client before the
    /// connection is aborted, as it would through hyper's client.
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(err) = self.as_mut().project().failed.take() {
            return Poll::Ready(Some(Err(err)));
        }
        match self.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(err))) => {
                *self.project().failed = Some(err);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl<R: Release> Streamed<R> {
    /// The next frame, or the body's end or error.
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match decode(this.framing, &mut conn.read) {
                Err(err) => {
                    *this.conn = None;
                    return Poll::Ready(Some(Err(err)));
                }
                Ok(Decoded::End) => {
                    finish(this.conn, *this.keep_alive, this.pool);
                    this.permit.take();
                    return Poll::Ready(None);
                }
                Ok(Decoded::Frame(frame)) => {
                    if *this.framing == Framing::Done {
                        finish(this.conn, *this.keep_alive, this.pool);
                        this.permit.take();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Decoded::More) => {}
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    *this.conn = None;
                    if *this.framing == Framing::Eof {
                        *this.framing = Framing::Done;
                        this.permit.take();
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(body_error(
                        std::io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection before the body's end",
                    ))));
                }
                Poll::Ready(Ok(_)) => this.read_timeout.as_mut().read(),
                Poll::Ready(Err(err)) => {
                    *this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(err))));
                }
                Poll::Pending => {
                    if let Some(err) = this.read_timeout.as_mut().poll_expired(cx) {
                        *this.conn = None;
                        this.permit.take();
                        return Poll::Ready(Some(Err(err)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Gives the connection back at a body's clean end, if it may take another request.
fn finish<R: Release>(conn: &mut Option<Conn>, keep_alive: bool, pool: &R) {
    if let Some(conn) = conn.take() {
        if keep_alive && conn.read.is_empty() {
            pool.release(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_agrees_with_slice_equality_at_every_length_and_position() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..base.len() {
            let a = &base[..n];
            assert!(same_bytes(a, &base[..n]), "{n}");
            for at in 0..n {
                let mut b = a.to_vec();
                b[at] ^= 0x20;
                assert!(!same_bytes(a, &b), "{n} {at}");
            }
            assert!(!same_bytes(a, &base[..n + 1]));
        }
    }

    #[test]
    fn a_kept_name_is_the_name_sent_whatever_came_before_it() {
        // A fresh thread: its own table. Names of every length kept, in both cases, more of them
        // than the table has slots (so that some share one), asked for again in another order.
        std::thread::spawn(|| {
            let mut sent: Vec<Vec<u8>> = [
                &b"Host"[..],
                b"host",
                b"HOST",
                b"Date",
                b"X-Custom",
                b"content-length",
                b"a",
                b"x-a",
                b"x-abcdefg",
                b"x-abcdefgh",
            ]
            .iter()
            .map(|s| s.to_vec())
            .collect();
            sent.extend((0..KNOWN_SLOTS * 2).map(|i| format!("x-field-{i}").into_bytes()));
            sent.push(vec![b'x'; KNOWN_LEN]);
            sent.push(vec![b'y'; KNOWN_LEN + 1]);
            for round in 0..3 {
                let order: Box<dyn Iterator<Item = &Vec<u8>>> = if round == 1 {
                    Box::new(sent.iter().rev())
                } else {
                    Box::new(sent.iter())
                };
                for name in order {
                    let want = HeaderName::from_bytes(name).unwrap();
                    assert_eq!(header_name(name).unwrap(), want, "{round}");
                }
            }
            // A name that is not one is refused, and not kept.
            assert!(header_name(b"bad name").is_err());
            assert!(header_name(b"bad name").is_err());
            assert!(header_name(b"").is_err());
        })
        .join()
        .unwrap();
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in fields {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn only_tokens_admits_lists_of_the_given_tokens_alone() {
        let only =
            |v: &str| only_tokens(&HeaderValue::from_str(v).unwrap(), &["keep-alive", "close"]);
        assert!(only("keep-alive"));
        assert!(only("Close"));
        assert!(only(" close , keep-alive,"));
        assert!(!only("keep-alive, x-secret"));
        assert!(!only("upgrade"));
    }

    #[test]
    fn content_length_takes_equal_values_and_refuses_others() {
        assert_eq!(
            content_length(&headers(&[("content-length", "42")])),
            Some(42)
        );
        assert_eq!(
            content_length(&headers(&[
                ("content-length", "5, 5"),
                ("content-length", "5")
            ])),
            Some(5)
        );
        assert_eq!(
            content_length(&headers(&[("content-length", "5, 6")])),
            None
        );
        assert_eq!(content_length(&headers(&[("content-length", "+5")])), None);
        assert_eq!(content_length(&headers(&[("content-length", "")])), None);
        assert_eq!(
            content_length(&headers(&[("content-length", "99999999999999999999")])),
            None
        );
    }

    #[test]
    fn chunked_must_be_the_last_coding() {
        assert!(is_chunked(&headers(&[(
            "transfer-encoding",
            "gzip, chunked"
        )])));
        assert!(is_chunked(&headers(&[("transfer-encoding", "Chunked")])));
        assert!(!is_chunked(&headers(&[(
            "transfer-encoding",
            "chunked, gzip"
        )])));
        assert!(is_chunked(&headers(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked")
        ])));
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r\n"), Some(26));
        assert_eq!(chunk_size(b"A;name=value\r\n"), Some(10));
        assert_eq!(chunk_size(b"5 ; ext\r\n"), Some(5));
        assert_eq!(chunk_size(b"0\r\n"), Some(0));
        assert_eq!(chunk_size(b"\r\n"), None);
        assert_eq!(chunk_size(b"5\n"), None);
        assert_eq!(chunk_size(b"5x\r\n"), None);
        assert_eq!(chunk_size(b"-5\r\n"), None);
        assert_eq!(chunk_size(b"12345678901234567\r\n"), None);
    }

    /// Decodes `wire` fed one byte at a time: the data and the trailers.
    fn decode_bytewise(
        mut framing: Framing,
        wire: &[u8],
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), BoxError> {
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        for &b in wire {
            buf.extend_from_slice(&[b]);
            loop {
                match decode(&mut framing, &mut buf)? {
                    Decoded::Frame(frame) => match frame.into_data() {
                        Ok(d) => data.extend_from_slice(&d),
                        Err(frame) => trailers = frame.into_trailers().ok(),
                    },
                    Decoded::More => break,
                    Decoded::End => return Ok((data, trailers, buf.is_empty())),
                }
            }
        }
        Ok((data, trailers, framing == Framing::Done))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n";
        let (data, trailers, done) = decode_bytewise(Framing::Chunked(Chunk::Size), wire).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-sum"], "42");
        assert!(done);

        let (data, trailers, done) =
            decode_bytewise(Framing::Chunked(Chunk::Size), b"3\r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!(
            (data.as_slice(), trailers.is_none(), done),
            (&b"abc"[..], true, true)
        );

        assert!(decode_bytewise(Framing::Chunked(Chunk::Size), b"3\r\nabcd\r\n").is_err());
        assert!(decode_bytewise(Framing::Chunked(Chunk::Size), b"zz\r\n").is_err());
    }

    #[test]
    fn a_sized_body_ends_at_its_length() {
        let mut framing = Framing::Length(3);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        match decode(&mut framing, &mut buf).unwrap() {
            Decoded::Frame(f) => assert_eq!(f.into_data().unwrap(), "abc"),
            _ => panic!("a frame"),
        }
        assert_eq!(framing, Framing::Done);
        assert_eq!(&buf[..], b"def");
    }

    /// A connection to a peer that has already written `bytes` (a blocking write on loopback: all
    /// of it waits in our socket).
    fn sent_to(bytes: &[u8]) -> (Conn, std::net::TcpStream) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.write_all(bytes).unwrap();
        (Conn::new(TcpStream::from_std(ours).unwrap()), peer)
    }

    #[tokio::test]
    async fn an_empty_buffer_reads_from_its_chunks_start_once_nothing_holds_it() {
        use std::future::poll_fn;
        let (mut conn, _peer) = sent_to(&[b'x'; 3 * READ_CHUNK]);
        let n = poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
        assert_eq!(n, READ_CHUNK);
        let start = conn.read.as_ptr();
        // A response of 3,000 bytes carved out and still held (its body being written), the rest
        // of the read consumed: the buffer is empty, with the chunk's tail as its room.
        let held = conn.read.split_to(3000).freeze();
        conn.read.clear();
        let tail = READ_CHUNK - 3000;
        assert_eq!(conn.read.capacity(), tail);
        // Held: the tail is read into, no more (no room reclaimed, no chunk allocated).
        let n = poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
        assert_eq!(n, tail);
        assert_eq!(conn.read.as_ptr(), start.wrapping_add(3000));
        conn.read.clear();
        // Nothing holds the chunk: the next read starts at its start, with all its room.
        drop(held);
        let n = poll_fn(|cx| conn.poll_fill(cx)).await.unwrap();
        assert_eq!(n, READ_CHUNK);
        assert_eq!(conn.read.as_ptr(), start);
    }

    #[test]
    fn request_heads_are_written_in_origin_form_without_transfer_encoding() {
        let req = http::Request::get("/a/b?c=d")
            .header("host", "example.com")
            .header("transfer-encoding", "chunked")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(Body::empty())
            .unwrap();
        let mut out = Vec::new();
        encode(&mut out, &req);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nhost: example.com\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
    }

    #[test]
    fn connection_tokens() {
        let v = HeaderValue::from_static("Keep-Alive, Upgrade");
        assert!(has_token(&v, "keep-alive"));
        assert!(!has_token(&v, "close"));
    }
}
