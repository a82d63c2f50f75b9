#!/usr/bin/env python3
"""LoRA apply/switch cost on the full-size random SD1.5 (issue 15, acceptance 3). Stdlib + numpy.

  lora_switch.py make-loras SD15_DIR OUT_DIR
      two rank-32 kohya-style LoRA files (lora_a, lora_b; f16, random small values) over every
      layer SD1 LoRAs usually touch: the U-Net's attention linears (to_q/k/v, to_out.0,
      proj_in/out, ff.net.0.proj, ff.net.2), its resnet convs (conv1/conv2 3x3, LoCon style:
      lora_down 3x3, lora_up 1x1) and the text encoder's q/k/v/out_proj, fc1/fc2. Shapes are read
      from the diffusers folder make_full_sd15.py writes beside the checkpoint.
  lora_switch.py serve SUMI CKPT LORA_DIR PRECISION
      starts `SUMI serve` on a free loopback port and times, through the HTTP API:
      (a) a 20-step 512x512 txt2img job without LoRA (the reference), (b) a 1-step job with
      LoRA A (first apply), (c) A again (no rebuild), (d) LoRA B (switch), (d2) B again,
      (e) no LoRA (restore), (e2) none again; the server's VmHWM after (a) and after (e2).
  lora_switch.py cli SUMI CKPT LORA_DIR PRECISION OUT_DIR
      `SUMI txt2img`, 1 step, without and with LoRA A (twice each), each a whole process.
  lora_switch.py rss SUMI CKPT LORA_DIR PRECISION
      as serve, 1-step jobs only: none, A, B, none (memory after each network change).
  lora_switch.py report SERVE_JSON CLI_JSON
      the BENCH lines (lora_switch.sh).

SERVER_LOG=FILE keeps the server's output; PERF_DATA=FILE records `perf record -g` of the server during job PERF_JOB (default d, the switch).

Each measurement prints the CPU other processes used meanwhile (from /proc/stat, less this
benchmark's own processes), in % of one core: a busy neighbour makes a number meaningless.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

RANK = 32
ALPHA = 16.0
PROMPT = "a watercolor painting of a lighthouse at dusk"
HZ = os.sysconf("SC_CLK_TCK")


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def save_st(path, tensors):
    """A safetensors file of f16 numpy arrays (keys sorted, so reruns are byte-identical)."""
    header, offset, blobs = {}, 0, []
    for k in sorted(tensors):
        b = np.ascontiguousarray(tensors[k], dtype="<f2").tobytes()
        header[k] = {"dtype": "F16", "shape": list(tensors[k].shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


UNET_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
TE_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def targets(sd15):
    """(kohya name, weight shape) of every layer the LoRAs touch."""
    out = []
    unet = st_header(os.path.join(sd15, "diffusers/unet/diffusion_pytorch_model.safetensors"))
    for k, v in sorted(unet.items()):
        if k == "__metadata__" or not k.endswith(".weight"):
            continue
        m = k[: -len(".weight")]
        attn = ".attentions." in m and (m.endswith((".proj_in", ".proj_out")) or m.endswith(UNET_LINEARS))
        conv = ".resnets." in m and m.endswith((".conv1", ".conv2"))
        if attn or conv:
            out.append(("lora_unet_" + m.replace(".", "_"), v["shape"]))
    te = st_header(os.path.join(sd15, "diffusers/text_encoder/model.safetensors"))
    for k, v in sorted(te.items()):
        if k.startswith("text_model.encoder.layers.") and k.endswith(tuple(t + ".weight" for t in TE_LAYERS)):
            out.append(("lora_te_" + k[: -len(".weight")].replace(".", "_"), v["shape"]))
    return out


def make_lora(tg, seed):
    rng = np.random.default_rng(seed)
    sd = {}
    for base, shape in tg:
        out_f, in_f, kernel = shape[0], shape[1], shape[2:]
        # down ~ 1/sqrt(fan_in), up small: the merged delta is a few % of a 0.02-std weight
        fan_in = in_f * int(np.prod(kernel)) if kernel else in_f
        down = rng.standard_normal((RANK, in_f, *kernel), dtype=np.float32) / np.sqrt(fan_in)
        up = rng.standard_normal((out_f, RANK, *([1] * len(kernel))), dtype=np.float32) * 1e-3
        sd[base + ".lora_down.weight"] = down
        sd[base + ".lora_up.weight"] = up
        sd[base + ".alpha"] = np.array(ALPHA, dtype=np.float32)
    return sd


def make_loras(sd15, out):
    os.makedirs(out, exist_ok=True)
    tg = targets(sd15)
    kinds = {"unet attention": 0, "unet resnet conv": 0, "text encoder": 0}
    for base, _ in tg:
        kinds["text encoder" if base.startswith("lora_te_") else
              "unet resnet conv" if "_resnets_" in base else "unet attention"] += 1
    for name, seed in (("lora_a", 1), ("lora_b", 2)):
        path = os.path.join(out, name + ".safetensors")
        if not os.path.exists(path):
            save_st(path, make_lora(tg, seed))
        print(f"{path}: {len(tg)} layers ({kinds}), rank {RANK}, alpha {ALPHA}, "
              f"{os.path.getsize(path) / 2**20:.0f} MiB", file=sys.stderr)


# ---------------------------------------------------------------- measurement helpers

def machine_busy():
    with open("/proc/stat") as f:
        v = f.readline().split()[1:]
    return sum(int(v[i]) for i in (0, 1, 2, 5, 6))  # user nice system irq softirq


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])  # utime stime


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    raise RuntimeError(f"no {field} for {pid}")


class Meter:
    """Wall time and the CPU other processes used during it (% of one core)."""

    def __init__(self, own_cpu):
        self.own_cpu = own_cpu  # -> jiffies used by the processes being measured (and us)

    def __enter__(self):
        self.t0, self.b0, self.o0 = time.monotonic(), machine_busy(), self.own_cpu()
        self.own_s = 0.0
        self.s0 = os.times()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        s1 = os.times()
        me = (s1.user + s1.system - self.s0.user - self.s0.system) * HZ
        own = self.own_cpu() - self.o0
        self.own_s = own / HZ
        other = (machine_busy() - self.b0) - own - me
        self.other_pct = max(0.0, other / HZ / max(self.wall, 1e-9) * 100)


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/sdapi/v1/txt2img", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def job(steps, lora):
    tag = f" <lora:{lora}:1>" if lora else ""
    return {"prompt": PROMPT + tag, "negative_prompt": "blurry", "steps": steps, "width": 512, "height": 512,
            "seed": 1, "sampler_name": "DPM++ 2M", "cfg_scale": 7, "batch_size": 1, "n_iter": 1}


PLANS = {
    # REF_STEPS: fewer steps for the reference job while iterating (RSS does not depend on steps;
    # the ratios are only meaningful with the default 20)
    "serve": [("a", int(os.environ.get("REF_STEPS", "20")), None), ("b", 1, "lora_a"), ("c", 1, "lora_a"), ("d", 1, "lora_b"), ("d2", 1, "lora_b"),
              ("e", 1, None), ("e2", 1, None)],
    # memory only: 1-step jobs alternating networks, VmHWM/RssAnon after each
    "rss": [("none", 1, None), ("a", 1, "lora_a"), ("b", 1, "lora_b"), ("none2", 1, None)],
}


def serve(sumi, ckpt, lora_dir, precision, plan="serve"):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.environ["SERVER_LOG"], "wb") if os.environ.get("SERVER_LOG") else tempfile.TemporaryFile()
    t0 = time.monotonic()
    srv = subprocess.Popen([sumi, "serve", "--model", ckpt, "--lora-dir", lora_dir, "--precision", precision,
                            "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if srv.poll() is not None:
                log.seek(0)
                sys.exit(f"sumi serve exited {srv.returncode}: {log.read().decode(errors='replace')}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/sdapi/v1/loras", timeout=5).read()
                break
            except OSError:
                time.sleep(0.5)
        print(f"server up in {time.monotonic() - t0:.1f} s, RSS {vm(srv.pid, 'VmRSS') >> 10} MiB", file=sys.stderr)
        res = {}
        for key, steps, lora in PLANS[plan]:
            perf = None
            if os.environ.get("PERF_DATA") and key == os.environ.get("PERF_JOB", "d"):  # optional profile
                perf = subprocess.Popen(["perf", "record", "-F", "199", "-g", "-p", str(srv.pid), "-o",
                                         os.environ["PERF_DATA"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with Meter(lambda: proc_cpu(srv.pid)) as m:
                r = post(port, job(steps, lora))
            if perf:
                perf.send_signal(2)
                perf.wait(timeout=120)
            info = json.loads(r["info"])
            hashes = "Lora hashes" in info.get("infotexts", [""])[0]
            res[key] = {"wall_s": round(m.wall, 2), "cpu_s": round(m.own_s, 2), "other_pct": round(m.other_pct),
                        "lora": lora, "steps": steps,
                        "warnings": info.get("warnings", []), "lora_hashes_in_infotext": hashes,
                        "vmhwm_kib": vm(srv.pid, "VmHWM"), "vmrss_kib": vm(srv.pid, "VmRSS"),
                        "rssanon_kib": vm(srv.pid, "RssAnon")}
            if bool(lora) != hashes or res[key]["warnings"]:
                print(f"WARNING job {key}: lora={lora} hashes in infotext={hashes} "
                      f"warnings={res[key]['warnings']}", file=sys.stderr)
            print(f"  job {key}: {json.dumps(res[key])}", file=sys.stderr)
        return res
    finally:
        srv.terminate()
        srv.wait(timeout=60)


def cli(sumi, ckpt, lora_dir, precision, out):
    res = {}
    for key, lora in (("cli_plain", None), ("cli_lora", "lora_a"), ("cli_plain2", None), ("cli_lora2", "lora_a")):
        png = os.path.join(out, key + ".png")
        if os.path.exists(png):
            os.remove(png)
        j = job(1, lora)
        cmd = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", os.path.join(out, "time.txt"), sumi, "txt2img",
               "--model", ckpt, "--lora-dir", lora_dir, "--precision", precision, "--prompt", j["prompt"],
               "--negative-prompt", j["negative_prompt"], "--steps", "1", "--seed", "1", "--width", "512",
               "--height", "512", "--quiet", "--output", png]
        b0, t0 = machine_busy(), time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if p.returncode:
            sys.exit(f"{key}: exit {p.returncode}\n{p.stderr}")
        e, u, s, rss = open(os.path.join(out, "time.txt")).read().split()[-4:]
        other = (machine_busy() - b0) - (float(u) + float(s)) * HZ
        res[key] = {"wall_s": float(e), "cpu_s": round(float(u) + float(s), 2),
                    "other_pct": round(max(0, other / HZ / wall * 100)),
                    "peak_rss_kib": int(rss), "stderr": p.stderr.strip()[-300:]}
        print(f"  {key}: {json.dumps(res[key])}", file=sys.stderr)
    return res


def report(s, c):
    """The BENCH lines of a serve and a cli run (their JSON)."""
    s, c = json.loads(s), json.loads(c)
    for k in "a b c d d2 e e2".split():
        j = s[k]
        print(f"  job {k}: {j['steps']} step(s) lora={j['lora']} {j['wall_s']:.2f} s, server CPU {j['cpu_s']:.1f} s, "
              f"other processes {j['other_pct']}% of a core, VmHWM {j['vmhwm_kib'] >> 10} MiB, "
              f"warnings {j['warnings']}")
    for unit, f in (("wall", "wall_s"), ("cpu", "cpu_s")):
        w = {k: v[f] for k, v in s.items()}
        ref = w["a"]
        for name, cost in (("apply", w["b"] - w["c"]), ("switch", w["d"] - w["c"]),
                           ("switch-vs-d2", w["d"] - w["d2"]), ("restore", w["e"] - w["e2"])):
            print(f"BENCH lora-{name}-{unit} {cost:.2f} s ratio={cost / ref:.3f} "
                  f"(of the {s['a']['steps']}-step job, {ref:.1f} s; limit 0.10 of a 20-step job)")
    a, e = s["a"]["vmhwm_kib"], s["e2"]["vmhwm_kib"]
    print(f"BENCH lora-rss vmhwm-after-a={a >> 10} MiB vmhwm-after-e2={e >> 10} MiB ratio={e / a:.3f} (limit < 1.10)")
    for k, v in c.items():
        print(f"  {k}: {v['wall_s']:.2f} s, CPU {v['cpu_s']:.1f} s, peak RSS {v['peak_rss_kib'] >> 10} MiB, "
              f"other processes {v['other_pct']}% of a core")
    for unit, f in (("wall", "wall_s"), ("cpu", "cpu_s")):
        plain = min(c["cli_plain"][f], c["cli_plain2"][f])
        lora = min(c["cli_lora"][f], c["cli_lora2"][f])
        print(f"BENCH lora-cli-{unit} plain={plain:.2f} s lora={lora:.2f} s apply={lora - plain:.2f} s (best of 2 each)")
    print(f"BENCH lora-cli-rss plain={c['cli_plain']['peak_rss_kib'] >> 10} MiB "
          f"lora={c['cli_lora']['peak_rss_kib'] >> 10} MiB")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-loras":
        make_loras(*args)
    elif cmd == "serve":
        print(json.dumps(serve(*args)))
    elif cmd == "rss":
        print(json.dumps(serve(*args, plan="rss")))
    elif cmd == "cli":
        print(json.dumps(cli(*args)))
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
