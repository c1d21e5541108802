/* The bench's workload in C: the reference the Numba kernels are measured against.
 *
 * The same as `python -m harness bench` runs with --no-pcp: the buddy zone of DESIGN
 * section 3 without capture (LIFO doubly linked free lists 0..10, expand(), the merge
 * loop of __free_one_page), one 64-byte row per page as in the zone table, guarded by
 * one pthread mutex (a futex mutex); each thread runs workers/allocator.py's loop with
 * the page cache off: hold up to HELD blocks, allocate when holding few, free a random
 * held block when holding many, toss a coin in between, orders drawn from the same
 * cumulative weights with the same xorshift stream (harness/rng.py).  An operation is
 * one alloc attempt or one free.
 *
 * usage: bench_ref PAGES SECONDS HELD CDF0,..,CDF10 SEED0 [SEED1 ...]  (one seed a thread)
 * prints: OPS WALL_SECONDS THREAD0_OPS THREAD1_OPS ...
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ORDER 11
#define TOP (MAX_ORDER - 1)
#define CHECK_EVERY 64

enum { TAIL, FREE, ALLOCATED };
typedef struct { int64_t state, order, next, prev, pad[4]; } page_t;   /* one 64-byte row */

static page_t *pg;
static int64_t head[MAX_ORDER], count[MAX_ORDER];
static pthread_mutex_t zone_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop;
static int64_t cdf[MAX_ORDER];
static int64_t held_cap;

static inline uint64_t step(uint64_t x) { x ^= x >> 12; x ^= x << 25; x ^= x >> 27; return x; }
static inline int64_t bounded(uint64_t x, int64_t n)
{
    int64_t r = (int64_t)(((x * 2685821657736338717ULL) >> 33) & 0x7FFFFFFF);
    return (r * n) >> 31;
}

static inline void push_head(int64_t order, int64_t pfn)
{
    int64_t old = head[order];
    pg[pfn].next = old;
    pg[pfn].prev = -1;
    if (old >= 0)
        pg[old].prev = pfn;
    head[order] = pfn;
    count[order]++;
}

static inline void unlink_block(int64_t order, int64_t pfn)
{
    int64_t nxt = pg[pfn].next, prv = pg[pfn].prev;
    if (prv >= 0) pg[prv].next = nxt; else head[order] = nxt;
    if (nxt >= 0) pg[nxt].prev = prv;
    count[order]--;
}

static int64_t alloc_block(int64_t order)
{
    pthread_mutex_lock(&zone_lock);
    for (int64_t k = order; k <= TOP; k++) {
        int64_t pfn = head[k];
        if (pfn < 0)
            continue;
        unlink_block(k, pfn);
        while (k > order) {                     /* expand(): upper halves to the lists */
            k--;
            int64_t half = pfn + ((int64_t)1 << k);
            pg[half].state = FREE;
            pg[half].order = k;
            push_head(k, half);
        }
        pg[pfn].state = ALLOCATED;
        pg[pfn].order = order;
        pthread_mutex_unlock(&zone_lock);
        return pfn;
    }
    pthread_mutex_unlock(&zone_lock);
    return -1;
}

static void free_block(int64_t pfn, int64_t order)
{
    pthread_mutex_lock(&zone_lock);
    pg[pfn].state = TAIL;
    while (order < TOP) {                       /* __free_one_page */
        int64_t buddy = pfn ^ ((int64_t)1 << order);
        if (pg[buddy].state != FREE || pg[buddy].order != order)
            break;
        unlink_block(order, buddy);
        pg[buddy].state = TAIL;
        pfn &= buddy;
        order++;
    }
    pg[pfn].state = FREE;
    pg[pfn].order = order;
    push_head(order, pfn);
    pthread_mutex_unlock(&zone_lock);
}

static inline int64_t draw_order(uint64_t x)
{
    int64_t r = bounded(x, 1 << 20), k = 0;
    while (k < 10 && cdf[k] <= r)
        k++;
    return k;
}

typedef struct { uint64_t seed; int64_t ops; char pad[48]; } worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    int64_t (*held)[2] = calloc(held_cap, sizeof *held);
    uint64_t x = w->seed;
    int64_t n = 0, ops = 0, cap = held_cap;
    for (;;) {
        if ((ops & (CHECK_EVERY - 1)) == 0 && __atomic_load_n(&stop, __ATOMIC_ACQUIRE))
            break;
        ops++;
        x = step(x);
        if (n == 0 || (n < cap / 2 && bounded(x, 4) != 0) || (n < cap && bounded(x, 2) == 0)) {
            x = step(x);
            int64_t order = draw_order(x);
            int64_t pfn = alloc_block(order);
            if (pfn < 0)
                continue;
            held[n][0] = pfn;
            held[n][1] = order;
            n++;
        } else {
            x = step(x);
            int64_t j = bounded(x, n);
            int64_t pfn = held[j][0], order = held[j][1];
            held[j][0] = held[n - 1][0];
            held[j][1] = held[n - 1][1];
            n--;
            x = step(x);                        /* the page-cache coin (cache off) */
            free_block(pfn, order);
        }
    }
    w->ops = ops;
    free(held);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s PAGES SECONDS HELD CDF0,..,CDF10 SEED...\n", argv[0]);
        return 2;
    }
    int64_t pages = atoll(argv[1]);
    double seconds = atof(argv[2]);
    held_cap = atoll(argv[3]);
    char *s = argv[4];
    for (int k = 0; k < MAX_ORDER; k++) {
        cdf[k] = strtoll(s, &s, 10);
        if (*s == ',')
            s++;
    }
    int nthreads = argc - 5;
    if (pages <= 0 || pages % (1 << TOP) || held_cap <= 0 || seconds < 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    pg = aligned_alloc(64, pages * sizeof *pg);
    memset(pg, 0, pages * sizeof *pg);
    for (int k = 0; k < MAX_ORDER; k++)
        head[k] = -1;
    for (int64_t pfn = 0; pfn < pages; pfn += 1 << TOP) {      /* freed in increasing order */
        pg[pfn].state = FREE;
        pg[pfn].order = TOP;
        push_head(TOP, pfn);
    }
    worker_t *w = aligned_alloc(64, nthreads * sizeof *w);
    pthread_t *th = calloc(nthreads, sizeof *th);
    struct timespec t0, t1, nap;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < nthreads; i++) {
        w[i].seed = strtoull(argv[5 + i], NULL, 10);
        w[i].ops = 0;
        pthread_create(&th[i], NULL, worker, &w[i]);
    }
    nap.tv_sec = (time_t)seconds;
    nap.tv_nsec = (long)((seconds - (double)nap.tv_sec) * 1e9);
    nanosleep(&nap, NULL);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    int64_t total = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        total += w[i].ops;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%lld %.6f", (long long)total,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    for (int i = 0; i < nthreads; i++)
        printf(" %lld", (long long)w[i].ops);
    printf("\n");
    return 0;
}
