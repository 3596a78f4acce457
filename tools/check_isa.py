"""Check that a built fastlazy extension runs on any x86-64 CPU.

The wheel is compiled for the x86-64 baseline (SSE2); only the kernels
compiled with ``target("arch=x86-64-v3")`` / ``("arch=x86-64-v4")``
attributes -- functions whose names end in ``_v3`` or ``_v4`` -- may use AVX,
and they are called only after ``__builtin_cpu_supports`` said yes.  This
script disassembles the extension with ``objdump`` and fails if any other
function holds an AVX instruction: a VEX/EVEX-encoded one (mnemonic starting
with ``v``), a ymm/zmm register or an AVX-512 mask register.

Usage::

    python tools/check_isa.py [PATH]

PATH is the extension (``_plan*.so``), a wheel, or a directory to search;
without it, the ``fastlazy._plan`` that Python imports is checked.  Exit
status 0 when clean, 1 with a list of offending functions otherwise; on
other CPUs than x86-64 there is nothing to check (exit 0).
"""

import collections
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ALLOWED = re.compile(r"_v[34](\.|$)")     # target-attributed kernels (+clones)
FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")
AVX_REG = re.compile(r"%[yz]mm\d|%k[0-7]\b")


def find_extension(path):
    """The extension file for ``path`` (a .so, a wheel or a directory)."""
    if path is None:
        import fastlazy._plan
        return fastlazy._plan.__file__, None
    if path.endswith(".whl"):
        tmp = tempfile.mkdtemp(prefix="check-isa-")
        with zipfile.ZipFile(path) as whl:
            names = [n for n in whl.namelist()
                     if re.search(r"fastlazy/_plan[^/]*\.(so|pyd)$", n)]
            if len(names) != 1:
                sys.exit(f"{path}: expected one fastlazy/_plan extension, "
                         f"found {names}")
            return whl.extract(names[0], tmp), tmp
    if os.path.isdir(path):
        found = glob.glob(os.path.join(path, "**", "_plan*.so"),
                          recursive=True)
        if len(found) != 1:
            sys.exit(f"{path}: expected one _plan*.so, found {found}")
        return found[0], None
    return path, None


def avx_by_function(so):
    """Counter: function name -> number of AVX instructions in it."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", so],
                         check=True, capture_output=True, text=True).stdout
    counts = collections.Counter()
    func = None
    for line in out.splitlines():
        m = FUNC.match(line)
        if m:
            func = m.group(1)
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip():
            continue
        insn = parts[1].strip()
        if insn.split()[0].startswith("v") or AVX_REG.search(insn):
            counts[func] += 1
    return counts


def main(argv):
    if platform.machine().lower() not in ("x86_64", "amd64"):
        print(f"check_isa: nothing to check on {platform.machine()}")
        return 0
    if shutil.which("objdump") is None:
        sys.exit("check_isa: objdump not found (install binutils)")
    so, tmp = find_extension(argv[1] if len(argv) > 1 else None)
    try:
        counts = avx_by_function(so)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    allowed = {f: n for f, n in counts.items() if f and ALLOWED.search(f)}
    bad = {f: n for f, n in counts.items() if f not in allowed}
    print(f"check_isa: {so}")
    print(f"  AVX instructions in {len(allowed)} target-attributed kernels "
          f"({sum(allowed.values())} instructions): "
          f"{', '.join(sorted(allowed))}")
    if not allowed:
        print("  warning: no AVX kernels found (built without them?)")
    if bad:
        print(f"  FAIL: AVX instructions outside the _v3/_v4 kernels, in "
              f"{len(bad)} functions:")
        for f, n in sorted(bad.items(), key=lambda kv: -kv[1]):
            print(f"    {n:6d}  {f}")
        return 1
    print("  OK: the rest is baseline x86-64 (no VEX/EVEX instructions)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
