#!/usr/bin/env python
"""The clock the cores run at, measured: the peak FLOP/s of a plot or a
table needs it, and virtual machines report their base clock (2.45 GHz on
the Zen 3 machines here) while the cores run boosted (about 3.1 GHz).

A chain of dependent integer adds retires one add per cycle on every x86
core since the Pentium Pro, so adds / second is the clock.  The chain is
compiled with the system's C compiler into a temporary directory; without
one (or off x86-64) ``measure_ghz`` returns None and the caller falls back
to the clock the OS reports.

    python benches/clock.py          # prints the median of 9 measurements
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile

SOURCE = r"""
#include <stdio.h>
#include <stdint.h>
#include <time.h>
#define A2 "add $1, %%rax\n\tadd $1, %%rax\n\t"
#define A10 A2 A2 A2 A2 A2
#define A100 A10 A10 A10 A10 A10 A10 A10 A10 A10 A10
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 9;
    for (int r = 0; r < rounds; r++) {
        uint64_t n = 4000000;           /* x 100 adds: ~0.13 s at 3 GHz */
        double t0 = now();
        __asm__ volatile("mov %0, %%rcx\n\txor %%rax, %%rax\n"
                         "1:\n\t" A100 "dec %%rcx\n\tjnz 1b\n"
                         : : "r"(n) : "rcx", "rax", "cc");
        printf("%.4f\n", n * 100 / (now() - t0) / 1e9);
    }
    return 0;
}
"""


def measure_ghz(rounds=9):
    """Median clock in GHz over ``rounds`` runs of the add chain, or None
    when it cannot be measured here."""
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "clock.c")
        exe = os.path.join(tmp, "clock")
        with open(src, "w") as f:
            f.write(SOURCE.replace("#include <time.h>",
                                   "#include <time.h>\n#include <stdlib.h>"))
        try:
            subprocess.run([cc, "-O1", src, "-o", exe], check=True,
                           capture_output=True, timeout=60)
            out = subprocess.run([exe, str(rounds)], check=True,
                                 capture_output=True, text=True,
                                 timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            return None
    values = [float(v) for v in out.split()]
    return statistics.median(values) if values else None


if __name__ == "__main__":
    ghz = measure_ghz()
    if ghz is None:
        sys.exit("cannot measure the clock here (needs x86-64 and a C "
                 "compiler)")
    print(f"{ghz:.2f} GHz (median of 9 chains of dependent adds)")
