//! The compressed body: encodes as it streams, flushing whenever the source has nothing more ready.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use super::small_deflate::SmallCompressor;
use super::Encoding;
use crate::{Body, BoxError, Error};

/// Output is handed on once this much has built up, even if the source keeps producing.
const CHUNK: usize = 32 * 1024;

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(encoding: Encoding, level: u32) -> io::Result<Encoder> {
        Ok(match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.clamp(1, 9)),
            )),
            // A 512 KiB window (lgwin 19), like nginx's brotli module: big windows cost memory per
            // response for little gain on dynamic content.
            Encoding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                level.min(11),
                19,
            ))),
            Encoding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(
                Vec::new(),
                level.clamp(1, 19) as i32,
            )?),
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
        .map_err(Error::Compress)
    }

    /// Emits everything written so far as decodable output (a sync flush).
    fn flush(&mut self) -> Result<(), Error> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Br(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
        .map_err(Error::Compress)
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Br(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.output()))
    }

    fn finish(self) -> Result<Vec<u8>, Error> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
        .map_err(Error::Compress)
    }
}

/// `input` compressed as a stream of `encoding` at `level`: written to parapet's streaming encoder
/// in one piece and finished, as a body of unknown length that arrives at once is.
pub fn encode_stream(encoding: Encoding, level: u32, input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut encoder = Encoder::new(encoding, level).map_err(Error::Compress)?;
    encoder.write(input)?;
    encoder.finish()
}

/// A body compressed on the fly.
pub(super) struct CompressBody {
    inner: Body,
    encoder: Option<Encoder>,
    /// Bytes went into the encoder since its last flush.
    unflushed: bool,
    trailers: Option<HeaderMap>,
}

impl CompressBody {
    pub(super) fn new(inner: Body, encoding: Encoding, level: u32) -> io::Result<Self> {
        Ok(Self {
            inner,
            encoder: Some(Encoder::new(encoding, level)?),
            unflushed: false,
            trailers: None,
        })
    }
}

fn data(bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Poll::Ready(Some(Ok(Frame::data(bytes))))
}

