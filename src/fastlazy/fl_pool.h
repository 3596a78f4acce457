/*
 * fl_pool.h -- fastlazy's own small thread pool.
 *
 * Why not OpenBLAS's threads: two OpenBLAS pools in one process (NumPy's and
 * ours) spin-wait against each other after every call, which made
 * interleaved NumPy and fastlazy calls 10-20x slower on two cores.  This
 * pool's workers spin for at most fl_pool_spin_ns (0.1 ms) after a job --
 * waking a sleeping thread costs more than that on a VM, so back-to-back
 * layers find them awake -- and then sleep on a condition variable, so an
 * idle pool never spins against other pools.  The caller takes part as
 * thread 0, and OpenBLAS is kept at one thread and called from inside the
 * jobs.
 *
 * One job runs at a time; a caller that finds the pool busy (another Python
 * thread is inside a parallel forward) runs its job alone, in its own
 * thread.  After fork() the child starts fresh workers (pthread_atfork).
 *
 * Workers join a job only while it is open: the caller closes it when its
 * own share is done and then waits only for workers already inside.  A
 * worker that wakes late (a sleeping thread takes tens to hundreds of
 * microseconds to wake on a VM, longer when another process's thread holds
 * its core) no longer holds up a job whose work is already finished -- it
 * used to: C3 at 2 threads with a sleeping worker took 845 us, 1 thread
 * 450 us.  So a job must hand out its work through a shared counter
 * (fl_next_item) and may run on fewer threads than it asked for; tid only
 * picks per-thread scratch.
 *
 * Windows builds run every job in the calling thread.
 */
#ifndef FL_POOL_H
#define FL_POOL_H

#define FL_POOL_MAX 64

typedef void (*fl_job_fn)(void *ctx, int tid, int nthreads);

#if defined(_WIN32)

static int fl_pool_run(fl_job_fn fn, void *ctx, int nthreads)
{
    (void)nthreads;
    fn(ctx, 0, 1);
    return 1;
}

static int fl_pool_cpu_count(void) { return 1; }

#else

#include <pthread.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t start;
    pthread_cond_t done;
    pthread_mutex_t busy;        /* held by the caller of a running job */
    int nworkers;                /* workers started */
    unsigned long generation;    /* bumped for every job */
    fl_job_fn fn;
    void *ctx;
    int nthreads;                /* threads in the current job */
    int open;                    /* workers may still join the job */
    unsigned long active;        /* workers inside the current job */
} fl_pool_t;

static fl_pool_t fl_pool = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
    PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
    0, 0, 0, 0, 0, 0, 0
};

/* seen: the job generation when the worker was made.  It must come from
 * its maker (who holds mu), not be read by the worker when it first takes
 * mu: by then the job it was made for has already bumped the generation,
 * and a worker that took that as "seen" slept through its first job while
 * the caller waited for it forever. */
typedef struct { int index; unsigned long seen; } fl_worker_arg;
static fl_worker_arg fl_worker_args[FL_POOL_MAX];

/* Wait up to `budget_ns` for *word to change from `old` (or, with
 * until_zero, to reach 0) without sleeping: waking a sleeping thread costs
 * tens of microseconds on a VM, more than a layer's share of a parallel
 * GEMM.  Bounded, so an idle pool never spins against other thread pools. */
static int fl_spin_wait(const volatile void *word, unsigned long old,
                        int until_zero, long budget_ns)
{
    struct timespec t0, t;
    int i;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        for (i = 0; i < 64; i++) {
            unsigned long v = __atomic_load_n((const unsigned long *)word,
                                              __ATOMIC_ACQUIRE);
            if (until_zero ? v == 0 : v != old)
                return 1;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec)
                > budget_ns)
            return 0;
    }
}

static long fl_pool_spin_ns = 100000;   /* 0.1 ms */

