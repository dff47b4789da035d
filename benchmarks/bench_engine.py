"""Benchmark: `privpix blur --detect faces` over a folder on each engine and worker count.

Configurations (``--configs``, comma separated):

* ``seq``: ``--engine local``, one worker, stages back to back (``PRIVPIX_PIPELINE=0``: the engine before
  pipelining);
* ``local1``: ``--engine local --workers 1``, decode / inference / encode pipelined;
* ``local2``: ``--engine local --workers 2`` (two images inferred at once in threads, decode and encode
  pipelined around them: what the default ``--workers`` auto picks for blur on 2+ cores);
* ``ray1`` / ``ray2``: ``--engine ray --workers 1|2`` (decode and encode in Ray Data CPU tasks, detection
  and the method in the model actors: the default);
* ``ray1-actor`` / ``ray2-actor``: the same with ``PRIVPIX_RAY_STAGES=0``: each actor decodes, infers and
  encodes itself (pipelined in threads), the design before the stages were split.

Each run is one fresh `privpix` process (what a user runs), timed end to end, so start-up is included
(for Ray: joining the cluster, starting actors, each actor loading the detector, moving tasks and rows).
By default (``--ray-cluster shared``) the benchmark starts one local Ray cluster (``--num-cpus``, default:
all cores) before the runs, reports how long that took, and the ray runs join it; ``per-run`` leaves
RAY_ADDRESS unset so each ray run starts (and pays for) its own cluster.

CPU seconds are user + system time: of the `privpix` process and its reaped descendants
(``RUSAGE_CHILDREN``), plus, for ray runs on the benchmark's own cluster, the CPU every process of that
cluster used during the run (raylet, GCS, every worker and actor of the job, sampled with psutil:
:class:`TreeCPU`). On another cluster (``RAY_ADDRESS``) it adds instead each Ray worker process's CPU as
the manifest rows report it (``worker_cpu_s`` of the model actor, ``decode_worker_cpu_s`` / ``encode_worker_cpu_s`` of the
CPU-stage task workers: each process's whole life, start-up and model loading included; each process
counted once; daemons and workers that wrote no row are missed). Configurations alternate
within each round (``--rounds``), so a changing load on a shared machine hits them alike; the table gives
the median per configuration. Every run must write the same bytes as the first configuration's. The load
average is printed before and after.

Run:  python benchmarks/bench_engine.py [FOLDER] [--limit N] [--rounds 2] [--configs seq,local1,local2,ray1,ray2]
      [--ray-cluster shared|per-run] [--num-cpus N]
(default FOLDER: ../shared/datasets/faces-id). Prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "datasets" / "faces-id"
CONFIGS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "seq": ("local, 1 worker, not pipelined", ["--workers", "1"], {"PRIVPIX_PIPELINE": "0"}),
    "local1": ("local, 1 worker, pipelined", ["--workers", "1"], {}),
    "local2": ("local, 2 workers, pipelined", ["--workers", "2"], {}),
    "ray1": ("ray, 1 worker", ["--engine", "ray", "--workers", "1"], {}),
    "ray2": ("ray, 2 workers", ["--engine", "ray", "--workers", "2"], {}),
    "ray1-actor": (
        "ray, 1 worker, in-actor",
        ["--engine", "ray", "--workers", "1"],
        {"PRIVPIX_RAY_STAGES": "0"},
    ),
    "ray2-actor": (
        "ray, 2 workers, in-actor",
        ["--engine", "ray", "--workers", "2"],
        {"PRIVPIX_RAY_STAGES": "0"},
    ),
}


class TreeCPU:
    """CPU seconds (user + system) this process's descendants other than ``exclude`` used while it ran:
    with the benchmark's own cluster, every Ray process (raylet, GCS, the job's workers and actors,
    including any that produced no manifest row). Sampled with psutil every 0.2 s, so a process that
    exits loses at most its last 0.2 s."""

    def __init__(self) -> None:
        import threading

        self.base = self._snapshot()
        self.last = dict(self.base)
        self.exclude: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _snapshot() -> dict[tuple[int, float], float]:
        import psutil

        out = {}
        for p in psutil.Process().children(recursive=True):
            try:
                t = p.cpu_times()
                out[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.last.update(self._snapshot())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.last.update(self._snapshot())
        return sum(v - self.base.get(k, 0.0) for k, v in self.last.items() if k[0] != self.exclude)


def run(cmd: list[str], env: dict[str, str], tree: bool) -> tuple[float, float, int, str, float | None]:
    """Run ``cmd``; return (wall s, CPU s of it and its reaped descendants, exit code, stderr tail, CPU s
    of this process's other descendants meanwhile (``tree``: the benchmark's Ray cluster) or None)."""
    sampler = TreeCPU() if tree else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if sampler is not None:
        sampler.exclude = p.pid
    _, stderr = p.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.returncode, stderr[-1500:], None if sampler is None else sampler.stop()


def workers_cpu(manifest: Path) -> float:
    """CPU seconds of the Ray worker processes of a run (model actors and CPU-stage task workers): each
    process's largest CPU reading in the manifest, summed."""
    import json

    last: dict[str, float] = {}
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        for stage in ("", "decode_", "encode_"):
            who, cpu = row.get(f"{stage}worker"), row.get(f"{stage}worker_cpu_s")
            if who is not None and cpu is not None:
                last[who] = max(last.get(who, 0.0), cpu)
    return sum(last.values())


