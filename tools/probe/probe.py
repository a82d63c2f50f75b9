#!/usr/bin/env python3
"""Replays issue 14's findings against a built `sumi` and a `sumi serve` it starts itself.

Usage: python3 tools/probe/probe.py [path/to/sumi]   (default: target/release/sumi)

Python 3 standard library only; loopback only (the server listens on 127.0.0.1 on a free
port); everything is written to a temporary folder that is removed afterwards. Each probe has
a timeout and prints one line, `PASS name: what happened` or `FAIL name: what happened`, then
a summary `P/N probes hold (panics X, aborts Y, hangs Z, wrong answers W)` and the memory
line: every CLI probe runs under `/usr/bin/time -f %M` (or, without it, is reaped by wait4,
the same kernel number), the server's peak is its VmHWM, and each is compared with a plain
run of the same tiny model; a peak more than 1 GiB above that counts as a failure.

The model is the tiny SD1 checkpoint of `fixtures/tiny/sd1/manifest.json`, written with
arbitrary small finite values (no probe looks at pixels). Exit status 1 when a probe fails.
"""

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIB_KB = 1 << 20  # 1 GiB in the kB that rusage and /proc report
AUTH = ("probe", "s3cret")
FAST = ["--steps", "2", "--width", "64", "--height", "64", "--quiet"]

results = []  # (ok, kind, name, detail); kind: panic, abort, hang, wrong or None
peaks = {}  # probe name -> peak RSS in kB


def report(name, ok, detail, kind=None):
    kind = None if ok else (kind or "wrong")
    results.append((ok, kind, name, detail))
    tag = "PASS" if ok else "FAIL"
    extra = "" if ok else f" [{kind}]"
    print(f"{tag} {name}: {detail}{extra}", flush=True)


# ---------------------------------------------------------------- files


