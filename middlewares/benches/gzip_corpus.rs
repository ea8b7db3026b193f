//! The compressors on a corpus of real files, offline: CPU per MB and output size of parapet's gzip
//! (and its Brotli and Zstandard) against nginx's gzip, per class and size bucket.
//!
//! ```sh
//! python3 benches/gzip-corpus/corpus.py /tmp/gzip-corpus          # the corpus (see its docs)
//! GZC_CORPUS=/tmp/gzip-corpus cargo bench -p parapet-middlewares --bench gzip_corpus
//! GZC_CORPUS=/tmp/gzip-corpus GZC_MODE=others cargo bench -p parapet-middlewares --bench gzip_corpus
//! ```
//!
//! `GZC_MODE`:
//!
//! - `gzip` (default): per class and bucket, nginx's gzip at level 6 (`nginx6`: the system's zlib,
//!   loaded with `dlopen`, driven as nginx's gzip filter drives it: raw deflate with `windowBits` and
//!   `memLevel` shrunk to the body's length from 15 and 8, a gzip header, zlib's `crc32`, level 6),
//!   libdeflate at levels 1 to 9 (`ld1`..`ld9`), its build with small hash tables that parapet
//!   uses under 4 KiB (`lds1`..`lds9`, through [`gzip_whole`]; meant for that size), parapet's
//!   streaming gzip (flate2 on zlib-rs) at levels 1 to 9 (`zrs1`..`zrs9`), zlib-rs on a whole body
//!   as parapet drives it (`zw1`..`zw9`: a reused compressor, nginx's window for the length), and
//!   parapet's whole-body gzip at each nginx-equivalent level (`parapet1`..`parapet9`:
//!   [`gzip_whole`], the mapping as shipped);
//! - `others`: parapet's Brotli (`br1`..`br9`) and Zstandard (`zstd1`..`zstd9`) encoders;
//! - `count`: one pass of `GZC_ONLY` (a config name, or `none`) over the files of `GZC_CLASS` (and
//!   `GZC_BUCKET`, if set) and nothing else, for an instruction count under callgrind
//!   (`benches/gzip-corpus/count.sh`).
//!
//! Timing: the calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so time the thread spends
//! descheduled by the machine's other work does not count. A pass compresses every file of a bucket
//! once; each measurement repeats passes for at least `GZC_MS` ms (default 40), and `GZC_TRIALS`
//! (default 5) trials run with the configs alternating, so that a slow moment hits all of them alike.
//! The table gives the minimum over trials (the least disturbed); the TSV (`GZC_OUT`) has min and
//! median. Every output is decompressed once and compared with its input.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it checks on a few generated inputs that
//! every config's output decompresses to its input, and measures nothing.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::io::Read;
use std::path::{Path, PathBuf};

use parapet_middlewares::compress::{
    encode_stream, gzip_backend, gzip_whole, Encoding, GzipBackend,
};

/// zlib's `z_stream` (zlib.h), as laid out on LP64.
#[repr(C)]
struct ZStream {
    next_in: *const u8,
    avail_in: c_uint,
    total_in: c_ulong,
    next_out: *mut u8,
    avail_out: c_uint,
    total_out: c_ulong,
    msg: *const c_char,
    state: *mut c_void,
    zalloc: *const c_void,
    zfree: *const c_void,
    opaque: *mut c_void,
    data_type: c_int,
    adler: c_ulong,
    reserved: c_ulong,
}

type DeflateInit2 = unsafe extern "C" fn(
    *mut ZStream,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    *const c_char,
    c_int,
) -> c_int;
type Deflate = unsafe extern "C" fn(*mut ZStream, c_int) -> c_int;
type DeflateEnd = unsafe extern "C" fn(*mut ZStream) -> c_int;
type DeflateBound = unsafe extern "C" fn(*mut ZStream, c_ulong) -> c_ulong;
type Crc32 = unsafe extern "C" fn(c_ulong, *const u8, c_uint) -> c_ulong;
type ZlibVersion = unsafe extern "C" fn() -> *const c_char;

/// The system's zlib, the one Debian's nginx links.
struct Zlib {
    init2: DeflateInit2,
    deflate: Deflate,
    end: DeflateEnd,
    bound: DeflateBound,
    crc32: Crc32,
    version: &'static CStr,
}

