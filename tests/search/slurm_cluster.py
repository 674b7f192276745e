"""A single-node SLURM cluster on loopback for the `servers` tests: munged, slurmctld and slurmd
from the distribution's packages (Debian: slurm-wlm, munge), configured for a container (no
cgroups, no accounting), with the machine's CPUs as its slots. ``SLURM_CONF`` points the client
commands (sbatch, squeue, scancel) at it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Cluster", "installed"]

DAEMONS = ("munged", "slurmctld", "slurmd")


def installed() -> bool:
    return all(shutil.which(d, path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")) for d in DAEMONS) \
        and shutil.which("sbatch") is not None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


CONF = """ClusterName=archsearch
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=30
MinJobAge=3600
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


class Cluster:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` holds SLURM_CONF for the clients."""

    def __init__(self, cpus: int = 2):
        self.root = Path(tempfile.mkdtemp(prefix="archsearch-slurm-"))
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: list[subprocess.Popen] = []
        self.munge_socket = self.root / "munge" / "munge.socket.2"

    def start(self, timeout: float = 60) -> None:
        for d in ("state", "spool", "munge"):
            (self.root / d).mkdir()
        ctld_port, d_port = _free_ports(2)
        self.conf.write_text(CONF.format(host=self.host, ctld_port=ctld_port, d_port=d_port, root=self.root,
                                         cpus=self.cpus))
        self._start_munge()
        # the daemons and the clients find munge's socket through the default path unless told:
        # the cluster's own munged listens on /run/munge (the one a client library knows)
        for exe in ("slurmctld", "slurmd"):
            log = open(self.root / f"{exe}.out", "w")
            self.procs.append(subprocess.Popen([f"/usr/sbin/{exe}", "-D", "-f", str(self.conf)], env=self.env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        end = time.time() + timeout
        while time.time() < end:
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("the SLURM cluster did not come up: " + self.logs())

    def _start_munge(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["/usr/sbin/mungekey", "--create"], check=True, capture_output=True)
            shutil.chown(key, "munge", "munge")
        run = Path("/run/munge")
        run.mkdir(exist_ok=True)
        shutil.chown(run, "munge", "munge")
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return  # a munged is already serving this machine
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"], check=True,
                       capture_output=True, timeout=30)
        self.started_munge = True

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.root.glob("*.log"))
                         if p.exists())

    def run(self, *cmd: str, check: bool = True) -> str:
        r = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r.stdout

    def sbatch(self, *args: str, cwd: Path, env: dict | None = None) -> str:
        """-> the job id."""
        r = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env={**self.env, **(env or {})},
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def jobs(self, job: str | None = None) -> list[tuple[str, str]]:
        """(job id, state) of the jobs in the queue (all, or ``job``'s tasks)."""
        out = self.run("squeue", "-h", "-o", "%i %T", *(["-j", job] if job else []), check=False)
        return [tuple(line.split()[:2]) for line in out.splitlines() if line.strip()]

    def wait(self, job: str | None = None, timeout: float = 600) -> bool:
        """Until the queue holds none of ``job``'s tasks (or no job at all): False on timeout."""
        end = time.time() + timeout
        while time.time() < end:
            if not self.jobs(job):
                return True
            time.sleep(1)
        return False

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if getattr(self, "started_munge", False):
            pid = Path("/run/munge/munged.pid")
            if pid.exists():
                try:
                    os.kill(int(pid.read_text().split()[0]), 15)
                except (ValueError, OSError):
                    pass
        shutil.rmtree(self.root, ignore_errors=True)