def materialize_tiny(path, nan_key=None):
    """The tiny SD1 checkpoint as f16 safetensors; `nan_key`'s values all NaN."""
    with open(os.path.join(ROOT, "fixtures/tiny/sd1/manifest.json")) as f:
        spec = json.load(f)["files"]["tiny_sd1.safetensors"]
    block = struct.pack("<4096e", *[((i * 37) % 97 - 48) / 2000.0 for i in range(4096)])
    header, sizes, off = {}, [], 0
    for key, shape, _, _ in spec["tensors"]:
        n = 2
        for d in shape:
            n *= d
        header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [off, off + n]}
        sizes.append((key, n))
        off += n
    if not sizes:
        raise SystemExit("the tiny SD1 manifest lists no tensor")
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for key, n in sizes:
            if key == nan_key:
                f.write(b"\x00\x7e" * (n // 2))
            else:
                f.write((block * (n // len(block) + 1))[:n])


def binunicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def long1(v):
    return b"\x8a\x08" + struct.pack("<q", v)


def ints(vs):
    return b"(" + b"".join(long1(v) for v in vs) + b"t"


def tensor_op(numel, offset, shape, stride):
    """`_rebuild_tensor_v2(storage("0", FloatStorage, numel), offset, shape, stride, False)`."""
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n(("
        + binunicode("storage")
        + b"ctorch\nFloatStorage\n"
        + binunicode("0")
        + binunicode("cpu")
        + long1(numel)
        + b"tQ"
        + long1(offset)
        + ints(shape)
        + ints(stride)
        + b"\x89tR"
    )


def torch_zip(path, pickle, records=(), deflate=False):
    """A zip laid out as torch.save does: archive/data.pkl, then archive/data/<key>."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle)
        for key, size in records:
            method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = method
            with z.open(info, "w", force_zip64=True) as w:
                chunk = b"\x00" * (1 << 20)
                for _ in range(size >> 20):
                    w.write(chunk)
                w.write(b"\x00" * (size & ((1 << 20) - 1)))


def nested_bomb(depth=1_000_000):
    return b"\x80\x02" + b"(" * depth + b"l" * depth + b"."


def memo_bomb(levels=40):
    # each level a list holding the previous one twice: 2^levels values once copied
    return b"\x80\x02]q\x00" + b"(h\x00h\x00lq\x00" * levels + b"."


def png_bytes(w, h, rgba16=False, text=None):
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c))

    depth, ctype, bpp = (16, 6, 8) if rgba16 else (8, 2, 3)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    comp = zlib.compressobj(1)
    row = b"\x00" + bytes((x * 7) % 251 for x in range(w * bpp)) if not rgba16 else None
    zero_row = b"\x00" * (w * bpp + 1)
    parts = [comp.compress(row if row is not None else zero_row) for _ in range(h)]
    parts.append(comp.flush())
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if text is not None:
        out += chunk(b"tEXt", b"parameters\x00" + text.encode("latin-1"))
    return out + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def yaml_bomb():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- running the CLI


def run_cli(sumi, args, timeout=60, cwd=None, stdout=None, env_umask=None):
    """Runs `sumi args` under /usr/bin/time (peak RSS in kB). Returns a dict."""
    tmp = tempfile.NamedTemporaryFile(delete=False)
    tmp.close()
    use_time = os.access("/usr/bin/time", os.X_OK)
    cmd = [sumi] + args
    if use_time:
        cmd = ["/usr/bin/time", "-f", "%M", "-o", tmp.name] + cmd
    t0 = time.monotonic()
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    p = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else out_f,
        stderr=err_f,
        start_new_session=True,
        preexec_fn=(lambda: os.umask(env_umask)) if env_umask is not None else None,
    )
    hung, rc, peak = False, None, 0
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            rc = os.waitstatus_to_exitcode(status)
            peak = ru.ru_maxrss
            break
        if time.monotonic() - t0 > timeout:
            hung = True
            os.killpg(p.pid, signal.SIGKILL)
            os.wait4(p.pid, 0)
            break
        time.sleep(0.01)
    p.returncode = rc
    elapsed = time.monotonic() - t0
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read().decode("utf-8", "replace")
    if use_time and not hung:
        # GNU time writes "Command terminated by signal N" (exit 128+N) before the peak
        with open(tmp.name) as f:
            lines = f.read().strip().split("\n")
        for line in lines:
            if line.startswith("Command terminated by signal"):
                rc = -int(line.rsplit(" ", 1)[-1])
        try:
            peak = int(lines[-1])
        except ValueError:
            pass
    os.unlink(tmp.name)
    return {"rc": rc, "out": out, "err": err, "peak": peak, "hung": hung, "s": elapsed}


def judge(name, r, expect_rc, needle=None, max_s=None):
    """Records a CLI probe: the exit code and message expected, within `max_s` seconds."""
    peaks[name] = r["peak"]
    first = (r["err"].strip().split("\n") or [""])[0][:160]
    if r["hung"]:
        return report(name, False, f"no answer within {r['s']:.0f} s", "hang")
    if r["rc"] is not None and r["rc"] < 0:
        return report(name, False, f"killed by signal {-r['rc']}: {first}", "abort")
    if r["rc"] == 101 or "panicked" in r["err"]:
        return report(name, False, f"panicked: {first}", "panic")
    if r["rc"] != expect_rc or (needle and needle not in r["err"]):
        return report(name, False, f"exit {r['rc']}, stderr: {first}")
    if max_s is not None and r["s"] > max_s:
        return report(name, False, f"took {r['s']:.1f} s (limit {max_s} s)", "hang")
    what = first or "(no message)"
    report(name, True, f"exit {r['rc']} in {r['s']:.1f} s, {r['peak'] // 1024} MiB: {what}")


# ---------------------------------------------------------------- the server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, sumi, args, cwd, auth=True, tmpdir=None):
        self.port = free_port()
        self.auth = auth
        cmd = [sumi, "serve", "--host", "127.0.0.1", "--port", str(self.port)] + args
        if auth:
            cmd += ["--api-auth", ":".join(AUTH)]
        self.log = open(os.path.join(cwd, f"serve-{self.port}.log"), "wb")
        env = dict(os.environ, TMPDIR=tmpdir) if tmpdir else None
        self.p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, env=env,
                                  stdout=self.log, stderr=self.log, start_new_session=True)

    def headers(self, extra=None):
        h = {"Content-Type": "application/json", "Host": f"127.0.0.1:{self.port}"}
        if self.auth:
            token = base64.b64encode(":".join(AUTH).encode()).decode()
            h["Authorization"] = f"Basic {token}"
        h.update(extra or {})
        return {k: v for k, v in h.items() if v is not None}

    def req(self, method, path, body=None, headers=None, timeout=60):
        """(status, body bytes); status None when the connection failed or timed out."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            c.request(method, path, body=data, headers=self.headers(headers))
            r = c.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException) as e:
            return None, str(e).encode()
        finally:
            c.close()

    def wait_ready(self, timeout=60):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.p.poll() is not None:
                return False
            st, _ = self.req("GET", "/health", timeout=2)
            if st == 200:
                return True
            time.sleep(0.1)
        return False

    def hwm_kb(self):
        try:
            with open(f"/proc/{self.p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def alive(self):
        return self.p.poll() is None and self.req("GET", "/health", timeout=5)[0] == 200

    def stop(self, timeout=20):
        """SIGTERM; the exit code, or None when it had to be killed."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
                self.log.close()
                return None
        self.log.close()
        return self.p.returncode


def txt2img_body(prompt="a cat", steps=2, **kw):
    b = {"prompt": prompt, "steps": steps, "width": 64, "height": 64, "seed": 1,
         "sampler_name": "Euler"}
    b.update(kw)
    return b


def expect_status(name, st, body, ok_codes, what):
    short = body[:120].decode("utf-8", "replace").replace("\n", " ")
    if st is None:
        return report(name, False, f"{what}: no answer ({short})", "hang")
    if st >= 500 and 500 not in ok_codes and st not in ok_codes:
        return report(name, False, f"{what}: HTTP {st} {short}")
    if st not in ok_codes:
        return report(name, False, f"{what}: HTTP {st}, expected {ok_codes}: {short}")
    report(name, True, f"{what}: HTTP {st} {short}")


# ---------------------------------------------------------------- CLI probes


def cli_probes(sumi, d, model):
    gen = ["txt2img", "--model", model] + FAST
    # pickle bombs through --model, --vae and --embeddings
    torch_zip(f"{d}/nested.ckpt", nested_bomb())
    torch_zip(f"{d}/memo.ckpt", memo_bomb())
    deep_shape = b"\x80\x02}" + binunicode("w") + tensor_op(4, 0, [1] * 100_000, [1] * 100_000)
    torch_zip(f"{d}/deepshape.ckpt", deep_shape + b"s.", [("0", 16)])
    judge("pickle bomb (nesting) as --model", run_cli(sumi, ["txt2img", "--model",
          f"{d}/nested.ckpt"] + FAST), 2, "nested.ckpt")
    judge("pickle bomb (memo copies) as --model", run_cli(sumi, ["txt2img", "--model",
          f"{d}/memo.ckpt"] + FAST), 2, "memo.ckpt")
    judge("pickle bomb (deep tensor shape) as --vae", run_cli(
        sumi, gen + ["--vae", f"{d}/deepshape.ckpt"]), 2, "deepshape.ckpt")
    os.makedirs(f"{d}/emb_bomb")
    torch_zip(f"{d}/emb_bomb/boom.pt", nested_bomb())
    r = run_cli(sumi, gen + ["--embeddings", f"{d}/emb_bomb", "--prompt", "a boom cat",
                             "--output", f"{d}/emb_bomb.png"])
    judge("pickle bomb as an embedding in a prompt", r, r["rc"] if r["rc"] in (0, 2) else 2)
    # shapes that overflow, in a .pt embedding and a .ckpt
    os.makedirs(f"{d}/emb_shape")
    big = b"\x80\x02}" + binunicode("string_to_param") + b"}" + binunicode("*")
    big += tensor_op(4, 0, [1 << 62, 1 << 62], [1, 1]) + b"ss."
    torch_zip(f"{d}/emb_shape/wrap.pt", big, [("0", 16)])
    r = run_cli(sumi, gen + ["--embeddings", f"{d}/emb_shape", "--prompt", "wrap",
                             "--output", f"{d}/wrap.png"])
    judge("overflowing tensor shape in an embedding", r, r["rc"] if r["rc"] in (0, 2) else 2)
    off = b"\x80\x02}" + binunicode("w") + tensor_op(0, 1 << 60, [0], [1]) + b"s."
    torch_zip(f"{d}/offset.ckpt", off, [("0", 0)])
    judge("empty storage with a huge offset as --model",
          run_cli(sumi, ["model-info", f"{d}/offset.ckpt"]), 2, "offset.ckpt")
    # zip bomb: 512 MiB of declared, deflated zeros in a small file
    zb = b"\x80\x02}" + binunicode("w") + tensor_op(128 << 20, 0, [128 << 20], [1]) + b"s."
    torch_zip(f"{d}/zipbomb.ckpt", zb, [("0", 512 << 20)], deflate=True)
    judge("zip bomb .ckpt (512 MiB of deflated zeros)",
          run_cli(sumi, ["model-info", f"{d}/zipbomb.ckpt"]), 2, "zipbomb.ckpt")
    # YAML alias bomb beside a good checkpoint
    os.link(model, f"{d}/yamlbomb.safetensors")
    with open(f"{d}/yamlbomb.yaml", "w") as f:
        f.write(yaml_bomb())
    judge("YAML alias bomb beside the checkpoint", run_cli(
        sumi, ["txt2img", "--model", f"{d}/yamlbomb.safetensors"] + FAST), 2, "yamlbomb.yaml")
    # long prompts: one 50,000-letter word, tokenized in a few seconds at most
    judge("50,000-letter prompt word (sumi prompt)",
          run_cli(sumi, ["prompt", "a" * 50_000]), 0, None, max_s=10)
    # NaN weights
    materialize_tiny(f"{d}/nan.safetensors", "model.diffusion_model.input_blocks.0.0.weight")
    judge("NaN weights", run_cli(sumi, ["txt2img", "--model", f"{d}/nan.safetensors"] + FAST
                                 + ["--output", f"{d}/nan.png"]), 2, "NaN")
    # a weight of 400 digits is infinite (A1111's weight pattern has no exponent: 1e400 is text)
    judge("infinite prompt weight (cat:10...0)", run_cli(
        sumi, gen + ["--prompt", f"(cat:1{'0' * 400})", "--output", f"{d}/inf.png"]), 2, "NaN")
    # truncated images
    good = png_bytes(64, 64)
    with open(f"{d}/cut.png", "wb") as f:
        f.write(good[: len(good) // 2])
    with open(os.path.join(ROOT, "fixtures/pipeline/synth.jpg"), "rb") as f:
        jpg = f.read()
    with open(f"{d}/cut.jpg", "wb") as f:
        f.write(jpg[: len(jpg) * 9 // 10])  # inside the scan, as Pillow's "truncated"
    for ext in ("png", "jpg"):
        judge(f"truncated {ext.upper()} as --init-image", run_cli(
            sumi, ["img2img", "--init-image", f"{d}/cut.{ext}", "--model", model] + FAST
            + ["--output", f"{d}/cut-{ext}-out.png"]), 2, "truncated")
    fifo_probes(sumi, d, model, gen)
    output_probes(sumi, d, model)


def fifo_probes(sumi, d, model, gen):
    os.mkfifo(f"{d}/fifo.safetensors")
    os.mkfifo(f"{d}/fifo.png")
    os.makedirs(f"{d}/emb_fifo")
    os.mkfifo(f"{d}/emb_fifo/trap.pt")
    cases = [
        ("FIFO as --model", ["txt2img", "--model", f"{d}/fifo.safetensors"] + FAST),
        ("FIFO as --vae", gen + ["--vae", f"{d}/fifo.safetensors"]),
        ("FIFO as --init-image", ["img2img", "--model", model, "--init-image",
                                  f"{d}/fifo.png"] + FAST),
        ("FIFO in --embeddings", gen + ["--embeddings", f"{d}/emb_fifo", "--prompt", "trap"]),
        ("FIFO to png-info", ["png-info", f"{d}/fifo.png"]),
    ]
    for name, args in cases:
        judge(name, run_cli(sumi, args, timeout=20), 2, "FIFO")
    judge("png-info /dev/zero", run_cli(sumi, ["png-info", "/dev/zero"], timeout=20), 2,
          "/dev/zero")


def output_probes(sumi, d, model):
    # control characters in PNG text are printed escaped
    with open(f"{d}/ctl.png", "wb") as f:
        f.write(png_bytes(8, 8, text="cat\x1b]0;owned\x07\x1b[2J\r\nSteps: 2, Seed: 1"))
    r = run_cli(sumi, ["png-info", f"{d}/ctl.png"])
    raw = [c for c in r["out"] if c < 32 and c not in (9, 10)]
    if r["rc"] == 0 and not raw and b"\\u001b" in r["out"]:
        report("control characters in PNG text", True, "printed escaped (\\u001b)")
    else:
        judge("control characters in PNG text", r, -999)
    # closed stdout
    rd, wr = os.pipe()
    os.close(rd)
    r = run_cli(sumi, ["png-info", f"{d}/ctl.png"], stdout=wr)
    os.close(wr)
    judge("closed stdout (png-info | head -0)", r, 0)
    # two runs into one output folder, under umask 022
    work = f"{d}/race"
    os.makedirs(work)
    runs = []
    for seed in ("1", "2"):
        t = threading.Thread(target=lambda s=seed: runs.append(run_cli(
            sumi, ["txt2img", "--model", model, "--seed", s, "--batch-size", "3"] + FAST,
            cwd=work, env_umask=0o022)))
        t.start()
        runs.append(t)
    for t in [x for x in runs if isinstance(x, threading.Thread)]:
        t.join()
    runs = [x for x in runs if isinstance(x, dict)]
    files = sorted(os.listdir(f"{work}/outputs")) if os.path.isdir(f"{work}/outputs") else []
    modes = {oct(os.stat(f"{work}/outputs/{n}").st_mode & 0o777) for n in files}
    ok = all(r["rc"] == 0 for r in runs) and len(files) == 6 and modes == {"0o644"}
    for r in runs:
        peaks["two runs into one folder"] = max(peaks.get("two runs into one folder", 0),
                                                r["peak"])
    report("two runs into one output folder", ok,
           f"exits {[r['rc'] for r in runs]}, {len(files)} of 6 images, modes {sorted(modes)}")


# ---------------------------------------------------------------- server probes


def slow_loris(port, out):
    """An idle connection and one sending a header byte every 2 s: the server must close both
    within 60 s."""
    t0 = time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=1) for _ in range(2)]
    socks[1].sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    closed = [None, None]
    while time.monotonic() - t0 < 60 and None in closed:
        for i, s in enumerate(socks):
            if closed[i] is not None:
                continue
            try:
                if i == 1:
                    s.sendall(b"a")
                data = s.recv(4096)
                closed[i] = time.monotonic() - t0 if data == b"" or b" 408 " in data else None
                if data and closed[i] is None:
                    closed[i] = time.monotonic() - t0
            except socket.timeout:
                pass
            except OSError:
                closed[i] = time.monotonic() - t0
        time.sleep(1)
    for s in socks:
        s.close()
    out.append(closed)


def fmt_s(t):
    return "never" if t is None else f"{t:.0f} s"


def server_probes(sumi, d, model):
    os.makedirs(f"{d}/models")
    os.link(model, f"{d}/models/good.safetensors")
    torch_zip(f"{d}/models/bad.ckpt", nested_bomb())
    os.makedirs(f"{d}/emb_server")
    torch_zip(f"{d}/emb_server/boom.pt", memo_bomb())
    wrap = b"\x80\x02}" + binunicode("string_to_param") + b"}" + binunicode("*")
    wrap += tensor_op(4, 0, [1 << 62, 1 << 62], [1, 1]) + b"ss."
    torch_zip(f"{d}/emb_server/wrap.pt", wrap, [("0", 16)])
    os.makedirs(f"{d}/srvtmp")
    s = Server(sumi, ["--model", model, "--models-dir", f"{d}/models", "--embeddings",
                      f"{d}/emb_server", "--queue", "2"], d, tmpdir=f"{d}/srvtmp")
    if not s.wait_ready():
        report("server starts", False, "not ready within 60 s", "hang")
        s.stop()
        return
    loris = []
    lt = threading.Thread(target=slow_loris, args=(s.port, loris))
    lt.start()
    st, body = s.req("POST", "/sdapi/v1/txt2img", txt2img_body())
    baseline = s.hwm_kb()
    expect_status("server plain txt2img", st, body, [200], "a 64x64 job")
    # BASIC auth: the scheme is case-insensitive; no or wrong credentials are refused
    token = base64.b64encode(":".join(AUTH).encode()).decode()
    st, body = s.req("GET", "/sdapi/v1/options", headers={"Authorization": f"BASIC {token}"})
    expect_status("Authorization: BASIC (upper case)", st, body, [200], "GET /options")
    st, body = s.req("GET", "/sdapi/v1/options", headers={"Authorization": None})
    expect_status("no credentials", st, body, [401], "GET /options")
    # cross-site writes
    opt = {"CLIP_stop_at_last_layers": 2}
    st, body = s.req("POST", "/sdapi/v1/options", json.dumps(opt).encode(),
                     headers={"Content-Type": "text/plain"})
    expect_status("cross-site POST as text/plain", st, body, [415], "POST /options")
    st, body = s.req("POST", "/sdapi/v1/txt2img", txt2img_body(),
                     headers={"Origin": "http://evil.example"})
    expect_status("cross-site POST with a foreign Origin", st, body, [403], "POST /txt2img")
    st, body = s.req("POST", "/sdapi/v1/options", opt, headers={"Host": "evil.example"})
    expect_status("DNS rebinding (foreign Host)", st, body, [421], "POST /options")
    # /options key flood
    st, body = s.req("POST", "/sdapi/v1/options", {"k" * 1_000_000: 1})
    expect_status("/options unknown 1 MB key", st, body, [413, 422], "POST /options")
    st, body = s.req("POST", "/sdapi/v1/options", {"sd_vae": "v" * (40 << 20)})
    expect_status("/options 40 MB value", st, body, [413, 422], "POST /options")
    # a crafted embedding used in a prompt fails (at most) that job
    st, body = s.req("POST", "/sdapi/v1/txt2img", txt2img_body("a boom cat"))
    expect_status("memo-bomb embedding in a prompt", st, body, [200, 400, 422, 500],
                  "POST /txt2img")
    st, body = s.req("POST", "/sdapi/v1/txt2img", txt2img_body("a wrap cat"))
    expect_status("overflowing embedding in a prompt", st, body, [200, 400, 422, 500],
                  "POST /txt2img")
    # a bad checkpoint switch, then a good job
    st, body = s.req("GET", "/sdapi/v1/sd-models")
    titles = [m.get("title", "") for m in json.loads(body)] if st == 200 else []
    bad = next((t for t in titles if "bad.ckpt" in t), "bad.ckpt")
    st, body = s.req("POST", "/sdapi/v1/options", {"sd_model_checkpoint": bad})
    st2, body2 = s.req("POST", "/sdapi/v1/txt2img", txt2img_body())
    rst, _ = s.req("GET", "/ready")
    ok = st is not None and st >= 400 and st2 == 200 and rst == 200
    report("bad checkpoint switch, then a good job", ok,
           f"switch HTTP {st}, next job HTTP {st2}, /ready {rst}",
           "hang" if None in (st, st2) else None)
    server_prompt_probes(s)
    server_image_probes(s)
    # a job after everything, then SIGTERM
    st, body = s.req("POST", "/sdapi/v1/txt2img", txt2img_body())
    expect_status("server still serving after the probes", st, body, [200], "a 64x64 job")
    lt.join()
    c = loris[0] if loris else [None, None]
    report("slow-loris and idle connections closed", None not in c,
           f"idle closed after {fmt_s(c[0])}, slow headers closed after {fmt_s(c[1])} "
           "(limit 60 s)",
           "hang")
    peak = s.hwm_kb()
    peaks["server"] = peak
    left = os.listdir(f"{d}/srvtmp")
    report("uploads leave no files in TMPDIR", not left, f"{len(left)} files left: {left[:3]}")
    alive = s.alive()
    rc = s.stop()
    report("server survives and stops on SIGTERM", alive and rc == 0,
           f"alive {alive}, exit {rc}", "abort" if not alive else "hang")
    fifo_server_probe(sumi, d, model)
    return peak - baseline, baseline


def server_prompt_probes(s):
    long_prompt = " ".join(f"word{i}" for i in range(5000))[:40_000]
    done = []
    t = threading.Thread(target=lambda: done.append(s.req(
        "POST", "/sdapi/v1/txt2img", txt2img_body(long_prompt, steps=150))))
    t.start()
    time.sleep(0.5)
    t_int = time.monotonic()
    ist, _ = s.req("POST", "/sdapi/v1/interrupt", b"{}")
    t.join(60)
    after = time.monotonic() - t_int
    st = done[0][0] if done else None
    report("40 KB prompt, interrupted", st == 200 and after < 10,
           f"/interrupt HTTP {ist}, job HTTP {st} {after:.1f} s after it", "hang")
    st, body = s.req("POST", "/sdapi/v1/txt2img", txt2img_body("a" * 70_000))
    expect_status("70 KB prompt (over the limit)", st, body, [400, 413, 422], "POST /txt2img")


def server_image_probes(s):
    cut = png_bytes(64, 64)
    body = {"init_images": [base64.b64encode(cut[: len(cut) // 2]).decode()],
            "prompt": "x", "steps": 2, "width": 64, "height": 64}
    st, b = s.req("POST", "/sdapi/v1/img2img", body)
    expect_status("truncated PNG upload", st, b, [400, 422], "POST /img2img")
    # six concurrent uploads of an 8192x8192 RGBA16 PNG (512 MiB decoded each)
    huge = base64.b64encode(png_bytes(8192, 8192, rgba16=True)).decode()
    body = json.dumps({"init_images": [huge], "prompt": "x", "steps": 2, "width": 64,
                       "height": 64}).encode()
    before = s.hwm_kb()
    got = []
    ts = [threading.Thread(target=lambda: got.append(s.req("POST", "/sdapi/v1/img2img", body,
                                                           timeout=120)[0]))
          for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    grew = (s.hwm_kb() - before) // 1024
    ok = None not in got and all(g < 500 for g in got) and grew < 1024
    report("six concurrent 8192x8192 RGBA16 uploads", ok,
           f"HTTP {sorted(got, key=str)}, peak RSS grew {grew} MiB (limit 1024)",
           "hang" if None in got else None)


def fifo_server_probe(sumi, d, model):
    os.mkfifo(f"{d}/serve_fifo.safetensors")
    s = Server(sumi, ["--model", f"{d}/serve_fifo.safetensors"], d, auth=False)
    try:
        rc = s.p.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    s.stop(timeout=2)
    report("FIFO as sumi serve --model", rc == 2, f"exit {rc} (None: still waiting after 15 s)",
           "hang")
    os.makedirs(f"{d}/models_fifo")
    os.link(model, f"{d}/models_fifo/good.safetensors")
    os.mkfifo(f"{d}/models_fifo/trap.safetensors")
    s = Server(sumi, ["--model", model, "--models-dir", f"{d}/models_fifo"], d, auth=False)
    if not s.wait_ready(30):
        report("FIFO in --models-dir", False, "server not ready within 30 s", "hang")
        s.stop()
        return
    st, body = s.req("GET", "/sdapi/v1/sd-models", timeout=15)
    st2, body2 = s.req("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "trap.safetensors"},
                       timeout=15)
    ok = st == 200 and st2 is not None and st2 >= 400 and s.alive()
    report("FIFO in --models-dir", ok, f"listing HTTP {st}, switching to it HTTP {st2}",
           "hang" if None in (st, st2) else None)
    s.stop()


# ---------------------------------------------------------------- main


def main():
    sumi = os.path.abspath(sys.argv[1] if len(sys.argv) > 1
                           else os.path.join(ROOT, "target/release/sumi"))
    if not os.access(sumi, os.X_OK):
        raise SystemExit(f"{sumi}: no sumi binary (build it first)")
    t0 = time.monotonic()
    d = tempfile.mkdtemp(prefix="sumi-probe-")
    try:
        model = f"{d}/tiny.safetensors"
        materialize_tiny(model)
        plain = run_cli(sumi, ["txt2img", "--model", model] + FAST + ["--output",
                                                                     f"{d}/plain.png"])
        if plain["rc"] != 0:
            raise SystemExit(f"a plain run fails: {plain['err']}")
        base = plain["peak"]
        cli_probes(sumi, d, model)
        server = server_probes(sumi, d, model)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    worst = max(peaks.items(), key=lambda kv: kv[1] if kv[0] != "server" else 0)
    cli_over = worst[1] - base
    mem_ok = cli_over < GIB_KB and (server is None or server[0] < GIB_KB)
    report("peak RSS within 1 GiB of a plain run", mem_ok,
           f"CLI: worst {worst[1] // 1024} MiB ({worst[0]}) - plain {base // 1024} MiB = "
           f"{cli_over // 1024} MiB; server: peak - after a plain job = "
           f"{server[0] // 1024 if server else '?'} MiB", "wrong")
    held = sum(1 for r in results if r[0])
    count = {k: sum(1 for r in results if r[1] == k) for k in ("panic", "abort", "hang", "wrong")}
    print(f"{held}/{len(results)} probes hold (panics {count['panic']}, aborts {count['abort']}, "
          f"hangs {count['hang']}, wrong answers {count['wrong']}) in "
          f"{time.monotonic() - t0:.0f} s; max peak RSS over a plain run: "
          f"{max(cli_over, server[0] if server else 0) // 1024} MiB")
    sys.exit(0 if held == len(results) else 1)


if __name__ == "__main__":
    main()
