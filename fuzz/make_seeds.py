#!/usr/bin/env python3
"""Writes the seed corpus of the four fuzz targets (fuzz/corpus/*/seed-*).

FUSE requests follow the kernel's struct layouts (linux/fuse.h, 7.36);
agent frames follow guest-init/src/protocol.rs; layers are small tar
streams (plain, gzip) with the entry kinds an OCI layer may hold.
Run from anywhere: python3 fuzz/make_seeds.py
"""
import gzip, io, json, os, struct, tarfile

HERE = os.path.dirname(os.path.abspath(__file__))

def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

# ---- FUSE -------------------------------------------------------------
OP = dict(LOOKUP=1, FORGET=2, GETATTR=3, SETATTR=4, READLINK=5, SYMLINK=6,
          MKNOD=8, MKDIR=9, UNLINK=10, RMDIR=11, RENAME=12, LINK=13, OPEN=14,
          READ=15, WRITE=16, STATFS=17, RELEASE=18, FSYNC=20, SETXATTR=21,
          GETXATTR=22, LISTXATTR=23, REMOVEXATTR=24, FLUSH=25, OPENDIR=27,
          READDIR=28, RELEASEDIR=29, GETLK=31, SETLK=32, SETLKW=33,
          ACCESS=34, CREATE=35, BATCH_FORGET=42, FALLOCATE=43,
          READDIRPLUS=44, RENAME2=45, LSEEK=46, COPY_FILE_RANGE=47)
unique = [100]

def req(op, node, body=b""):
    unique[0] += 1
    return struct.pack("<IIQQIIIHH", 40 + len(body), OP[op], unique[0], node,
                       0, 0, 0, 0, 0) + body

def name(s):
    return s.encode() + b"\0"

def read_in(fh, off, size):
    return struct.pack("<QQIIQII", fh, off, size, 0, 0, 0, 0)

def setattr_in(valid, size=0, mode=0, uid=0, gid=0, fh=0):
    return struct.pack("<IIQQQQQQIIIIIIII", valid, 0, fh, size, 0, 0, 0, 0,
                       0, 0, 0, mode, 0, uid, gid, 0)

O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND = 0, 1, 2, 0o100, 0o1000, 0o2000

