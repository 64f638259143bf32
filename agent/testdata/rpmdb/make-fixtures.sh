#!/bin/sh
# Rebuilds the rpm database fixtures in this folder from packages built by rpm itself.
# Needs Debian's (or any distribution's) rpm, rpmbuild, sqlite3, db5.3_load and python3:
#   apt-get install -y rpm sqlite3 db5.3-util python3
# Run from anywhere: sh agent/testdata/rpmdb/make-fixtures.sh
# Headers carry build times and host names, so a rebuild differs byte for byte; the tests
# only rely on the package names, versions and the damage described below.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. Three noarch packages built by rpmbuild. telegram-desktop carries a long description
#    so its header is larger than a 512-byte BerkeleyDB page and lands on overflow pages.
mkdir -p "$work/top/SPECS"
spec() { # name epoch version release description
    {
        echo "Name: $1"
        [ -n "$2" ] && echo "Epoch: $2"
        echo "Version: $3"
        echo "Release: $4"
        echo "Summary: fixture package $1"
        echo "License: MIT"
        echo "BuildArch: noarch"
        echo "%description"
        echo "$5"
        echo "%files"
    } > "$work/top/SPECS/$1.spec"
    rpmbuild --quiet --define "_topdir $work/top" -bb "$work/top/SPECS/$1.spec"
}
spec zoom 1 6.1.0 2.fc40 "Video conferencing fixture."
spec telegram-desktop "" 4.16.8 1.el8 "$(printf 'Telegram Desktop fixture with a long description. %.0s' $(seq 1 40))"
spec slack "" 4.41.105 0.1.el8 "Team chat fixture."