def start_cluster(num_cpus: int) -> tuple[str, float]:
    """Start a local Ray cluster in this process (its processes are our children, so they stop with it);
    returns (address for RAY_ADDRESS, seconds it took). Retried twice: on a saturated machine Ray's
    agents can miss their 15 s start-up deadline."""
    from privacy_cli.engines.ray import _import_ray

    ray = _import_ray()
    for attempt in range(3):
        t0 = time.perf_counter()
        try:
            ctx = ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return ctx.address_info["gcs_address"], time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - Ray raises bare Exceptions for start-up timeouts
            ray.shutdown()
            if attempt == 2:
                sys.exit(f"could not start a local Ray cluster: {e}")
    raise AssertionError


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (median reported)")
    ap.add_argument("--configs", default="seq,local1,local2,ray1,ray2", help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--batch-size", type=int, default=8, help="--batch-size of the ray runs")
    ap.add_argument("--ray-cluster", choices=("shared", "per-run"), default="shared")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the shared cluster")
    args = ap.parse_args()
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        sys.exit(f"unknown configs {unknown}; use {', '.join(CONFIGS)}")

    photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.limit:
        photos = photos[: args.limit]
    exe = [sys.executable, "-c", "from privacy_cli.cli.app import main; main()"]
    load_before = os.getloadavg()
    address, started = os.environ.get("RAY_ADDRESS"), None
    if address is None and args.ray_cluster == "shared" and any(c.startswith("ray") for c in names):
        address, started = start_cluster(args.num_cpus)
    times: dict[str, list[tuple[float, float]]] = {c: [] for c in names}
    same: dict[str, bool] = {c: True for c in names}
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "in")
        src.mkdir()
        for p in photos:
            shutil.copy(p, src / p.name)
        reference = None
        for rnd in range(args.rounds):
            for c in names:
                _, extra, env_extra = CONFIGS[c]
                if c.startswith("ray"):
                    extra = [*extra, "--batch-size", str(args.batch_size)]
                out = Path(d, f"{c}-{rnd}")
                cmd = [*exe, "blur", str(src), "-o", str(out), "--detect", "faces", "--quiet", *extra]
                env = {**os.environ, **env_extra}
                if c.startswith("ray") and address:
                    env["RAY_ADDRESS"] = address
                wall, cpu, code, err, ray_cpu = run(cmd, env, c.startswith("ray") and started is not None)
                if c.startswith("ray"):
                    rows_cpu = workers_cpu(out / "privpix-blur.manifest.jsonl")
                    print(
                        f"  {c}: Ray workers per manifest {rows_cpu:.1f} s, all Ray processes {ray_cpu} s",
                        file=sys.stderr,
                    )
                    cpu += rows_cpu if ray_cpu is None else ray_cpu
                got = outputs(out)
                if code != 0 or len(got) != len(photos):
                    sys.exit(f"{c}: exit {code}, {len(got)}/{len(photos)} outputs\n{err}")
                reference = reference or got
                same[c] &= got == reference
                times[c].append((wall, cpu))
                shutil.rmtree(out)
                print(f"round {rnd + 1} {c}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(
        f"{len(photos)} photos from {args.folder}; {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {args.rounds} alternating round(s), medians; load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_before)} before, {'/'.join(f'{x:.1f}' for x in load_after)} after; "
        + (
            f"ray runs joined a {args.num_cpus}-CPU local cluster started by the benchmark in {started:.1f} s"
            if started is not None
            else f"RAY_ADDRESS={address or '(a local cluster per ray run)'}"
        )
        + "\n"
    )
    base = statistics.median(w for w, _ in times[names[0]])
    base_cpu = statistics.median(c for _, c in times[names[0]])
    print(
        "| configuration | wall s | photos/s | CPU s | CPU s/photo | wall vs first | CPU vs first | bytes equal |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for c in names:
        wall = statistics.median(w for w, _ in times[c])
        cpu = statistics.median(x for _, x in times[c])
        print(
            f"| {CONFIGS[c][0]} | {wall:.1f} | {len(photos) / wall:.2f} | {cpu:.1f} | {cpu / len(photos):.3f} "
            f"| {wall / base:.2f}x | {cpu / base_cpu:.2f}x | {'yes' if same[c] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
