#!/usr/bin/env python3
"""Gathers the gzip corpus: real files from this machine, by class and size bucket.

  python3 benches/gzip-corpus/corpus.py DIR            # writes DIR/<class>/*.<ext> and DIR/manifest.tsv
  SEED=7 PER_BUCKET=6 python3 benches/gzip-corpus/corpus.py DIR
  python3 benches/gzip-corpus/corpus.py --cli DIR      # brotli and zstd CLIs on it: TSV on stdout

Classes (the extension gives the content type the origin serves):

  html       documentation HTML (/usr/share/doc/**/*.html and other shipped HTML)
  css        shipped stylesheets (Debian's libjs-* packages, Sphinx themes, Font Awesome, ...)
  js         shipped JavaScript (the same packages, node and npm's own, Python packages)
  svg        icons and images (/usr/share/icons, ...)
  text       plain text: licences, copyright files, Debian changelogs and man pages, decompressed
  json-api   generated: a repetitive API answer (a list of records of one shape, few distinct values)
  json-data  generated: non-repetitive data (random identifiers, coordinates, measurements, words)

Size buckets: 1-4 KiB, 4-16 KiB, 16-64 KiB, 64-256 KiB, 256 KiB-1 MiB. Each bucket gets PER_BUCKET files
(default 6), picked by a seeded shuffle of the sorted candidates (same machine, same SEED: same corpus).
Where a class has too few real files of a bucket's size (large CSS, large SVG), files of that class are
concatenated in seeded order and cut at a random size inside the bucket (a bundle, as sites ship them);
the manifest marks those `concat`. Identical files (by content) are taken once.

The Debian packages that ship the CSS and JS (and the brotli and zstd CLIs the encoder comparison uses)
are installed first if missing (as root: apt-get).
"""
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys

PACKAGES = [
    "brotli", "zstd", "nginx",
    "libjs-jquery", "libjs-jquery-ui", "libjs-bootstrap", "libjs-bootstrap4", "libjs-sphinxdoc",
    "libjs-highlight.js", "libjs-d3", "libjs-codemirror", "node-normalize.css", "fonts-font-awesome",
    "sphinx-rtd-theme-common", "adwaita-icon-theme",
]

KIB = 1024
BUCKETS = [(1 * KIB, 4 * KIB), (4 * KIB, 16 * KIB), (16 * KIB, 64 * KIB), (64 * KIB, 256 * KIB),
           (256 * KIB, 1024 * KIB)]
BUCKET_NAMES = ["1k-4k", "4k-16k", "16k-64k", "64k-256k", "256k-1m"]
ROOTS = ["/usr/share", "/usr/lib"]
EXT = {"html": "html", "css": "css", "js": "js", "svg": "svg", "text": "txt", "json-api": "json",
       "json-data": "json"}


def install():
    missing = [p for p in PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0:
        print(f"corpus: not root, not installing {' '.join(missing)}", file=sys.stderr)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def walk(roots, suffixes):
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(suffixes):
                    path = os.path.join(dirpath, name)
                    if os.path.isfile(path) and not os.path.islink(path):
                        found.append(path)
    return found


def read(path):
    try:
        with open(path, "rb") as f:
            data = f.read(4 * 1024 * KIB)
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        return data
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def candidates(cls):
    """(source, bytes) of every real file of the class, sorted by path, one per distinct content."""
    if cls == "html":
        paths = walk(ROOTS, (".html", ".htm"))
    elif cls == "css":
        paths = walk(ROOTS, (".css",))
    elif cls == "js":
        paths = walk(ROOTS, (".js",))
    elif cls == "svg":
        paths = walk(ROOTS, (".svg",))
    elif cls == "text":
        paths = walk(["/usr/share/common-licenses"], ("",))
        paths += [p for p in walk(["/usr/share/doc"], ("copyright", "changelog.Debian.gz",
                                                        "changelog.gz", "NEWS.gz", "README"))]
        paths += walk(["/usr/share/man/man1", "/usr/share/man/man5", "/usr/share/man/man8"], (".gz",))
    else:
        raise ValueError(cls)
    seen, out = set(), []
    for path in paths:
        data = read(path)
        if not data:
            continue
        if cls in ("html", "css", "js", "svg", "text"):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            continue
        seen.add(digest)
        out.append((path, data))
    return out


WORDS = ["alpha", "beta", "gamma", "delta", "north", "south", "east", "west", "red", "green", "blue",
         "small", "large", "active", "pending", "shipped", "returned", "euro", "dollar", "yen"]


def json_api(rng, size):
    """A repetitive API answer: records of one shape, few distinct values, as list endpoints give."""
    items, n = [], 0
    total = 0
    while total < size + 200:
        item = {
            "id": 100000 + n,
            "type": "order",
            "status": rng.choice(["active", "pending", "shipped"]),
            "customer": {"id": 5000 + rng.randrange(40), "tier": rng.choice(["gold", "silver"])},
            "currency": "EUR",
            "amount": rng.randrange(100, 99999) / 100,
            "tags": WORDS[n % 5: n % 5 + rng.randrange(1, 4)],
            "created_at": f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00Z",
            "links": {"self": f"/api/v1/orders/{100000 + n}",
                      "customer": f"/api/v1/customers/{5000 + n % 40}"},
        }
        items.append(item)
        total += len(json.dumps(item)) + 2
        n += 1
    text = json.dumps({"data": items, "meta": {"page": 1, "per_page": n}}, indent=None)
    return text.encode()[:size]


def json_data(rng, size):
    """Non-repetitive data: random identifiers, coordinates, readings and free-text words."""
    lines, total = [], 0
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(3, 10)))
             for _ in range(5000)]
    while total < size + 200:
        rec = {
            rng.choice(vocab): rng.getrandbits(64).to_bytes(8, "big").hex(),
            "lat": round(rng.uniform(-90, 90), 7),
            "lon": round(rng.uniform(-180, 180), 7),
            "readings": [round(rng.gauss(0, 1000), 4) for _ in range(rng.randrange(1, 6))],
            "note": " ".join(rng.choice(vocab) for _ in range(rng.randrange(2, 12))),
            rng.choice(vocab): {rng.choice(vocab): rng.randrange(1 << 40)},
        }
        s = json.dumps(rec, separators=(",", ":"))
        lines.append(s)
        total += len(s) + 1
    return ("[" + ",".join(lines) + "]").encode()[:size]