impl http_body::Body for CompressBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => {
                        encoder.write(&bytes)?;
                        this.unflushed = true;
                        if encoder.output().len() >= CHUNK {
                            return data(encoder.take());
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => {
                    let Some(encoder) = this.encoder.take() else {
                        continue;
                    };
                    let rest = encoder.finish()?;
                    if !rest.is_empty() {
                        return data(Bytes::from(rest));
                    }
                }
                Poll::Pending => {
                    // The source has nothing ready: send what it gave so far, so that a stream's
                    // event (SSE, a long poll's chunk) is never held back waiting for more.
                    if this.unflushed {
                        this.unflushed = false;
                        encoder.flush()?;
                        let out = encoder.take();
                        if !out.is_empty() {
                            return data(out);
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Bodies of known length up to this size are compressed whole (see [`WholeGzipBody`]).
pub(super) const WHOLE_MAX: u64 = 1024 * 1024;

/// A gzip body of known length, compressed in one pass once all of it has arrived.
///
/// libdeflate compresses a whole buffer about twice as fast as zlib's streaming deflate at the same
/// level, and smaller (it can choose block boundaries knowing all the input). A body of known length
/// is not a live stream, so holding it until its last byte (at most [`WHOLE_MAX`], on top of what
/// proxies buffer anyway) costs its reader nothing worth the CPU.
pub(super) struct WholeGzipBody {
    inner: Body,
    level: u32,
    /// The body is JSON (see [`gzip_backend`]).
    json: bool,
    /// The first chunk, kept as it is: most bodies arrive in one.
    first: Option<Bytes>,
    /// Everything, once a second chunk arrives.
    joined: Vec<u8>,
    /// The expected length, to size `joined` once.
    length: usize,
    done: bool,
    trailers: Option<HeaderMap>,
}

impl WholeGzipBody {
    pub(super) fn new(inner: Body, level: u32, json: bool, length: u64) -> Self {
        Self {
            inner,
            level,
            json,
            first: None,
            joined: Vec::new(),
            length: length.min(WHOLE_MAX) as usize,
            done: false,
            trailers: None,
        }
    }

    fn push(&mut self, bytes: Bytes) {
        if self.joined.is_empty() {
            match self.first.take() {
                None => {
                    self.first = Some(bytes);
                    return;
                }
                Some(first) => {
                    self.joined
                        .reserve(self.length.max(first.len() + bytes.len()));
                    self.joined.extend_from_slice(&first);
                }
            }
        }
        self.joined.extend_from_slice(&bytes);
    }

    fn compress(&mut self) -> Result<Bytes, Error> {
        let input = match &self.first {
            Some(first) => &first[..],
            None => &self.joined[..],
        };
        let out = gzip_whole(gzip_backend(self.level, input.len(), self.json), input);
        self.first = None;
        self.joined = Vec::new();
        out
    }
}

/// The library and its own level that gzip a whole body: [`gzip_backend`] chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GzipBackend {
    /// libdeflate at this level (1 to 12).
    Libdeflate(u32),
    /// libdeflate at this level (1 to 12), built with hash tables for inputs below
    /// [`SMALL_TABLES_BELOW`] (`middlewares/libdeflate/README.md`).
    LibdeflateSmall(u32),
    /// zlib-rs (through flate2) at this level (1 to 9), with nginx's window for the body's length.
    ZlibRs(u32),
}

/// The smallest JSON body gzipped by zlib-rs rather than libdeflate at level 6.
pub const JSON_ZLIB_MIN: usize = 4 * 1024;

/// Level 6 bodies (but JSON) shorter than this are gzipped by libdeflate at its level 4 (see
/// [`gzip_backend`]).
pub const GZIP_LD4_BELOW: usize = 4 * 1024;

/// Level 6 bodies (but JSON) from [`GZIP_LD4_BELOW`] up to this are gzipped by libdeflate at its
/// level 5 (see [`gzip_backend`]).
pub const GZIP_LD5_BELOW: usize = 16 * 1024;

/// Bodies shorter than this are gzipped by libdeflate's build with small hash tables
/// ([`GzipBackend::LibdeflateSmall`]; see [`gzip_backend`]).
pub const SMALL_TABLES_BELOW: usize = 16 * 1024;

/// How parapet gzips a whole body of `len` bytes at nginx-equivalent `level` (1 to 9); `json` when
/// its content type is JSON (`application/json`, `*/*+json`, `application/x-ndjson`).
///
/// Chosen from measurement against nginx's own gzip (the system's zlib at the same level) on a corpus
/// of real files, by class and size (`benches/gzip-corpus`, `middlewares/benches/gzip_corpus.rs`): at
/// level 6, libdeflate's level 6 costs 0.35 to 0.55 of nginx's CPU with output within 1 % of nginx's
/// on HTML, CSS, JavaScript, SVG, text and non-repetitive JSON from 4 KiB to 1 MiB, and more below
/// (see small bodies, below).
/// On repetitive JSON (API answers: records of one shape) libdeflate's lazy matcher searches its
/// chains deep for matches that zlib's `good_length`/`max_lazy` cut short: 0.6 to 0.9 of nginx's CPU
/// (for output 5 to 15 % smaller), too close to nginx once the request's other work is added; zlib-rs
/// at its level 5 costs 0.4 to 0.55 there, with output no larger than nginx's. Its fixed start-up
/// cost makes it lose below 4 KiB, where libdeflate 6 stays. libdeflate's level 5, as cheap, comes out
/// 2 to 6 % larger than nginx on that JSON and on large HTML.
///
/// Small bodies are the other exception. libdeflate's matcher sets up its tables for a 32 KiB
/// window whatever the input (nginx shrinks zlib's window and hash to the body): a fixed cost that
/// a 200-byte input pays almost whole (level 6: 8.3 µs a call for 200 bytes, 18 µs for 2.4 KB of
/// CSS; Debian's libdeflate called from Python), so that below 4 KiB its level 6 costs 0.76 to 0.91
/// of nginx's CPU
/// (`middlewares/benches/gzip_corpus.rs`, 7 trials, 2026-12-01), against 0.32 to 0.47 from 4 to
/// 16 KiB. Its levels 2 to 4 cost the same as each other there, 4 to 9 points less than 6 (0.71 to
/// 0.82), for output 0.5 to 1 % larger than nginx's (a few bytes, the same packets): level 4 below
/// 4 KiB. Level 1, another matcher, costs 0.47 to 0.59 but comes out 1.7 to 2 % larger. JSON keeps
/// level 6 below 4 KiB: repetitive JSON comes out 2 to 4 % larger at 4 and 5.
///
/// Below 16 KiB, libdeflate is the build of it with small hash tables, whose reset writes 24 KiB
/// rather than 192 KiB. Below 4 KiB: the same output as the stock build on every file of the
/// corpus, for 0.53 to 0.68 of nginx's CPU at level 6's mapping rather than 0.66 to 0.82
/// (`middlewares/benches/gzip_corpus.rs`, 7 and 9 trials, 2026-12-01). From 4 to 16 KiB: output
/// the same to a few bytes (0.999 to 1.000 of the stock build's per class), and offline, where a
/// loop keeps either build's tables in the caches, the same CPU (-1 to +5 %); but served, between
/// requests that each go through other memory, the stock build's 192 KiB reset is written to
/// memory gone cold: 3,650 data lines per request missing a 256 KiB cache for a 6 KiB CSS file
/// against 450 with the small build (nginx 183 to 233; `benches/counts.sh FILES=`), with 3 %
/// fewer instructions. End to end the corpus's files under 16 KiB cost 0.95 and 1.02 of the CPU
/// they cost with the stock build above 4 KiB in two runs (`benches/gzip-corpus/run.sh`, 7 rounds,
/// 2026-12-02): this machine's 1 MiB L2 holds most of the reset. Above 16 KiB the small tables
/// are small for the input, and offline they cost 7 to 10 % more.
///
/// From 4 to 16 KiB (JSON aside, which zlib-rs takes), libdeflate's level 5 rather than 6: offline,
/// in one run of 9 trials (2026-12-02), 0.77 to 0.97 of level 6's CPU per class (median of
/// trials), for output 0.2 to 0.7 % larger, still 0.984 to 1.006 of nginx's. Above 16 KiB its
/// output comes out up to 1.3 % larger than nginx's on HTML and JavaScript, too near the 2 % that
/// parapet allows itself, and level 6 stays. End to end, the corpus's files under 16 KiB cost 0.94
/// and 0.99 of what they cost at level 6 in two runs of 7 rounds (`benches/gzip-corpus/run.sh`,
/// 2026-12-02): within the noise of a request whose compression is a quarter of its CPU.
///
/// The other levels map to libdeflate's level of the same number, smaller than zlib's and cheaper,
/// not measured class by class.
pub fn gzip_backend(level: u32, len: usize, json: bool) -> GzipBackend {
    let level = level.clamp(1, 9);
    if level == 6 && json && len >= JSON_ZLIB_MIN {
        return GzipBackend::ZlibRs(5);
    }
    // libdeflate: first its level, then which build.
    let level = match level {
        6 if !json && len < GZIP_LD4_BELOW => 4,
        6 if !json && len < GZIP_LD5_BELOW => 5,
        _ => level,
    };
    if len < SMALL_TABLES_BELOW {
        GzipBackend::LibdeflateSmall(level)
    } else {
        GzipBackend::Libdeflate(level)
    }
}

/// A thread's compressors, by backend and level (and window, for zlib-rs), and its output buffer.
struct Whole {
    libdeflate: Vec<(u32, libdeflater::Compressor)>,
    small: Vec<(u32, SmallCompressor)>,
    zlib: Vec<(u32, u8, flate2::Compress)>,
    scratch: Vec<u8>,
}

thread_local! {
    /// A compressor's tables are hundreds of kilobytes: too much to allocate (and fault in) per
    /// response, so each thread keeps one per level it has used.
    static GZIP: std::cell::RefCell<Whole> = const {
        std::cell::RefCell::new(Whole {
            libdeflate: Vec::new(),
            small: Vec::new(),
            zlib: Vec::new(),
            scratch: Vec::new(),
        })
    };
}

/// zlib's window for `len` bytes, as nginx's gzip filter sizes it for a body of known length: one
/// bit less while the body fits in half the window less zlib's 262-byte lookahead.
pub(super) fn window_bits(len: usize) -> u8 {
    let mut bits = 15u8;
    while bits > 9 && len < (1usize << (bits - 1)) - 262 {
        bits -= 1;
    }
    bits
}

/// `input` as one gzip member, compressed by `backend`.
pub fn gzip_whole(backend: GzipBackend, input: &[u8]) -> Result<Bytes, Error> {
    GZIP.with_borrow_mut(|whole| {
        let out = match backend {
            GzipBackend::Libdeflate(level) => libdeflate_gzip(whole, level.clamp(1, 12), input)?,
            GzipBackend::LibdeflateSmall(level) => small_gzip(whole, level.clamp(1, 12), input)?,
            GzipBackend::ZlibRs(level) => zlib_gzip(whole, level.clamp(1, 9), input)?,
        };
        if whole.scratch.len() > 2 * WHOLE_MAX as usize {
            // Only a body longer than its exact size hint gets here: do not keep its buffer.
            whole.scratch = Vec::new();
        }
        Ok(out)
    })
}

fn libdeflate_gzip(whole: &mut Whole, level: u32, input: &[u8]) -> Result<Bytes, Error> {
    let compressor = kept(&mut whole.libdeflate, level, || {
        let lvl = libdeflater::CompressionLvl::new(level as i32)
            .map_err(|e| Error::Gzip(format!("level {level}: {e:?}")))?;
        Ok(libdeflater::Compressor::new(lvl))
    })?;
    let out = room(
        &mut whole.scratch,
        compressor.gzip_compress_bound(input.len()),
    );
    let n = compressor
        .gzip_compress(input, out)
        .map_err(|e| Error::Gzip(e.to_string()))?;
    Ok(Bytes::copy_from_slice(&out[..n]))
}

fn small_gzip(whole: &mut Whole, level: u32, input: &[u8]) -> Result<Bytes, Error> {
    let compressor = kept(&mut whole.small, level, || {
        SmallCompressor::new(level)
            .ok_or_else(|| Error::Gzip(format!("level {level}: out of memory")))
    })?;
    let out = room(&mut whole.scratch, compressor.gzip_bound(input.len()));
    let n = compressor
        .gzip(input, out)
        .ok_or_else(|| Error::Gzip("output larger than its bound".into()))?;
    Ok(Bytes::copy_from_slice(&out[..n]))
}

/// The thread's compressor at `level` in `kept`, made by `make` the first time.
fn kept<C>(
    kept: &mut Vec<(u32, C)>,
    level: u32,
    make: impl FnOnce() -> Result<C, Error>,
) -> Result<&mut C, Error> {
    let index = match kept.iter().position(|(l, _)| *l == level) {
        Some(i) => i,
        None => {
            kept.push((level, make()?));
            kept.len() - 1
        }
    };
    Ok(&mut kept[index].1)
}

/// The first `bound` bytes of the thread's output buffer, grown to them if need be.
fn room(scratch: &mut Vec<u8>, bound: usize) -> &mut [u8] {
    if scratch.len() < bound {
        scratch.resize(bound, 0);
    }
    &mut scratch[..bound]
}

fn zlib_gzip(whole: &mut Whole, level: u32, input: &[u8]) -> Result<Bytes, Error> {
    let bits = window_bits(input.len());
    let index = match whole
        .zlib
        .iter()
        .position(|(l, b, _)| *l == level && *b == bits)
    {
        Some(i) => {
            whole.zlib[i].2.reset();
            i
        }
        None => {
            let c = flate2::Compress::new_gzip(flate2::Compression::new(level), bits);
            whole.zlib.push((level, bits, c));
            whole.zlib.len() - 1
        }
    };
    let compressor = &mut whole.zlib[index].2;
    // zlib's deflateBound for these settings, with the gzip header and trailer, and some room.
    let mut bound = input.len() + (input.len() >> 12) + (input.len() >> 14) + 64;
    loop {
        let out = room(&mut whole.scratch, bound);
        let (done_in, done_out) = (
            compressor.total_in() as usize,
            compressor.total_out() as usize,
        );
        let status = compressor
            .compress(
                &input[done_in..],
                &mut out[done_out..],
                flate2::FlushCompress::Finish,
            )
            .map_err(|e| Error::Gzip(e.to_string()))?;
        if status == flate2::Status::StreamEnd {
            let n = compressor.total_out() as usize;
            return Ok(Bytes::copy_from_slice(&whole.scratch[..n]));
        }
        // Out of room (the bound above is zlib's own, so this is not expected): more.
        bound += bound / 2 + 1024;
    }
}

impl http_body::Body for WholeGzipBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        while !this.done {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => this.push(bytes),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers = Some(trailers);
                        }
                    }
                },
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => {
                    this.done = true;
                    return data(this.compress()?);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
