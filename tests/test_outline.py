"""`@out_of_line` kernels stay calls: never inlined, not even below a `forceinline` helper.

Checked on tiny kernels compiled in a fresh interpreter without a cache (so the
optimized LLVM IR can be read): a hot `forceinline` helper calls a rare-path
kernel behind a flag, the way `chaos` calls `_stall`.
"""

from tests.test_import import python

KERNELS = """
    from numba import njit
    from harness.outline import out_of_line

    @njit(nogil=True, _nrt=False, forceinline=False)
    @out_of_line
    def rare(a, i):
        a[i] += 7

    @njit(nogil=True, _nrt=False, forceinline=True)
    def seam(a, i):
        if a[0] != 0:
            rare(a, i)

    @njit(nogil=True, _nrt=False)
    def hot(a, i):
        seam(a, i)
        a[1] += 1
"""


def test_an_out_of_line_kernel_is_a_call_with_noinline():
    out = python(KERNELS + """
    import numpy as np, re
    a = np.zeros(4, np.int64)
    a[0] = 1
    hot(a, 2)
    assert a[2] == 7 and a[1] == 1
    ir = hot.inspect_llvm(hot.signatures[0])
    rare = re.search(r'define [^@]*@"?([^"(]*4rare[^"(]*)"?\\([^)]*\\)([^{]*)', ir)
    if rare is None:                                   # no definition left: inlined
        print("inlined")
    else:
        name, attribute_groups = rare.groups()
        print("call" if re.search('call [^@]*@"?' + re.escape(name), ir) else "inlined")
        print("noinline" if any(re.search(r'attributes #' + g + r' = \\{[^}]*noinline', ir)
                                for g in re.findall(r'#(\\d+)', attribute_groups))
              else "no attribute")
    """)
    assert out.split() == ["call", "noinline"], out


def test_inheriting_forceinline_is_an_error_not_a_silent_inline():
    bad = KERNELS.replace("forceinline=False)\n    @out_of_line", ")\n    @out_of_line")
    out = python(bad + """
    import numpy as np
    try:
        hot(np.zeros(4, np.int64), 2)
    except Exception as e:
        print("refused:", e)
    """)
    assert "refused:" in out and "rare is @out_of_line but inherited forceinline" in out, out