seqs = {
    "read-write": [req("LOOKUP", 1, name("f")), req("OPEN", 2, struct.pack("<II", O_RDWR, 0)),
                   req("READ", 2, read_in(1, 0, 4096)),
                   req("WRITE", 2, struct.pack("<QQIIQII", 1, 5, 3, 0, 0, 0, 0) + b"abc"),
                   req("FSYNC", 2, struct.pack("<QII", 1, 0, 0)),
                   req("RELEASE", 2, struct.pack("<QIIQ", 1, 0, 0, 0)),
                   req("FORGET", 2, struct.pack("<Q", 1))],
    "create-grow": [req("CREATE", 1, struct.pack("<IIII", O_RDWR | O_CREAT, 0o100644, 0, 0) + name("new")),
                    req("WRITE", 2, struct.pack("<QQIIQII", 1, 0, 5, 0, 0, 0, 0) + b"12345"),
                    req("FALLOCATE", 2, struct.pack("<QQQII", 1, 0, 1 << 16, 0, 0)),
                    req("SETATTR", 2, setattr_in(1 << 3, size=1 << 20)),
                    req("COPY_FILE_RANGE", 2, struct.pack("<QQQQQQQ", 1, 0, 2, 1, 4096, 4096, 0)),
                    req("LSEEK", 2, struct.pack("<QQII", 1, 0, 3, 0)),
                    req("UNLINK", 1, name("new")),
                    req("WRITE", 2, struct.pack("<QQIIQII", 1, 1 << 22, 4, 0, 0, 0, 0) + b"tail"),
                    req("RELEASE", 2, struct.pack("<QIIQ", 1, 0, 0, 0))],
    "tree": [req("MKDIR", 1, struct.pack("<II", 0o755, 0) + name("x")),
             req("SYMLINK", 1, name("l") + name("../outside/secret")),
             req("LOOKUP", 1, name("l")), req("READLINK", 3),
             req("RENAME", 1, struct.pack("<Q", 2) + name("l") + name("m")),
             req("LOOKUP", 1, name("f")),
             req("LINK", 2, struct.pack("<Q", 4) + name("hard")),
             req("RENAME2", 2, struct.pack("<QII", 1, 2, 0) + name("hard") + name("x")),
             req("RMDIR", 1, name("x")),
             req("MKNOD", 1, struct.pack("<IIII", 0o20644, 0x0101, 0, 0) + name("dev")),
             req("MKNOD", 1, struct.pack("<IIII", 0o10644, 0, 0, 0) + name("fifo")),
             req("LOOKUP", 1, name("dev")),
             req("OPEN", 6, struct.pack("<II", O_RDONLY, 0))],
    "dirs": [req("OPENDIR", 1, struct.pack("<II", 0, 0)),
             req("READDIR", 1, read_in(1, 0, 4096)),
             req("READDIRPLUS", 1, read_in(1, 0, 8192)),
             req("READDIRPLUS", 1, read_in(1, 3, 300)),
             req("RELEASEDIR", 1, struct.pack("<QIIQ", 1, 0, 0, 0)),
             req("LOOKUP", 1, name("d")), req("OPENDIR", 2, struct.pack("<II", 0, 0)),
             req("READDIR", 2, read_in(2, 0, 100)), req("STATFS", 2),
             req("BATCH_FORGET", 0, struct.pack("<II", 1, 0) + struct.pack("<QQ", 2, 1))],
    "xattrs": [req("LOOKUP", 1, name("f")),
               req("SETXATTR", 2, struct.pack("<II", 5, 0) + name("user.k") + b"value"),
               req("GETXATTR", 2, struct.pack("<II", 0, 0) + name("user.k")),
               req("GETXATTR", 2, struct.pack("<II", 64, 0) + name("user.k")),
               req("LISTXATTR", 2, struct.pack("<II", 4096, 0)),
               req("SETXATTR", 2, struct.pack("<II", 20, 0) + name("user.msb.override_stat") + bytes(20)),
               req("GETXATTR", 2, struct.pack("<II", 0xffffffff, 0) + name("user.msb.override_stat")),
               req("REMOVEXATTR", 2, name("user.k")),
               req("SETATTR", 2, setattr_in(1 | 2 | 4, mode=0o104755, uid=0, gid=0)),
               req("GETATTR", 2, struct.pack("<IIQ", 0, 0, 0)),
               req("ACCESS", 2, struct.pack("<II", 7, 0))],
    "locks": [req("LOOKUP", 1, name("f")), req("OPEN", 2, struct.pack("<II", O_RDWR, 0)),
              req("SETLK", 2, struct.pack("<QQQQIIII", 1, 7, 0, 100, 1, 0, 0, 0)),
              req("GETLK", 2, struct.pack("<QQQQIIII", 1, 8, 0, 100, 1, 0, 0, 0)),
              req("SETLKW", 2, struct.pack("<QQQQIIII", 1, 8, 0, 100, 1, 0, 1, 0)),
              req("FLUSH", 2, struct.pack("<QIIQ", 1, 0, 0, 7)),
              req("RELEASE", 2, struct.pack("<QIIQ", 1, 0, 0, 7))],
    "specials": [req("LOOKUP", 1, name("out")), req("OPEN", 2, struct.pack("<II", O_RDONLY, 0)),
                 req("LOOKUP", 1, name("p")), req("OPEN", 3, struct.pack("<II", O_RDONLY, 0)),
                 req("READ", 3, read_in(1, 0, 10)),
                 req("LOOKUP", 1, name("slash")), req("READLINK", 4),
                 req("LOOKUP", 1, name("..")), req("LOOKUP", 1, name("a/b"))],
}
for k, v in seqs.items():
    out("fuse_request", k, b"".join(v))

# ---- virtio chains ----------------------------------------------------
# One operation: kind, size/17, offset, flags, header length delta, then the
# readable cuts and the writable descriptor lengths/16 (virtio_chain.rs).
def chain_op(kind, size_units, offset, cuts, replies, flags=0, delta=0, fh=None, node=None):
    b = struct.pack("<BHIIb", kind, size_units, offset, flags, delta)
    if fh is not None:
        b += struct.pack("<H", fh)
    if node is not None:
        b += struct.pack("<H", node)
    b += struct.pack("<B", len(cuts)) + b"".join(struct.pack("<H", c) for c in cuts)
    b += struct.pack("<B", len(replies)) + b"".join(struct.pack("<H", r) for r in replies)
    return b

