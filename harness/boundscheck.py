"""The bounds-checked build (--boundscheck): every array index checked, a stray one named.

`python -m harness stress --boundscheck` re-executes itself with
NUMBA_BOUNDSCHECK=1 (`reexec`); in such a process the kernels are compiled
with bounds checks into their own cache directory (harness.jitcache), and
Numba's out-of-bounds IndexError is made to say which kernel and which axis
(`install`: Numba's own message names neither).  The runner turns the
exception of a worker into a finding (harness.runner).  About 2x slower; a
first run compiles every kernel again (minutes).
"""

import os
import re
import sys

ENV = "NUMBA_BOUNDSCHECK"
FLAG = "--boundscheck"


def active():
    """True in a process whose kernels are compiled with bounds checks."""
    return os.environ.get(ENV, "") not in ("", "0")


def kernel_name(llvm_name):
    """'harness.zone.unlink' from a Numba-mangled LLVM function name (best effort)."""
    m = re.match(r"_ZN(.*)", llvm_name)
    if not m:
        return llvm_name
    rest, parts = m.group(1), []
    while rest and rest[0].isdigit():
        n = re.match(r"\d+", rest).group(0)
        rest = rest[len(n):]
        part, rest = rest[:int(n)], rest[int(n):]
        parts.append(part)
        if rest[:1] in ("E", "B") or not rest[:1].isdigit():
            break
    text = ".".join(parts) or llvm_name
    return re.sub(r"_2[45]", lambda x: {"_24": "$", "_25": "%"}[x.group(0)], text)


def install():
    """Make every bounds check of the code compiled from now on name its kernel and axis."""
    from numba.core import cgutils

    if getattr(cgutils.do_boundscheck, "_names_kernel", False):
        return

    def do_boundscheck(context, builder, ind, dimlen, axis=None):
        where = kernel_name(builder.function.name)
        msg = f"index out of bounds on axis {axis if isinstance(axis, int) else '?'} in {where}"
        upper = builder.icmp_signed(">=", ind, dimlen)
        with cgutils.if_unlikely(builder, upper):
            context.call_conv.return_user_exc(builder, IndexError, (msg,))
        lower = builder.icmp_signed("<", ind, ind.type(0))
        with cgutils.if_unlikely(builder, lower):
            context.call_conv.return_user_exc(builder, IndexError, (msg,))

    do_boundscheck._names_kernel = True
    cgutils.do_boundscheck = do_boundscheck


def reexec(argv):
    """Run this command again in a bounds-checked process (never returns) if it asks for one."""
    if FLAG in argv and not active():
        env = dict(os.environ, **{ENV: "1"})
        os.execve(sys.executable, [sys.executable, "-m", "harness", *argv], env)
