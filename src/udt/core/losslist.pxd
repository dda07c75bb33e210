# cython: language_level=3
"""Range-compressed loss lists (sender and receiver, protocol.md §5): a sorted array of inclusive
[first, last] ranges of 31-bit sequence numbers that all lie within half the sequence space.
Memory starts small (``LOSSLIST_INITIAL`` ranges) and doubles when full, up to a bound set by
the buffer the list describes: a rare, bounded copy (at most log2(bound / initial) times), and an
idle connection shrinks it back (``losslist_shrink``).

Header-only ``cdef inline`` functions: the engine calls them on the packet path (a cross-module
call would be an indirect one), the test shim drives them directly.
"""
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memmove
from udt._core cimport LossList
from udt.core.seq cimport seq_cmp, seq_off, seq_add, seq_inc, seq_dec


cdef enum:
    LOSSLIST_INITIAL = 32


cdef inline int losslist_alloc(LossList* ll, int max_capacity) noexcept nogil:
    """At most max_capacity ranges; LOSSLIST_INITIAL of them allocated now."""
    cdef int capacity = LOSSLIST_INITIAL if LOSSLIST_INITIAL < max_capacity else max_capacity
    ll.first_base = <int32_t*>malloc(capacity * sizeof(int32_t))
    ll.last_base = <int32_t*>malloc(capacity * sizeof(int32_t))
    ll.first = ll.first_base
    ll.last = ll.last_base
    ll.count = 0
    ll.length = 0
    ll.capacity = capacity
    ll.total_capacity = capacity
    ll.initial_capacity = capacity
    ll.max_capacity = max_capacity
    if ll.first_base == NULL or ll.last_base == NULL:
        losslist_free(ll)
        return -1
    return 0


cdef inline bint _ll_resize(LossList* ll, int capacity) noexcept nogil:
    """Move the ranges into arrays of `capacity` (>= count) ranges; False if out of memory."""
    cdef int32_t* first = <int32_t*>malloc(capacity * sizeof(int32_t))
    cdef int32_t* last = <int32_t*>malloc(capacity * sizeof(int32_t))
    if first == NULL or last == NULL:
        free(first)
        free(last)
        return False
    memcpy(first, ll.first, ll.count * sizeof(int32_t))
    memcpy(last, ll.last, ll.count * sizeof(int32_t))
    free(ll.first_base)
    free(ll.last_base)
    ll.first_base = first
    ll.last_base = last
    ll.first = first
    ll.last = last
    ll.total_capacity = capacity
    ll.capacity = capacity
    return True


cdef inline void losslist_shrink(LossList* ll) noexcept nogil:
    """An empty list that grew goes back to its initial size (idle connections)."""
    if ll.count == 0 and ll.total_capacity > ll.initial_capacity:
        _ll_resize(ll, ll.initial_capacity)


cdef inline void losslist_free(LossList* ll) noexcept nogil:
    free(ll.first_base)
    free(ll.last_base)
    ll.first = NULL
    ll.last = NULL
    ll.first_base = NULL
    ll.last_base = NULL
    ll.count = 0
    ll.capacity = 0
    ll.total_capacity = 0
    ll.initial_capacity = 0
    ll.max_capacity = 0
    ll.length = 0


cdef inline void _ll_drop_front(LossList* ll, int k) noexcept nogil:
    """Forget the first k ranges in O(1)."""
    ll.first += k
    ll.last += k
    ll.capacity -= k
    ll.count -= k
    if ll.count == 0:
        ll.first = ll.first_base
        ll.last = ll.last_base
        ll.capacity = ll.total_capacity


