"""The same buddy algorithm in plain Python with one `threading.Lock`: the bench baseline.

This is what a Python developer would otherwise write: lists for page fields,
doubly linked LIFO free lists, `expand()` on allocation and buddy coalescing on
free, all under one lock.  Alloc and free only (no capture): the bench mix.
"""

import threading

TOP = 10
FREE, ALLOC, TAIL = 1, 2, 0


class PyZone:
    def __init__(self, pages):
        self.state = [TAIL] * pages
        self.order = [0] * pages
        self.next = [-1] * pages
        self.prev = [-1] * pages
        self.head = [-1] * (TOP + 1)
        self.count = [0] * (TOP + 1)
        self.lock = threading.Lock()
        for pfn in range(0, pages, 1 << TOP):
            self.state[pfn], self.order[pfn] = FREE, TOP
            self._push(TOP, pfn)

    def _push(self, k, pfn):
        old = self.head[k]
        self.next[pfn], self.prev[pfn] = old, -1
        if old >= 0:
            self.prev[old] = pfn
        self.head[k] = pfn
        self.count[k] += 1

    def _unlink(self, k, pfn):
        nxt, prv = self.next[pfn], self.prev[pfn]
        if prv >= 0:
            self.next[prv] = nxt
        else:
            self.head[k] = nxt
        if nxt >= 0:
            self.prev[nxt] = prv
        self.count[k] -= 1

    def alloc(self, order):
        with self.lock:
            for k in range(order, TOP + 1):
                pfn = self.head[k]
                if pfn >= 0:
                    break
            else:
                return None
            self._unlink(k, pfn)
            while k > order:
                k -= 1
                half = pfn + (1 << k)
                self.state[half], self.order[half] = FREE, k
                self._push(k, half)
            self.state[pfn], self.order[pfn] = ALLOC, order
            return pfn

    def free(self, pfn, order):
        with self.lock:
            if self.state[pfn] != ALLOC or self.order[pfn] != order:
                raise ValueError(f"pfn {pfn} is not an allocated block of order {order}")
            self.state[pfn] = TAIL
            while order < TOP:
                buddy = pfn ^ (1 << order)
                if self.state[buddy] != FREE or self.order[buddy] != order:
                    break
                self._unlink(order, buddy)
                self.state[buddy] = TAIL
                pfn &= buddy
                order += 1
            self.state[pfn], self.order[pfn] = FREE, order
            self._push(order, pfn)
