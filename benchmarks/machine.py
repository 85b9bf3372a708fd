"""The CPU a benchmark ran on, named so that two machines sold under one name can be told apart.

Cloud machines often report only a brand ("AMD EPYC"), yet this project's speed-ups differ by
CPU generation (see the README's Speed section: bf16 matmuls pay only with AVX512-BF16 or AMX),
so the name carries the CPU's family and model and the instruction sets its matmuls depend on.
"""

import os
import platform
import subprocess

# (flag in /proc/cpuinfo, name in the description): what decides oneDNN's matmul kernels here.
MATMUL_FLAGS = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                ("amx_bf16", "AMX-BF16")]


def describe_cpu(cpuinfo):
    """The first processor of a /proc/cpuinfo text, e.g. "AMD EPYC (family 25, model 1; AVX2)".

    Returns None when the text names no model (ARM's /proc/cpuinfo has none).
    """
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:  # the first processor's block has ended
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if not name:
        return None
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"family {fields['cpu family']}, model {fields['model']}")
    if "flags" in fields:
        flags = set(fields["flags"].split())
        details.append(", ".join(label for flag, label in MATMUL_FLAGS if flag in flags)
                       or "no AVX2")
    return f"{name} ({'; '.join(details)})" if details else name


def cpu_name():
    """This machine's CPU: `describe_cpu` of /proc/cpuinfo, else lscpu's "Model name", else the
    platform's processor."""
    try:
        with open("/proc/cpuinfo") as f:
            described = describe_cpu(f.read())
        if described:
            return described
    except OSError:
        pass
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                                env={**os.environ, "LC_ALL": "C"}).stdout
        for line in output.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"