def cli(corpus):
    """The reference CLIs (brotli, zstd) at levels 1-9 on every class: CPU per pass and output size.

    Each file is compressed by one run of the CLI to a pipe; the CPU of the children (getrusage) over a
    pass of a class's files, less that many runs of the CLI on an empty file (its start-up), minimum of
    TRIALS (default 3) passes. The CLIs' own defaults otherwise (brotli's window 22 where parapet uses
    19: the same for files up to 512 KiB; zstd's frame checksum).
    """
    import resource

    trials = int(os.environ.get("TRIALS", "3"))
    rows = [line.rstrip("\n").split("\t") for line in open(os.path.join(corpus, "manifest.tsv"))][1:]
    by_class = {}
    for cls, _, name, _, _ in rows:
        by_class.setdefault(cls, []).append(os.path.join(corpus, name))
    empty = os.path.join(corpus, ".empty")
    open(empty, "wb").close()

    def children_ns():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return int((r.ru_utime + r.ru_stime) * 1e9)

    def run(cmd, path):
        with open(path, "rb") as f:
            return len(subprocess.run(cmd, stdin=f, capture_output=True, check=True).stdout)

    tools = {"brotli": lambda lv: ["brotli", "-c", "-q", str(lv)],
             "zstd": lambda lv: ["zstd", "-c", "-q", f"-{lv}"]}
    print("tool\tclass\tlevel\tin_bytes\tout_bytes\tns_min")
    for tool, cmd in tools.items():
        startup = []
        for _ in range(trials):
            t = children_ns()
            for _ in range(50):
                run(cmd(1), empty)
            startup.append((children_ns() - t) / 50)
        start_ns = min(startup)
        for cls, files in by_class.items():
            in_bytes = sum(os.path.getsize(p) for p in files)
            for level in range(1, 10):
                best, out = None, 0
                for _ in range(trials):
                    t = children_ns()
                    out = sum(run(cmd(level), p) for p in files)
                    ns = children_ns() - t - start_ns * len(files)
                    best = ns if best is None else min(best, ns)
                print(f"{tool}\t{cls}\t{level}\t{in_bytes}\t{out}\t{int(best)}", flush=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--cli":
        return cli(sys.argv[2])
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    seed = int(os.environ.get("SEED", "7"))
    per_bucket = int(os.environ.get("PER_BUCKET", "6"))
    install()
    os.makedirs(out, exist_ok=True)
    manifest = []
    for cls in ["html", "css", "js", "svg", "text", "json-api", "json-data"]:
        rng = random.Random(f"{seed}-{cls}")
        cdir = os.path.join(out, cls)
        os.makedirs(cdir, exist_ok=True)
        real = [] if cls.startswith("json") else candidates(cls)
        for (lo, hi), bname in zip(BUCKETS, BUCKET_NAMES):
            picked = []
            if cls.startswith("json"):
                make = json_api if cls == "json-api" else json_data
                for i in range(per_bucket):
                    size = rng.randrange(lo, hi)
                    picked.append((f"generated:{cls}", make(rng, size)))
            else:
                fits = [c for c in real if lo <= len(c[1]) < hi]
                rng.shuffle(fits)
                picked = fits[:per_bucket]
                pool = [c for c in real if len(c[1]) >= 512]
                while len(picked) < per_bucket and pool:
                    target = rng.randrange(lo, hi)
                    order = pool[:]
                    rng.shuffle(order)
                    data, sources = b"", []
                    for src, d in order:
                        data += d
                        sources.append(src)
                        if len(data) >= target:
                            break
                    if len(data) < lo:
                        break
                    picked.append(("concat:" + "+".join(os.path.basename(s) for s in sources[:3])
                                   + (f"+{len(sources) - 3} more" if len(sources) > 3 else ""),
                                   data[:target]))
            for i, (src, data) in enumerate(picked):
                name = f"{bname}-{i}.{EXT[cls]}"
                with open(os.path.join(cdir, name), "wb") as f:
                    f.write(data)
                manifest.append((cls, bname, f"{cls}/{name}", len(data), src))
    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        f.write("class\tbucket\tfile\tbytes\tsource\n")
        for row in manifest:
            f.write("\t".join(str(x) for x in row) + "\n")
    by = {}
    for cls, _, _, n, _ in manifest:
        c, b = by.get(cls, (0, 0))
        by[cls] = (c + 1, b + n)
    for cls, (c, b) in by.items():
        print(f"{cls:10} {c:3} files {b / KIB:9.0f} KiB", file=sys.stderr)


main()
