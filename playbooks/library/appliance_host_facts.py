#!/usr/bin/python
"""Read-only facts the preflight needs that Ansible's setup module does not give."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: appliance_host_facts
short_description: Disk free under a path, NVIDIA driver and GPUs, and time sync status
description:
  - Reads, never changes. Used by the appliance preflight role and verify.yml.
  - Disk free is measured on the nearest existing directory above O(path), so it works
    before the appliance directories exist.
  - GPUs come from nvidia-smi, else from NVML (nvidia-ml-py) when the host has it, else the
    kernel's /proc/driver/nvidia/version says only whether a driver is loaded.
options:
  path:
    description: Directory whose filesystem must hold the appliance.
    type: path
    required: true
author:
  - Clinical appliance team
"""

EXAMPLES = r"""
- name: Read host facts
  appliance_host_facts:
    path: /
"""

RETURN = r"""
disk_free_bytes:
  description: Bytes available to unprivileged users on the filesystem holding O(path).
  type: int
  returned: always
disk_path:
  description: The existing directory that was measured.
  type: str
  returned: always
nvidia:
  description: driver_found, driver_version, gpus (name, memory_total_mib), source.
  type: dict
  returned: always
time_sync:
  description: state (synchronized, unsynchronized or unknown) and detail.
  type: dict
  returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule


def nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def read_nvidia(module):
    smi = module.get_bin_path("nvidia-smi")
    if smi:
        rc, out, err = module.run_command(
            [smi, "--query-gpu=name,memory.total,driver_version",
             "--format=csv,noheader,nounits"])
        if rc == 0:
            gpus, driver = [], None
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 3:
                    gpus.append({"name": parts[0], "memory_total_mib": int(float(parts[1]))})
                    driver = parts[2]
            return {"driver_found": True, "driver_version": driver, "gpus": gpus,
                    "source": "nvidia-smi"}
        return {"driver_found": False, "driver_version": None, "gpus": [],
                "source": "nvidia-smi", "error": (err or out).strip()[:300]}
    try:
        import pynvml  # the appliance's own reader uses nvidia-ml-py as well
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                count = pynvml.nvmlDeviceGetCount()
                gpus = []
                for i in range(count):
                    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                    name = pynvml.nvmlDeviceGetName(handle)
                    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                    gpus.append({"name": name if isinstance(name, str) else name.decode(),
                                 "memory_total_mib": int(mem.total // (1024 * 1024))})
                version = pynvml.nvmlSystemGetDriverVersion()
                return {"driver_found": True, "gpus": gpus, "source": "nvml",
                        "driver_version": version if isinstance(version, str)
                        else version.decode()}
            finally:
                pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    if os.path.exists("/proc/driver/nvidia/version"):
        return {"driver_found": True, "driver_version": None, "gpus": [],
                "source": "/proc/driver/nvidia/version"}
    return {"driver_found": False, "driver_version": None, "gpus": [], "source": "none"}


def read_time_sync(module):
    timedatectl = module.get_bin_path("timedatectl")
    if timedatectl:
        rc, out, err = module.run_command([timedatectl, "show", "-p", "NTPSynchronized",
                                           "--value"])
        if rc == 0 and out.strip() in ("yes", "no"):
            return {"state": "synchronized" if out.strip() == "yes" else "unsynchronized",
                    "detail": "timedatectl NTPSynchronized=" + out.strip()}
    chronyc = module.get_bin_path("chronyc")
    if chronyc:
        rc, out, err = module.run_command([chronyc, "-n", "tracking"])
        if rc == 0:
            synced = "Not synchronised" not in out
            return {"state": "synchronized" if synced else "unsynchronized",
                    "detail": "chronyc tracking"}
    return {"state": "unknown", "detail": "neither timedatectl nor chronyc answered"}


def main():
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True}},
                           supports_check_mode=True)
    where = nearest_existing(module.params["path"])
    st = os.statvfs(where)
    module.exit_json(changed=False, disk_path=where, disk_free_bytes=st.f_bavail * st.f_frsize,
                     nvidia=read_nvidia(module), time_sync=read_time_sync(module))


if __name__ == "__main__":
    main()