# 2. rpm installs them (database only) into an SQLite rpmdb: its Packages.blob column holds
#    each header exactly as every rpm backend stores it.
rpm --dbpath "$work/sq" --define '_db_backend sqlite' --initdb
rpm --dbpath "$work/sq" --define '_db_backend sqlite' -i --justdb --nodeps --noscripts \
    "$work"/top/RPMS/noarch/*.rpm
sqlite3 "$work/sq/rpmdb.sqlite" 'SELECT hnum, hex(blob) FROM Packages ORDER BY hnum' \
    > "$work/headers.txt"

# 3. BerkeleyDB hash databases, keyed as rpm < 4.16 keyed Packages: a 4-byte header number in
#    the database's byte order, plus key 0 holding the next free number. 512-byte pages force
#    every header onto overflow pages: one little-endian (x86), one big-endian (s390x, ppc64).
#    With 8192-byte pages the two small headers stay on the bucket page and the large one
#    overflows.
python3 - "$work/headers.txt" "$work" <<'PY'
import sys
rows = [line.strip().split('|') for line in open(sys.argv[1]) if line.strip()]
for order, tag, psize in (('little', 'le', 512), ('big', 'be', 512), ('little', '8k', 8192)):
    with open(f"{sys.argv[2]}/load-{tag}.txt", 'w') as f:
        f.write(f'VERSION=3\nformat=bytevalue\ntype=hash\ndb_pagesize={psize}\nHEADER=END\n')
        nxt = max(int(h) for h, _ in rows) + 1
        f.write(' ' + (0).to_bytes(4, order).hex() + '\n')
        f.write(' ' + nxt.to_bytes(4, order).hex() + '\n')
        for hnum, blob in rows:
            f.write(' ' + int(hnum).to_bytes(4, order).hex() + '\n')
            f.write(' ' + blob.lower() + '\n')
        f.write('DATA=END\n')
PY
rm -f "$here"/bdb-hash-*.db
db5.3_load -f "$work/load-le.txt" -c db_lorder=1234 "$here/bdb-hash-le.db"
db5.3_load -f "$work/load-be.txt" -c db_lorder=4321 "$here/bdb-hash-be.db"
db5.3_load -f "$work/load-8k.txt" -c db_lorder=1234 "$here/bdb-hash-8k.db"
for f in "$here"/bdb-hash-*.db; do db5.3_verify "$f"; done
# rpm's own read-only BerkeleyDB backend lists the packages of the little-endian one.
mkdir -p "$work/bdbro" && cp "$here/bdb-hash-le.db" "$work/bdbro/Packages"
rpm --dbpath "$work/bdbro" --define '_db_backend bdb_ro' -qa --qf '%{NAME} %{EVR}\n' 2>/dev/null | sort

# Damaged copies: cut inside the overflow chain; and a scribbled overflow page.
size=$(stat -c %s "$here/bdb-hash-le.db")
head -c $((size / 2 + 100)) "$here/bdb-hash-le.db" > "$here/bdb-hash-truncated.db"
cp "$here/bdb-hash-le.db" "$here/bdb-hash-corrupt.db"
python3 - "$here/bdb-hash-corrupt.db" <<'PY'
import sys, struct
# Point the first overflow page's next-page link (offset 16) at itself: a cycle a reader must
# stop, and the header it carries is lost.
path = sys.argv[1]
data = bytearray(open(path, 'rb').read())
psize = struct.unpack_from('<I', data, 20)[0]
for pg in range(1, len(data) // psize):
    base = pg * psize
    if data[base + 25] == 7:  # P_OVERFLOW
        struct.pack_into('<I', data, base + 16, pg)
        break
else:
    sys.exit('no overflow page')
open(path, 'wb').write(data)
PY

# 4. ndb (rpm's own Packages.db format, lib/backend/ndb/rpmpkg.c). Debian's rpm is built without
#    the ndb backend (`rpm --showrc | grep backends` lists sqlite bdb_ro dummy), so the file is
#    laid out by this script, following rpmpkg.c: a 4096-byte slot page (header 'RpmP', version
#    0, generation, slot page count, next package index; 16-byte 'Slot' entries: magic, pkgidx,
#    blkoff, blkcnt in 16-byte blocks), then each header wrapped as 'BlbS' pkgidx timestamp
#    length | header | zero pad | adler32 length 'BlbE'.
python3 - "$work/headers.txt" "$here" <<'PY'
import sys, struct, zlib
rows = [line.strip().split('|') for line in open(sys.argv[1]) if line.strip()]
out = sys.argv[2]
PAGE, BLK = 4096, 16
def le(*v): return struct.pack('<' + 'I' * len(v), *v)
slots, blobs, blkoff = [], b'', PAGE // BLK
for hnum, hexblob in rows:
    idx, blob = int(hnum), bytes.fromhex(hexblob)
    blkcnt = (16 + len(blob) + 12 + BLK - 1) // BLK
    pad = blkcnt * BLK - (16 + len(blob) + 12)
    head = b'BlbS' + le(idx, 1700000000, len(blob))
    body = head + blob + b'\0' * pad
    blobs += body + le(zlib.adler32(body), len(blob)) + b'BlbE'
    slots.append(le(idx, blkoff, blkcnt))
    blkoff += blkcnt
page = bytearray(PAGE)
page[0:20] = b'RpmP' + le(0, len(rows) + 1, 1, max(int(h) for h, _ in rows) + 1)
for i in range(2, PAGE // 16):
    page[i * 16:i * 16 + 4] = b'Slot'
for i, s in enumerate(slots):
    page[(2 + i) * 16 + 4:(3 + i) * 16] = s
db = bytes(page) + blobs
open(f'{out}/ndb.db', 'wb').write(db)
open(f'{out}/ndb-truncated.db', 'wb').write(db[:len(db) - 700])
bad = bytearray(db)
# Flip one byte inside the second package's header: its checksum no longer matches.
second = struct.unpack_from('<I', page, 3 * 16 + 8)[0] * BLK
bad[second + 40] ^= 0xff
open(f'{out}/ndb-corrupt.db', 'wb').write(bytes(bad))
PY
ls -l "$here"