cdef inline bint _ll_room(LossList* ll) noexcept nogil:
    """Make room for one more range (compacting to the front); False if truly full."""
    if ll.count < ll.capacity:
        return True
    if ll.first != ll.first_base and ll.count < ll.total_capacity // 2:
        memmove(ll.first_base, ll.first, ll.count * sizeof(int32_t))
        memmove(ll.last_base, ll.last, ll.count * sizeof(int32_t))
        ll.first = ll.first_base
        ll.last = ll.last_base
        ll.capacity = ll.total_capacity
    elif ll.total_capacity < ll.max_capacity:
        # full (or nearly): double, a bounded copy that happens at most log2(max / initial) times
        _ll_resize(ll, ll.total_capacity * 2 if ll.total_capacity * 2 < ll.max_capacity
                   else ll.max_capacity)
    elif ll.first != ll.first_base:
        memmove(ll.first_base, ll.first, ll.count * sizeof(int32_t))
        memmove(ll.last_base, ll.last, ll.count * sizeof(int32_t))
        ll.first = ll.first_base
        ll.last = ll.last_base
        ll.capacity = ll.total_capacity
    return ll.count < ll.capacity


cdef inline int losslist_lower(LossList* ll, int32_t seq) noexcept nogil:
    """Index of the first range whose last >= seq (count if none)."""
    cdef int lo = 0, hi = ll.count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if seq_cmp(ll.last[mid], seq) < 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline int64_t losslist_insert(LossList* ll, int32_t first, int32_t last) noexcept nogil:
    """Add [first, last]; merges with overlapping/adjacent ranges.  Returns how many sequence
    numbers were new, or -1 when the range array is full (nothing changed)."""
    cdef int i, j, k
    cdef int64_t removed = 0, added
    cdef int32_t nf, nl
    if seq_cmp(first, last) > 0:
        return 0
    # first range that could touch [first, last]: its last >= first - 1
    i = losslist_lower(ll, seq_dec(first))
    j = i
    nf = first
    nl = last
    while j < ll.count and seq_cmp(ll.first[j], seq_inc(last)) <= 0:
        if seq_cmp(ll.first[j], nf) < 0:
            nf = ll.first[j]
        if seq_cmp(ll.last[j], nl) > 0:
            nl = ll.last[j]
        removed += seq_off(ll.first[j], ll.last[j]) + 1
        j += 1
    added = seq_off(nf, nl) + 1 - removed
    if i == j:
        if not _ll_room(ll):
            return -1
        if i < ll.count:
            memmove(&ll.first[i + 1], &ll.first[i], (ll.count - i) * sizeof(int32_t))
            memmove(&ll.last[i + 1], &ll.last[i], (ll.count - i) * sizeof(int32_t))
        ll.count += 1
    elif j - i > 1:
        k = ll.count - j
        if k > 0:
            memmove(&ll.first[i + 1], &ll.first[j], k * sizeof(int32_t))
            memmove(&ll.last[i + 1], &ll.last[j], k * sizeof(int32_t))
        ll.count -= (j - i - 1)
    ll.first[i] = nf
    ll.last[i] = nl
    ll.length += added
    return added


cdef inline bint losslist_contains(LossList* ll, int32_t seq) noexcept nogil:
    cdef int i = losslist_lower(ll, seq)
    return i < ll.count and seq_cmp(ll.first[i], seq) <= 0


cdef inline bint losslist_remove(LossList* ll, int32_t seq) noexcept nogil:
    """Remove one sequence number; True if it was present.  May split a range (needs one free
    slot; when the array is full the split keeps the larger half and drops the rest)."""
    cdef int i = losslist_lower(ll, seq)
    if i >= ll.count or seq_cmp(ll.first[i], seq) > 0:
        return False
    ll.length -= 1
    if ll.first[i] == seq and ll.last[i] == seq:
        if i == 0:
            _ll_drop_front(ll, 1)
            return True
        if i + 1 < ll.count:
            memmove(&ll.first[i], &ll.first[i + 1], (ll.count - i - 1) * sizeof(int32_t))
            memmove(&ll.last[i], &ll.last[i + 1], (ll.count - i - 1) * sizeof(int32_t))
        ll.count -= 1
    elif ll.first[i] == seq:
        ll.first[i] = seq_inc(seq)
    elif ll.last[i] == seq:
        ll.last[i] = seq_dec(seq)
    else:
        if not _ll_room(ll):
            # cannot split: forget the lower half (the receiver re-discovers it via EXP/NAK)
            ll.length -= seq_off(ll.first[i], seq)
            ll.first[i] = seq_inc(seq)
            return True
        memmove(&ll.first[i + 1], &ll.first[i], (ll.count - i) * sizeof(int32_t))
        memmove(&ll.last[i + 1], &ll.last[i], (ll.count - i) * sizeof(int32_t))
        ll.count += 1
        ll.last[i] = seq_dec(seq)
        ll.first[i + 1] = seq_inc(seq)
    return True