static void *fl_pool_worker(void *arg)
{
    int tid = ((fl_worker_arg *)arg)->index;   /* 1 .. nworkers */
    unsigned long seen = ((fl_worker_arg *)arg)->seen;
    for (;;) {
        fl_spin_wait(&fl_pool.generation, seen, 0, fl_pool_spin_ns);
        pthread_mutex_lock(&fl_pool.mu);
        while (fl_pool.generation == seen)
            pthread_cond_wait(&fl_pool.start, &fl_pool.mu);
        seen = fl_pool.generation;
        if (fl_pool.open && tid < fl_pool.nthreads) {
            fl_job_fn fn = fl_pool.fn;
            void *ctx = fl_pool.ctx;
            int nt = fl_pool.nthreads;
            __atomic_add_fetch(&fl_pool.active, 1, __ATOMIC_RELAXED);
            pthread_mutex_unlock(&fl_pool.mu);
            fn(ctx, tid, nt);
            pthread_mutex_lock(&fl_pool.mu);
            if (__atomic_sub_fetch(&fl_pool.active, 1, __ATOMIC_RELEASE) == 0)
                pthread_cond_signal(&fl_pool.done);
        }
        pthread_mutex_unlock(&fl_pool.mu);
    }
    return NULL;
}

/* Start workers up to nthreads - 1; returns how many threads can run. */
/* In a forked child only the forking thread exists: forget the workers
 * and start from fresh locks (which another parent thread may have held
 * at the fork).  Runs in the child before fork() returns, single-threaded,
 * so nothing races with it; registered once, on first use. */
static void fl_pool_after_fork_child(void)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    fl_pool.mu = m;
    fl_pool.busy = m;
    fl_pool.start = c;
    fl_pool.done = c;
    fl_pool.nworkers = 0;
    fl_pool.generation = 0;
    fl_pool.open = 0;
    fl_pool.active = 0;
}

static pthread_once_t fl_pool_once = PTHREAD_ONCE_INIT;

static void fl_pool_register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, fl_pool_after_fork_child);
}

/* Start workers up to nthreads - 1 (caller holds mu); returns how many
 * threads can run. */
static int fl_pool_grow(int nthreads)
{
    if (nthreads > FL_POOL_MAX) nthreads = FL_POOL_MAX;
    while (fl_pool.nworkers < nthreads - 1) {
        pthread_t t;
        pthread_attr_t attr;
        int idx = fl_pool.nworkers + 1;
        fl_worker_args[idx - 1].index = idx;
        fl_worker_args[idx - 1].seen = fl_pool.generation;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, fl_pool_worker,
                           &fl_worker_args[idx - 1]) != 0) {
            pthread_attr_destroy(&attr);
            break;
        }
        pthread_attr_destroy(&attr);
        fl_pool.nworkers = idx;
    }
    return fl_pool.nworkers + 1 < nthreads ? fl_pool.nworkers + 1 : nthreads;
}

/* Run fn(ctx, tid, n) for tid = 0..n-1 and wait for all; returns n. */
static int fl_pool_run(fl_job_fn fn, void *ctx, int nthreads)
{
    pthread_once(&fl_pool_once, fl_pool_register_fork_handler);
    if (nthreads <= 1 || pthread_mutex_trylock(&fl_pool.busy) != 0) {
        fn(ctx, 0, 1);
        return 1;
    }
    pthread_mutex_lock(&fl_pool.mu);
    nthreads = fl_pool_grow(nthreads);
    if (nthreads <= 1) {
        pthread_mutex_unlock(&fl_pool.mu);
        pthread_mutex_unlock(&fl_pool.busy);
        fn(ctx, 0, 1);
        return 1;
    }
    fl_pool.fn = fn;
    fl_pool.ctx = ctx;
    fl_pool.nthreads = nthreads;
    fl_pool.open = 1;
    fl_pool.active = 0;
    __atomic_add_fetch(&fl_pool.generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&fl_pool.start);
    pthread_mutex_unlock(&fl_pool.mu);

    fn(ctx, 0, nthreads);

    /* the work is handed out: close the job, wait for those inside */
    pthread_mutex_lock(&fl_pool.mu);
    fl_pool.open = 0;
    pthread_mutex_unlock(&fl_pool.mu);
    fl_spin_wait(&fl_pool.active, 0, 1, 2 * fl_pool_spin_ns);
    pthread_mutex_lock(&fl_pool.mu);
    while (fl_pool.active > 0)
        pthread_cond_wait(&fl_pool.done, &fl_pool.mu);
    pthread_mutex_unlock(&fl_pool.mu);
    pthread_mutex_unlock(&fl_pool.busy);
    return nthreads;
}

static int fl_pool_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > FL_POOL_MAX ? FL_POOL_MAX : (int)n);
}

#endif /* _WIN32 */

/* A shared counter for handing out work items between the job's threads. */
static inline long fl_next_item(long *counter)
{
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

#endif /* FL_POOL_H */