out("virtio_chain", "read-4k", chain_op(0, 241, 0, [], [258]))
out("virtio_chain", "write-4k", chain_op(1, 241, 100, [40, 80], [2]))
out("virtio_chain", "read-pieces", chain_op(0, 3628, 4095, [7, 79], [1, 16, 300, 4000, 100]))
out("virtio_chain", "mixed", chain_op(0, 100, 250000, [], [200]) +
    chain_op(1, 60, 262000, [], [2, 2]) + chain_op(16, 10, 0, [], [50], delta=-3) +
    chain_op(4, 10, 0, [], [50], fh=999) + chain_op(8 | 1, 10, 0, [], [50], node=7))
out("virtio_chain", "raw", struct.pack("<BH", 3, 80) + req("GETATTR", 1, b"\0" * 40)[:80] +
    struct.pack("<BB", 0, 1) + struct.pack("<H", 20))

# ---- agent frames -----------------------------------------------------
KIND = dict(Hello=1, Ping=2, Exec=3, Stdin=4, Resize=5, Signal=6, Shutdown=7,
            Fs=8, Ready=64, Exited=69, Error=70)

def frame(kind, session, payload):
    return struct.pack("<IBI", 5 + len(payload), KIND[kind], session) + payload

def js(v):
    return json.dumps(v).encode()

out("agent_frame", "hello-exec", frame("Hello", 0, js({"version": 1})) +
    frame("Exec", 1, js({"argv": ["/bin/sh", "-c", "echo hi"], "env": [], "tty": False})) +
    frame("Stdin", 1, b"data") + frame("Stdin", 1, b"") +
    frame("Resize", 1, js({"rows": 24, "cols": 80})) +
    frame("Signal", 1, js({"signal": 15})))
out("agent_frame", "fs-shutdown", frame("Fs", 2, js({"op": "stat", "path": "/etc"})) +
    frame("Ping", 0, b"12345678") + frame("Shutdown", 0, js({})))
out("agent_frame", "malformed", struct.pack("<I", 2) + b"ab" + frame("Hello", 0, b"{") +
    struct.pack("<IBI", 5 + (1 << 30), 3, 9) + b"x" * 16)
out("agent_frame", "unknown-kind", struct.pack("<IBI", 7, 200, 4) + b"zz" +
    frame("Exited", 3, js({"code": 0})) + frame("Error", 3, js({"message": "no"})))

# ---- OCI layers -------------------------------------------------------
def layer(entries, compress=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, path, extra in entries:
            ti = tarfile.TarInfo(path)
            ti.mode = extra.get("mode", 0o644)
            ti.uid = extra.get("uid", 0)
            ti.gid = extra.get("gid", 0)
            data = None
            if kind == "file":
                data = extra.get("data", b"x")
                ti.size = len(data)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = extra.get("mode", 0o755)
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = extra["to"]
            elif kind == "hard":
                ti.type = tarfile.LNKTYPE
                ti.linkname = extra["to"]
            elif kind == "chr":
                ti.type = tarfile.CHRTYPE
                ti.devmajor, ti.devminor = 1, 3
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    b = buf.getvalue()
    return gzip.compress(b, mtime=0) if compress else b

basic = [("dir", "etc", {}), ("file", "etc/passwd", {"data": b"root:x:0:0::/root:/bin/sh\n"}),
         ("file", "bin/su", {"mode": 0o4755, "data": b"\x7fELF"}),
         ("sym", "bin/sh", {"to": "/bin/busybox"}), ("hard", "bin/su2", {"to": "bin/su"}),
         ("chr", "dev/null", {}), ("fifo", "run/fifo", {}),
         ("file", "etc/.wh.gone", {"data": b""}), ("file", "opt/.wh..wh..opq", {"data": b""})]
out("oci_layer", "basic", layer(basic))
out("oci_layer", "basic-gz", layer(basic, compress=True))
out("oci_layer", "hostile", layer([("sym", "escape", {"to": "../../sentinel"}),
                                   ("file", "escape/x", {"data": b"out"}),
                                   ("file", "../up", {"data": b"up"}),
                                   ("file", "/abs/file", {"data": b"abs"}),
                                   ("hard", "h", {"to": "../sentinel/keep"}),
                                   ("dir", "a" * 200 + "/" + "b" * 200, {}),
                                   ("file", "d", {"data": b"1"}), ("dir", "d", {})]))
