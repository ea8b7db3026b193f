"""The code footprint of a request: the distinct 64-byte lines of machine code executed at least
FRAC times per request (default 1), from a callgrind dump made with --dump-instr=yes.

    python3 benches/footprint.py CALLGRIND_OUT REQUESTS [FRAC]

Prints the count and bytes, the 4 KiB pages they lie in, then the count per object (binary, libc). benches/counts.sh runs it.
"""
import sys, collections
path, reqs = sys.argv[1], int(sys.argv[2])
frac = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
lines = collections.Counter()
npos = 1; last = [0, 0]; skip_next = False; cur_ob = None; obnames = {}
def num(x, prev):
    if x == '*': return prev
    if x[0] == '+': return prev + int(x[1:], 0)
    if x[0] == '-': return prev - int(x[1:], 0)
    return int(x, 0)
for raw in open(path):
    line = raw.rstrip('\n')
    if not line: continue
    c = line[0]
    if line.startswith('positions:'):
        npos = len(line.split()) - 1; continue
    if line.startswith(('ob=', 'cob=')):
        key, v = line.split('=', 1)
        if ' ' in v:
            i, n = v.split(' ', 1)
            obnames[i] = n
        else:
            n = obnames.get(v, v)
        if key == 'ob':
            cur_ob = n
        continue
    if line.startswith('calls='):
        skip_next = True; continue
    if c.isdigit() or c in '+-*':
        parts = line.split()
        for i in range(npos):
            last[i] = num(parts[i], last[i])
        if skip_next: skip_next = False; continue
        if len(parts) > npos:
            lines[(cur_ob, last[0] >> 6)] += int(parts[npos])
hot = [k for k, v in lines.items() if v >= reqs * frac]
byob = collections.Counter(k[0] for k in hot)
pages = {(o, l >> 6) for o, l in hot}
print(f"{path}: 64-byte code lines with >= {frac} instruction executions per request: {len(hot)} ({len(hot)*64} bytes)")
print(f"  in {len(pages)} pages of 4 KiB")
for o, n in byob.most_common(6): print(f"  {n:6d} {o}")