impl Zlib {
    fn open() -> Option<Zlib> {
        // SAFETY: dlopen and dlsym with NUL-terminated names; each symbol is cast to zlib's own
        // prototype for it (zlib.h), and the library is never closed.
        unsafe {
            let lib = libc::dlopen(c"libz.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if lib.is_null() {
                return None;
            }
            let sym = |name: &CStr| {
                let p = libc::dlsym(lib, name.as_ptr());
                (!p.is_null()).then_some(p)
            };
            let version: ZlibVersion = std::mem::transmute(sym(c"zlibVersion")?);
            Some(Zlib {
                init2: std::mem::transmute::<*mut c_void, DeflateInit2>(sym(c"deflateInit2_")?),
                deflate: std::mem::transmute::<*mut c_void, Deflate>(sym(c"deflate")?),
                end: std::mem::transmute::<*mut c_void, DeflateEnd>(sym(c"deflateEnd")?),
                bound: std::mem::transmute::<*mut c_void, DeflateBound>(sym(c"deflateBound")?),
                crc32: std::mem::transmute::<*mut c_void, Crc32>(sym(c"crc32")?),
                version: CStr::from_ptr(version()),
            })
        }
    }

    /// `input` gzipped as nginx's gzip filter does a body of known length (nginx 1.22,
    /// `ngx_http_gzip_filter_memory`): `gzip_window` 15 and `gzip_hash` 8 are lowered one step at a
    /// time while the length is under the window less 262 bytes; raw deflate, its own gzip header
    /// and trailer, `crc32` over the input.
    fn nginx_gzip(&self, level: c_int, input: &[u8], out: &mut Vec<u8>) -> usize {
        let (mut wbits, mut memlevel) = (15, 8);
        while !input.is_empty() && (input.len() as i64) < (1i64 << (wbits - 1)) - 262 {
            wbits -= 1;
            memlevel -= 1;
        }
        let memlevel = memlevel.max(1);
        // SAFETY: a zeroed z_stream (null zalloc/zfree: zlib's own malloc) initialised by
        // deflateInit2_ with this zlib's version string and struct size; in and out point into
        // live buffers of the lengths given; the stream is ended before returning.
        unsafe {
            let mut z: ZStream = std::mem::zeroed();
            let rc = (self.init2)(
                &mut z,
                level,
                8,
                -wbits,
                memlevel,
                0,
                self.version.as_ptr(),
                std::mem::size_of::<ZStream>() as c_int,
            );
            assert_eq!(rc, 0, "deflateInit2_");
            let bound = (self.bound)(&mut z, input.len() as c_ulong) as usize + 18;
            out.clear();
            out.reserve(bound);
            out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
            let crc = (self.crc32)(0, input.as_ptr(), input.len() as c_uint) as u32;
            z.next_in = input.as_ptr();
            z.avail_in = input.len() as c_uint;
            z.next_out = out.as_mut_ptr().add(10);
            z.avail_out = (bound - 18) as c_uint;
            let rc = (self.deflate)(&mut z, 4); // Z_FINISH
            assert_eq!(rc, 1, "deflate: Z_STREAM_END");
            let n = 10 + z.total_out as usize;
            out.set_len(n);
            (self.end)(&mut z);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(input.len() as u32).to_le_bytes());
            out.len()
        }
    }
}

/// One way of compressing a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Config {
    None,
    Nginx(u32),
    Libdeflate(u32),
    LibdeflateSmall(u32),
    ZlibRs(u32),
    ZlibWhole(u32),
    Parapet(u32),
    Brotli(u32),
    Zstd(u32),
}

impl Config {
    fn name(self) -> String {
        match self {
            Config::None => "none".into(),
            Config::Nginx(l) => format!("nginx{l}"),
            Config::Libdeflate(l) => format!("ld{l}"),
            Config::LibdeflateSmall(l) => format!("lds{l}"),
            Config::ZlibRs(l) => format!("zrs{l}"),
            Config::ZlibWhole(l) => format!("zw{l}"),
            Config::Parapet(l) => format!("parapet{l}"),
            Config::Brotli(l) => format!("br{l}"),
            Config::Zstd(l) => format!("zstd{l}"),
        }
    }

    fn parse(s: &str) -> Option<Config> {
        if s == "none" {
            return Some(Config::None);
        }
        let digits = s.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let level: u32 = digits.parse().ok()?;
        Some(match &s[..s.len() - digits.len()] {
            "nginx" => Config::Nginx(level),
            "ld" => Config::Libdeflate(level),
            "lds" => Config::LibdeflateSmall(level),
            "zrs" => Config::ZlibRs(level),
            "zw" => Config::ZlibWhole(level),
            "parapet" => Config::Parapet(level),
            "br" => Config::Brotli(level),
            "zstd" => Config::Zstd(level),
            _ => return None,
        })
    }
}

