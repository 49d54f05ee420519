#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/seeds/<target>/: well-formed inputs, so
that a short run starts from the deep paths (accepted chunks, whole messages, parsed lines) and
mutates from there. scripts/fuzz.sh copies them into a fresh corpus for every run."""
import hashlib
import hmac
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
JOB = 0x0B0AD0B0AD0B0AD0  # the job key of the udp_datagrams harness
MAGIC = struct.unpack("<I", b"BOAD")[0]
HDR = "<IBBBBBBHIQIIIIIIQIIII"  # boad_common::Header, 72 bytes


def header(kind, src, dst, seq, chunk, nchunks, count, length, total, msg=0, tag=0,
           coll=1, op=255, dtype=4, root=0, comm=0, job=JOB):
    return struct.pack(HDR, MAGIC, 1, kind, coll, op, dtype, 0, 0, src, job, comm, seq, tag, msg,
                       chunk, nchunks, count, root, length, total, dst)


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def udp():
    # size 3 (size_sel 1), rank 1, calls 0..=3, counts 16 * (seq + 1), plausible headers.
    prefix = bytes([1, 1, 3, 16, 3])

    def rec(b, frm=2):
        return struct.pack("<H", len(b)) + bytes([frm]) + b

    # A bcast of 64 bytes for collective 3 (16 * 4), in two chunks of 32, from rank 2.
    c0 = header(1, 2, 1, 3, 0, 2, 64, 32, 64) + bytes(range(32))
    c1 = header(1, 2, 1, 3, 1, 2, 64, 32, 64) + bytes(range(32, 64))
    write("udp_datagrams", "two-chunks", prefix + rec(c1) + rec(c0) + rec(c0))
    # One chunk each of several kinds, and one from a stranger's address.
    ack = header(2, 2, 1, 3, 5, 0, 64, 8, 0) + struct.pack("<Q", 0xF0F0)
    status = header(4, 0, 1, 2, 0, 0, 48, 3, 0) + b"why"
    bcast = header(18, 0, 1, 4, 0, 1, 80, 80, 80) + bytes(80)
    write("udp_datagrams", "kinds", prefix + rec(ack) + rec(status, 0) + rec(bcast, 0) + rec(c0, 3))


def lines():
    write("rendezvous_lines", "table",
          b"TABLE 2\n0 0 127.0.0.1 4000\n1 1 ::1 4001\nKERNEL 5000 LEADERS\nEND\n"
          b"EXIT 1 137\nABORT rank 2 exited\n")
    write("rendezvous_lines", "hello", b"HELLO 3 1 198.18.0.2 40000\n")


def shm():
    # cap 128, 3 gather blocks, seq 7; the ring (1 -> 0): producer line (tail, queued) 128 bytes,
    # consumer line (head) 128 bytes, then data: one allreduce record of 8 bytes and its payload.
    w0 = 3 | (0 << 8) | (2 << 16)  # allreduce, sum, i32, root 0
    record = struct.pack("<IIQQQ", 7, 0, 8, w0, 2)
    tail = len(record) + 8
    ctl = struct.pack("<QQ", tail, 1).ljust(128, b"\0") + struct.pack("<Q", 0).ljust(128, b"\0")
    data = (record + bytes(range(8))).ljust(128, b"\0")
    write("shm_segment", "one-message", bytes([0, 2, 7, 0, 0]) + ctl + data)


def counters():
    write("kernel_counters", "two-cpus", bytes([2]) + b"".join(
        struct.pack("<Q", (i * 0x1111) if i % 3 else 0xFFFFFFFFFFFFFFF0) for i in range(26)))


def hosts():
    write("host_lists", "list", b"node1:4,node2,192.0.2.7:2,[2001:db8::1]:3,node1")
    write("host_lists", "hostfile",
          b"# cluster\nnode01 slots=4\n\nnode02 slots=2 max_slots=6 # big\n[::1]\nnode01\n")


def auth():
    # boad_proto::auth's harness: secret 0x5e * 32, server nonce 0x17 * 32.
    secret, sn, cn, role = bytes([0x5E] * 32), bytes([0x17] * 32), bytes([0x21] * 32), b"agent 7"
    proof = hmac.new(secret, b"boad-auth client" + sn + cn + role, hashlib.sha256).digest()
    write("auth_server", "right-answer", sn + cn + bytes([len(role)]) + role.ljust(64, b"\0") + proof)


def control():
    version = open(os.path.join(HERE, "..", "Cargo.toml")).read().split('[workspace.package]')[1]
    version = version.split('version = "')[1].split('"')[0]
    spec = (f"BOAD-AGENT 4 {version}\nRENDEZVOUS 198.18.1.1:4242\nSECRET {'ab' * 32}\n"
            "HOST 1 9\nRANK 3\nRANK 4\nPROGRAM 2e2f617070\nARG 2d2d783d31\nARG \n"
            "ENV 424f41445f4a4f42 30313233\nCWD 2f746d70\nGO\n")
    write("control_lines", "spec", spec.encode())
    write("control_lines", "agent-lines",
          b"READY\nOUT 3 hello world\nERR 4 \xff oops\nEXIT 3 0 4242 exited with status 0\n"
          b"FAIL no such program\nSIGNAL 15\nL 3 HELLO 3 1 198.18.1.2 40000\nC 4\n"
          b"KERNEL ok eth0\nKERNEL service fffffffffffffffc\nKERNEL no needs CAP_BPF\n"
          b"FILLED ok\nFILLED busy\nFILLED no why\n"
          b"KSTATS folded=3 dropped=2\nKPEER 3 1 198.18.1.2 40000 40001 77\n"
          b"KFILL 0123456789abcdef 33333 2 3\nKFILL 0123456789abcdef 33334 0 -\nKOFF\n")


def envstore():
    # boad::join::envstore: a rank's requests, then the store's replies, then a handshake role.
    write("envstore_lines", "session",
          b"PUT boad-job 0123456789abcdef\nPUT boad-h-0 ab12/4026531840,198.18.1.1\nFENCE\n"
          b"GET boad-h-3\nDONE\nFENCED\nVALUE 198.18.1.2,40000,40001,77\nNONE\n"
          b"ABORT ranks 4 did not reach fence 1 of the job's store within 60 s\nrank 3 of 9\n")


def pmi2():
    def msg(body):
        return b"%-6d" % len(body) + body

    init = b"cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0\n"
    write("pmi2_replies", "session", init
          + msg(b"cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=1;size=9;"
                b"appnum=-1;debugged=FALSE;pmiverbose=FALSE;spawner-jobid=3.0;")
          + msg(b"cmd=job-getid-response;rc=0;jobid=12.0;")
          + msg(b"cmd=kvs-put-response;rc=0;")
          + msg(b"cmd=kvs-fence-response;rc=0;")
          + msg(b"cmd=kvs-get-response;rc=0;found=TRUE;value=ab-1/2,198.18.0.2;")
          + msg(b"cmd=kvs-get-response;rc=0;found=FALSE;")
          + msg(b"cmd=finalize-response;rc=0;"))
    write("pmi2_replies", "errors", init
          + msg(b"cmd=kvs-fence-response;rc=14;errmsg=mpi/pmi2: failed to send temp kvs;")
          + msg(b"cmd=kvs-get-response;rc=0;found=TRUE;value=a;;b=c;;;"))


def pmi1():
    # Hydra's replies to init, get_maxes, get_my_kvsname, put, barrier_in, get, finalize, as seen
    # on the wire from mpiexec.hydra 4.0.
    write("pmi1_replies", "conversation",
          b"cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n"
          b"cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024\n"
          b"cmd=my_kvsname kvsname=kvs_26155_0_1308765440_vm\n"
          b"cmd=put_result rc=0 msg=success\n"
          b"cmd=barrier_out\n"
          b"cmd=get_result rc=0 msg=success value=127.0.0.1,40000,40001,4242\n"
          b"cmd=finalize_ack\n")
    write("pmi1_replies", "refusals",
          b"cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n"
          b"cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024\n"
          b"cmd=my_kvsname kvsname=kvs_1\n"
          b"cmd=put_result rc=0 msg=success\n"
          b"cmd=barrier_out\n"
          b"cmd=get_result rc=-1 msg=key_boad-p-0_not_found value=unknown\n")


def service():
    write("service_lines", "job", b"JOB 0b0ad0b0ad0b0ad0 2 40000\n")
    write("service_lines", "member", b"MEMBER 0 127.77.0.1 40001\n")
    write("service_lines", "grant", b"GRANT 40000 2 3\n")
    write("service_lines", "grant-flat", b"GRANT 40000 2 -\n")
    write("service_lines", "refused", b"REFUSED port 40001 of 127.77.0.1 is not a UDP socket of uid 65534\n")
    write("service_lines", "status", b"STATUS 1 1 64 3 1024\n")
    write("service_lines", "counters", b"COUNTERS folded=3 dropped=2 wrong_source=0\n")


if __name__ == "__main__":
    udp()
    lines()
    shm()
    counters()
    hosts()
    auth()
    control()
    envstore()
    pmi2()
    pmi1()
    service()