cdef inline int64_t losslist_remove_range(LossList* ll, int32_t first, int32_t last) noexcept nogil:
    """Remove every number in [first, last]; returns how many were present."""
    cdef int64_t n = 0
    cdef int32_t s
    cdef int i
    if seq_cmp(first, last) > 0:
        return 0
    while True:
        i = losslist_lower(ll, first)
        if i >= ll.count or seq_cmp(ll.first[i], last) > 0:
            return n
        s = ll.first[i] if seq_cmp(ll.first[i], first) > 0 else first
        # remove [s, min(last, ll.last[i])] from range i
        if seq_cmp(ll.first[i], s) < 0 and seq_cmp(ll.last[i], last) > 0:
            # strictly inside: split
            if not _ll_room(ll):
                n += seq_off(ll.first[i], last) + 1
                ll.length -= seq_off(ll.first[i], last) + 1
                ll.first[i] = seq_inc(last)
                return n
            memmove(&ll.first[i + 1], &ll.first[i], (ll.count - i) * sizeof(int32_t))
            memmove(&ll.last[i + 1], &ll.last[i], (ll.count - i) * sizeof(int32_t))
            ll.count += 1
            ll.last[i] = seq_dec(s)
            ll.first[i + 1] = seq_inc(last)
            n += seq_off(s, last) + 1
            ll.length -= seq_off(s, last) + 1
            return n
        if seq_cmp(ll.first[i], s) < 0:
            # cut the tail of range i
            n += seq_off(s, ll.last[i]) + 1
            ll.length -= seq_off(s, ll.last[i]) + 1
            ll.last[i] = seq_dec(s)
            first = seq_inc(ll.last[i])
            continue
        if seq_cmp(ll.last[i], last) > 0:
            # cut the head of range i
            n += seq_off(ll.first[i], last) + 1
            ll.length -= seq_off(ll.first[i], last) + 1
            ll.first[i] = seq_inc(last)
            return n
        # range i entirely inside: delete it
        n += seq_off(ll.first[i], ll.last[i]) + 1
        ll.length -= seq_off(ll.first[i], ll.last[i]) + 1
        if i == 0:
            _ll_drop_front(ll, 1)
            continue
        if i + 1 < ll.count:
            memmove(&ll.first[i], &ll.first[i + 1], (ll.count - i - 1) * sizeof(int32_t))
            memmove(&ll.last[i], &ll.last[i + 1], (ll.count - i - 1) * sizeof(int32_t))
        ll.count -= 1


cdef inline void losslist_remove_before(LossList* ll, int32_t seq) noexcept nogil:
    """Remove every number < seq (acknowledged)."""
    cdef int i = losslist_lower(ll, seq)
    cdef int k
    for k in range(i):
        ll.length -= seq_off(ll.first[k], ll.last[k]) + 1
    if i > 0:
        _ll_drop_front(ll, i)
    if ll.count > 0 and seq_cmp(ll.first[0], seq) < 0:
        ll.length -= seq_off(ll.first[0], seq)
        ll.first[0] = seq


cdef inline int32_t losslist_pop_first(LossList* ll) noexcept nogil:
    """Remove and return the smallest number, -1 if empty."""
    cdef int32_t s
    if ll.count == 0:
        return -1
    s = ll.first[0]
    losslist_remove(ll, s)
    return s


cdef inline void losslist_clear(LossList* ll) noexcept nogil:
    ll.count = 0
    ll.length = 0
    ll.first = ll.first_base
    ll.last = ll.last_base
    ll.capacity = ll.total_capacity
