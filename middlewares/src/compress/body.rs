//! The compressed body: encodes as it streams, flushing whenever the source has nothing more ready.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

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
    pub(super) fn new(inner: Body, level: u32, length: u64) -> Self {
        Self {
            inner,
            level,
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
        let out = gzip_whole(self.level, input);
        self.first = None;
        self.joined = Vec::new();
        out
    }
}

/// A thread's libdeflate compressors by level, and its output buffer.
struct Whole {
    compressors: Vec<(u32, libdeflater::Compressor)>,
    scratch: Vec<u8>,
}

thread_local! {
    /// A compressor's tables are hundreds of kilobytes: too much to allocate (and fault in) per
    /// response, so each thread keeps one per level it has used.
    static GZIP: std::cell::RefCell<Whole> = const {
        std::cell::RefCell::new(Whole { compressors: Vec::new(), scratch: Vec::new() })
    };
}

/// `input` as one gzip member, compressed by libdeflate at `level` (1 to 9).
pub(super) fn gzip_whole(level: u32, input: &[u8]) -> Result<Bytes, Error> {
    let level = level.clamp(1, 9);
    GZIP.with_borrow_mut(
        |Whole {
             compressors,
             scratch,
         }| {
            let index = match compressors.iter().position(|(l, _)| *l == level) {
                Some(i) => i,
                None => {
                    let lvl = libdeflater::CompressionLvl::new(level as i32)
                        .map_err(|e| Error::Gzip(format!("level {level}: {e:?}")))?;
                    compressors.push((level, libdeflater::Compressor::new(lvl)));
                    compressors.len() - 1
                }
            };
            let compressor = &mut compressors[index].1;
            let bound = compressor.gzip_compress_bound(input.len());
            if scratch.len() < bound {
                scratch.resize(bound, 0);
            }
            let n = compressor
                .gzip_compress(input, &mut scratch[..bound])
                .map_err(|e| Error::Gzip(e.to_string()))?;
            let out = Bytes::copy_from_slice(&scratch[..n]);
            if scratch.len() > 2 * WHOLE_MAX as usize {
                // Only a body longer than its exact size hint gets here: do not keep its buffer.
                *scratch = Vec::new();
            }
            Ok(out)
        },
    )
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