/// Reusable state: libdeflate compressors by level and an output buffer, as parapet keeps per thread.
struct Ctx {
    zlib: Option<Zlib>,
    libdeflate: BTreeMap<u32, libdeflater::Compressor>,
    out: Vec<u8>,
    /// The files at hand are JSON (served as `application/json`), for `parapetN`.
    json: bool,
}

impl Ctx {
    /// Compresses `input` with `config`; the output is left in `self.out`.
    fn run(&mut self, config: Config, input: &[u8]) -> usize {
        match config {
            Config::None => {
                self.out.clear();
                0
            }
            Config::Nginx(level) => {
                let zlib = self.zlib.as_ref().expect("the system's zlib (libz.so.1)");
                zlib.nginx_gzip(level as c_int, input, &mut self.out)
            }
            Config::Libdeflate(level) => {
                let c = self.libdeflate.entry(level).or_insert_with(|| {
                    libdeflater::Compressor::new(
                        libdeflater::CompressionLvl::new(level as i32).unwrap(),
                    )
                });
                let bound = c.gzip_compress_bound(input.len());
                self.out.resize(bound, 0);
                let n = c.gzip_compress(input, &mut self.out).unwrap();
                self.out.truncate(n);
                n
            }
            Config::ZlibRs(level) => {
                self.keep(encode_stream(Encoding::Gzip, level, input).unwrap())
            }
            Config::LibdeflateSmall(level) => self.keep(
                gzip_whole(GzipBackend::LibdeflateSmall(level), input)
                    .unwrap()
                    .to_vec(),
            ),
            Config::ZlibWhole(level) => self.keep(
                gzip_whole(GzipBackend::ZlibRs(level), input)
                    .unwrap()
                    .to_vec(),
            ),
            Config::Parapet(level) => {
                let backend = gzip_backend(level, input.len(), self.json);
                self.keep(gzip_whole(backend, input).unwrap().to_vec())
            }
            Config::Brotli(level) => self.keep(encode_stream(Encoding::Br, level, input).unwrap()),
            Config::Zstd(level) => self.keep(encode_stream(Encoding::Zstd, level, input).unwrap()),
        }
    }

    fn keep(&mut self, out: Vec<u8>) -> usize {
        self.out = out;
        self.out.len()
    }
}

/// Decompresses `out` as `config` produced it.
fn decode(config: Config, out: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    match config {
        Config::None => {}
        Config::Brotli(_) => {
            brotli::Decompressor::new(out, 4096)
                .read_to_end(&mut plain)
                .unwrap();
        }
        Config::Zstd(_) => plain = zstd::decode_all(out).unwrap(),
        _ => {
            flate2::read::GzDecoder::new(out)
                .read_to_end(&mut plain)
                .unwrap();
        }
    }
    plain
}

/// The calling thread's CPU time, in nanoseconds.
fn thread_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The corpus: `(class, bucket)` to its files, from `manifest.tsv`.
fn load(dir: &Path) -> BTreeMap<(String, String), Vec<Vec<u8>>> {
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).unwrap_or_else(|e| {
        panic!(
            "{}/manifest.tsv: {e} (make it with corpus.py)",
            dir.display()
        )
    });
    let mut corpus: BTreeMap<(String, String), Vec<Vec<u8>>> = BTreeMap::new();
    for line in manifest.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let data = std::fs::read(dir.join(f[2])).unwrap();
        corpus
            .entry((f[0].to_owned(), f[1].to_owned()))
            .or_default()
            .push(data);
    }
    corpus
}

fn configs(mode: &str) -> Vec<Config> {
    if let Ok(only) = std::env::var("GZC_ONLY") {
        return only
            .split(',')
            .map(|s| Config::parse(s).expect("config"))
            .collect();
    }
    match mode {
        "others" => (1..=9)
            .map(Config::Brotli)
            .chain((1..=9).map(Config::Zstd))
            .collect(),
        _ => std::iter::once(Config::Nginx(6))
            .chain((1..=9).map(Config::Libdeflate))
            .chain((1..=9).map(Config::LibdeflateSmall))
            .chain((1..=9).map(Config::ZlibRs))
            .chain((1..=9).map(Config::ZlibWhole))
            .chain((1..=9).map(Config::Parapet))
            .collect(),
    }
}

fn smoke() {
    let mut ctx = Ctx {
        zlib: Zlib::open(),
        libdeflate: BTreeMap::new(),
        out: Vec::new(),
        json: false,
    };
    let text: Vec<u8> = (0..3000)
        .flat_map(|i| format!("{{\"id\":{i},\"name\":\"item-{i}\"}},").into_bytes())
        .collect();
    let inputs: [&[u8]; 4] = [b"", b"a", &text[..1500], &text];
    let mut all = configs("gzip");
    all.extend(configs("others"));
    for config in all {
        if matches!(config, Config::Nginx(_)) && ctx.zlib.is_none() {
            continue;
        }
        for (input, json) in inputs.iter().flat_map(|i| [(*i, false), (*i, true)]) {
            ctx.json = json;
            ctx.run(config, input);
            assert_eq!(decode(config, &ctx.out), input, "{}", config.name());
        }
    }
    println!("gzip_corpus: every config round-trips (run with --bench and GZC_CORPUS to measure)");
}

fn count(ctx: &mut Ctx, corpus: &BTreeMap<(String, String), Vec<Vec<u8>>>) {
    let config = Config::parse(&env("GZC_ONLY", "none")).expect("GZC_ONLY: a config");
    let class = env("GZC_CLASS", "");
    let bucket = env("GZC_BUCKET", "");
    let mut bytes = 0;
    for ((c, b), files) in corpus {
        ctx.json = c.starts_with("json");
        if (class.is_empty() || *c == class) && (bucket.is_empty() || *b == bucket) {
            for f in files {
                bytes += ctx.run(config, f);
            }
        }
    }
    println!("{} {class} {bytes}", config.name());
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        smoke();
        return;
    }
    let Ok(dir) = std::env::var("GZC_CORPUS") else {
        eprintln!("gzip_corpus: set GZC_CORPUS to a corpus made by benches/gzip-corpus/corpus.py");
        return;
    };
    let corpus = load(&PathBuf::from(dir));
    let mode = env("GZC_MODE", "gzip");
    let mut ctx = Ctx {
        zlib: Zlib::open(),
        libdeflate: BTreeMap::new(),
        out: Vec::new(),
        json: false,
    };
    if mode == "count" {
        count(&mut ctx, &corpus);
        return;
    }
    let min_ns: u64 = env("GZC_MS", "40").parse::<u64>().unwrap() * 1_000_000;
    let trials: usize = env("GZC_TRIALS", "5").parse().unwrap();
    let classes: Option<Vec<String>> = std::env::var("GZC_CLASSES")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let configs = configs(&mode);
    let mut tsv = String::from("class\tbucket\tconfig\tin_bytes\tout_bytes\tns_min\tns_median\n");
    if let Some(zlib) = &ctx.zlib {
        eprintln!("system zlib {}", zlib.version.to_string_lossy());
    }
    for ((class, bucket), files) in &corpus {
        if classes.as_ref().is_some_and(|c| !c.contains(class)) {
            continue;
        }
        ctx.json = class.starts_with("json");
        let in_bytes: usize = files.iter().map(Vec::len).sum();
        // Sizes, a check of every output, and the passes each measurement needs.
        let mut plan = Vec::new();
        for &config in &configs {
            let start = thread_ns();
            let mut out_bytes = 0;
            for f in files {
                out_bytes += ctx.run(config, f);
                assert_eq!(&decode(config, &ctx.out), f, "{} {class}", config.name());
            }
            let one = (thread_ns() - start).max(1);
            let passes = (min_ns / one).clamp(1, 100_000) as usize;
            plan.push((config, out_bytes, passes, Vec::new()));
        }
        for _ in 0..trials {
            for (config, _, passes, times) in plan.iter_mut() {
                let start = thread_ns();
                for _ in 0..*passes {
                    for f in files {
                        ctx.run(*config, f);
                    }
                }
                times.push((thread_ns() - start) / *passes as u64);
            }
        }
        let mut line = format!("{class:9} {bucket:8} {:>8}", in_bytes / 1024);
        let base = plan[0].clone();
        let base_min = *base.3.iter().min().unwrap() as f64;
        for (config, out_bytes, _, times) in &mut plan {
            times.sort_unstable();
            let (min, median) = (times[0], times[times.len() / 2]);
            tsv += &format!(
                "{class}\t{bucket}\t{}\t{in_bytes}\t{out_bytes}\t{min}\t{median}\n",
                config.name()
            );
            line += &format!(
                " | {} {:.2} {:.3}",
                config.name(),
                min as f64 / base_min,
                *out_bytes as f64 / base.1 as f64
            );
        }
        eprintln!("{line}");
    }
    match std::env::var("GZC_OUT") {
        Ok(path) => std::fs::write(path, tsv).unwrap(),
        Err(_) => print!("{tsv}"),
    }
}
