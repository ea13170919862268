// cuda_compat.h - the subset of CUDA C++ that imgtool's kernels use, for the host C++ compiler.
//
// hostcuda compiles a kernel source with this header in front and a generated
// launcher behind it (see compiler.py).  Execution model:
//   * a launch runs its blocks on a few host threads (pthreads, one block at a
//     time per host thread), so `__shared__` (thread_local) is per block;
//   * inside a block, a kernel module that uses no barrier runs its CUDA
//     threads as a plain loop; a module that calls __syncthreads*() runs each
//     CUDA thread as a ucontext fiber on the block's host thread, and a barrier
//     switches to the next fiber, so every thread of the block reaches barrier
//     k before any thread passes it (threads that have returned do not take part,
//     as on sm_70+).
// threadIdx/blockIdx/blockDim/gridDim are thread_local: the scheduler sets them
// before it runs or resumes a CUDA thread.
//
// The check build (HC_CHECK=1, compiler.py's check mode; sanitizer.py drives it)
// runs a launch on the calling host thread only, in the order the launch record
// asks for: the CUDA threads of a block forward, reversed or shuffled (seeded)
// between any two barriers, the blocks likewise.  It also
//   * catches SIGSEGV/SIGBUS while a CUDA thread runs (sanitizer.py places every
//     buffer against PROT_NONE guard pages) and ends that launch with the
//     faulting address, read or write, block and thread;
//   * is built with -fsanitize=bounds,object-size, its handlers defined here (no
//     sanitizer runtime is linked): an index past a __shared__ or local array,
//     or an access through a pointer past the array it points into, ends the
//     launch with the source line;
//   * gives each __shared__ array declared in a function body a slot of its own
//     between guard pages (compiler.py rewrites the declaration into a reference
//     to hc::shared_array), placed against the upper or the lower guard as the
//     launch says; other __shared__ variables are statics in the section
//     hc_shared.  All of it is written over with the launch's poison byte before
//     every block, so that reading shared memory no thread of the block wrote
//     differs from one schedule to the next;
//   * checks every barrier (synccheck): all the threads of a block that have not
//     returned must wait at the same __syncthreads(); a thread that returns, or
//     waits at another barrier, while others wait at one ends the launch.
//
// With HOSTCUDA_SCAN defined (the compiler's preprocess-only pass) the header
// includes nothing and leaves a marker for each __global__ so that compiler.py
// can find the kernels in the preprocessed text.
#pragma once

#ifdef HOSTCUDA_SCAN

#define __global__ __hostcuda_global__
#define __device__
#define __host__
#define __forceinline__
#define __noinline__
#define __shared__
#define __constant__
#define __launch_bounds__(...)

#else  // the real build

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <type_traits>
#include <utility>

#ifndef HC_USES_BARRIER
#define HC_USES_BARRIER 0
#endif
#ifndef HC_CHECK
#define HC_CHECK 0
#endif

#define HC_EXPORT extern "C" __attribute__((visibility("default")))

// ---- the language surface -------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
// A __shared__ variable lives as long as the block and is shared by its threads:
// all of a block's CUDA threads run on one host thread, so thread_local is that.
// The check build runs one block at a time on one host thread, so a static in a
// section of its own does, and the scheduler can poison the section.
#if HC_CHECK
#define __shared__ static __attribute__((section("hc_shared")))
#else
#define __shared__ thread_local
#endif
#define __constant__ static
#define __launch_bounds__(...)

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Not static: the compiler must assume that an opaque call (swapcontext at a
// barrier) may change them, as the fiber scheduler does.
#define HC_HIDDEN __attribute__((visibility("hidden")))
HC_HIDDEN thread_local uint3 threadIdx;
HC_HIDDEN thread_local uint3 blockIdx;
HC_HIDDEN thread_local dim3 blockDim;
HC_HIDDEN thread_local dim3 gridDim;
static const int warpSize = 32;

// The launch record shared with compiler.py (ctypes mirrors this layout).
struct hc_launch {
    unsigned int grid[3];
    unsigned int block[3];
    void* const* args;
    int status;  // 0 ok; set (first error wins) by any host thread
    char message[512];
    // The check build's schedule (the normal build ignores these).
    int thread_order;  // HC_ORDER_*: the threads of a block between barriers
    int block_order;   // HC_ORDER_*: the blocks of the grid
    unsigned long long seed;
    int shared_poison;  // the byte __shared__ memory holds when a block starts
    int shared_layout;  // HC_LAYOUT_*: where each __shared__ array meets its guard page
    // What the check build caught: HC_FAULT_*, and for a memory fault the address.
    int fault_kind;
    int fault_write;  // 1 write, 0 read, -1 not known
    unsigned long long fault_addr;
};

enum { HC_ORDER_FORWARD = 0, HC_ORDER_REVERSE = 1, HC_ORDER_RANDOM = 2 };
enum { HC_LAYOUT_END = 0, HC_LAYOUT_START = 1 };
enum {
    HC_FAULT_NONE = 0,
    HC_FAULT_TRAP = 1,     // __trap() or a C++ exception
    HC_FAULT_MEMORY = 2,   // SIGSEGV/SIGBUS: an address outside every buffer
    HC_FAULT_INDEX = 3,    // an array index out of bounds (-fsanitize=bounds)
    HC_FAULT_OBJECT = 4,   // an access past the object a pointer points into (object-size)
    HC_FAULT_BARRIER = 5,  // synccheck: a barrier not reached by all threads of the block
    HC_FAULT_SHARED = 6,   // SIGSEGV in the guard page of a __shared__ array
};

namespace hc {

struct trap_error {};

static bool fail_kind(hc_launch* L, int kind, const char* what) {
    int expected = 0;
    if (!__atomic_compare_exchange_n(&L->status, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return false;
    L->fault_kind = kind;
    snprintf(L->message, sizeof L->message, "%s in block (%u,%u,%u) thread (%u,%u,%u)", what, blockIdx.x,
             blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    return true;
}

static void fail(hc_launch* L, const char* what) { fail_kind(L, HC_FAULT_TRAP, what); }

// ---- the check build's state ------------------------------------------------
//
// One check launch runs at a time in the process (sanitizer.py holds a lock),
// on one host thread, so this is plain static state of the module.

#if HC_CHECK
struct check_state {
    hc_launch* launch = nullptr;
    pthread_t thread;
    sigjmp_buf* landing = nullptr;  // where the running CUDA thread goes when it faults
    volatile sig_atomic_t signalled = 0;
    void* fault_addr = nullptr;
    int fault_write = -1;
    struct sigaction old_segv, old_bus;
    stack_t old_altstack;
    char* altstack = nullptr;
};
static check_state chk;

// A memory fault of the CUDA thread that runs now: back to its landing, which
// reports it.  Any other fault (another host thread, the scheduler itself) is not
// ours: the previous handler gets it when the access is made again.
static void on_fault(int sig, siginfo_t* info, void* uc) {
    if (chk.launch && chk.landing && pthread_equal(pthread_self(), chk.thread)) {
        chk.signalled = 1;
        chk.fault_addr = info->si_addr;
#if defined(__x86_64__)
        chk.fault_write = (((ucontext_t*)uc)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
        (void)uc;
        chk.fault_write = -1;
#endif
        siglongjmp(*chk.landing, 1);
    }
    sigaction(sig, sig == SIGSEGV ? &chk.old_segv : &chk.old_bus, nullptr);
}

static void check_begin(hc_launch* L) {
    chk.launch = L;
    chk.thread = pthread_self();
    chk.landing = nullptr;
    chk.signalled = 0;
    const size_t alt = 256 * 1024;
    if (!chk.altstack) chk.altstack = (char*)malloc(alt);
    stack_t ss;
    ss.ss_sp = chk.altstack;
    ss.ss_size = alt;
    ss.ss_flags = 0;
    sigaltstack(&ss, &chk.old_altstack);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &chk.old_segv);
    sigaction(SIGBUS, &sa, &chk.old_bus);
}

static void check_end() {
    sigaction(SIGSEGV, &chk.old_segv, nullptr);
    sigaction(SIGBUS, &chk.old_bus, nullptr);
    sigaltstack(&chk.old_altstack, nullptr);
    chk.launch = nullptr;
    chk.landing = nullptr;
}

static bool describe_shared_fault(char* out, size_t cap, uintptr_t addr);

// The running CUDA thread came back to its landing after a fault: report it.
static void check_report_signal(hc_launch* L) {
    if (!chk.signalled) return;
    chk.signalled = 0;
    const char* rw = chk.fault_write == 1 ? "write" : chk.fault_write == 0 ? "read" : "access";
    char what[300], where[200];
    if (describe_shared_fault(where, sizeof where, (uintptr_t)chk.fault_addr)) {
        snprintf(what, sizeof what, "invalid %s %s", rw, where);
        fail_kind(L, HC_FAULT_SHARED, what);
        return;
    }
    snprintf(what, sizeof what, "invalid %s at 0x%llx", rw, (unsigned long long)(uintptr_t)chk.fault_addr);
    if (fail_kind(L, HC_FAULT_MEMORY, what)) {
        L->fault_addr = (unsigned long long)(uintptr_t)chk.fault_addr;
        L->fault_write = chk.fault_write;
    }
}

// A check that failed inside the CUDA thread (an index out of bounds): report it
// and leave the thread, as a fault would.
[[noreturn]] static void check_abort(int kind, const char* what) {
    fail_kind(chk.launch, kind, what);
    if (chk.landing) siglongjmp(*chk.landing, 2);
    abort();  // cannot happen: kernel code only runs with a landing set
}

// splitmix64: the seeded orders.
struct rng {
    unsigned long long s;
    unsigned long long next() {
        unsigned long long z = (s += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
};

static unsigned long long gcd(unsigned long long a, unsigned long long b) {
    while (b) {
        const unsigned long long t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static void make_order(unsigned int* order, unsigned int n, int mode, rng& g) {
    for (unsigned int i = 0; i < n; ++i) order[i] = mode == HC_ORDER_REVERSE ? n - 1 - i : i;
    if (mode == HC_ORDER_RANDOM) {
        for (unsigned int i = n; i > 1; --i) {
            const unsigned int j = (unsigned int)(g.next() % i);
            const unsigned int t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
    }
}

// __shared__ arrays declared in a function body: compiler.py's check build turns
// each declaration into a reference to its own slot, a mapping with a PROT_NONE
// page on either side; the array sits against the upper guard or the lower one
// as the launch's shared_layout says.  Other __shared__ variables are statics in
// the section hc_shared, without guards.
struct shared_slot {
    const char* name;
    size_t size;
    char* region;  // guard page, the array's pages, guard page
    size_t data;   // the array's pages, in bytes
    char* ptr;
};
static shared_slot shared_slots[512];
static unsigned int shared_count = 0;

static void shared_place(shared_slot& s, int layout) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    s.ptr = layout == HC_LAYOUT_START ? s.region + page : s.region + page + s.data - s.size;
}

static shared_slot* shared_register(size_t size, const char* name) {
    if (shared_count == sizeof shared_slots / sizeof shared_slots[0]) check_abort(HC_FAULT_TRAP, "too many __shared__ arrays");
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t data = (size ? (size + page - 1) / page : 1) * page;
    void* region = mmap(nullptr, data + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) check_abort(HC_FAULT_TRAP, "out of memory for a __shared__ array");
    mprotect(region, page, PROT_NONE);
    mprotect((char*)region + page + data, page, PROT_NONE);
    shared_slot& s = shared_slots[shared_count++];
    s.name = name;
    s.size = size;
    s.region = (char*)region;
    s.data = data;
    shared_place(s, chk.launch->shared_layout);
    memset(s.ptr, chk.launch->shared_poison, size);
    return &s;
}

// The fault address in the guard pages of a __shared__ array: its description.
static bool describe_shared_fault(char* out, size_t cap, uintptr_t addr) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (unsigned int i = 0; i < shared_count; ++i) {
        const shared_slot& s = shared_slots[i];
        const uintptr_t lo = (uintptr_t)s.region, hi = lo + s.data + 2 * page;
        if (addr < lo || addr >= hi) continue;
        const long long off = (long long)(addr - (uintptr_t)s.ptr);
        char where[64];
        if (off >= (long long)s.size) snprintf(where, sizeof where, "%lld byte(s) past its last byte", off - (long long)s.size + 1);
        else snprintf(where, sizeof where, "%lld byte(s) before its first byte", -off);
        snprintf(out, cap, "at byte offset %lld of __shared__ %s (a %zu-byte array: %s)", off, s.name, s.size, where);
        return true;
    }
    return false;
}

extern "C" char __start_hc_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_hc_shared[] __attribute__((weak, visibility("hidden")));

// A block starts: every __shared__ variable holds the launch's poison byte.
static void poison_shared(int byte) {
    if (__start_hc_shared && __stop_hc_shared > __start_hc_shared)
        memset(__start_hc_shared, byte, (size_t)(__stop_hc_shared - __start_hc_shared));
    for (unsigned int i = 0; i < shared_count; ++i) memset(shared_slots[i].ptr, byte, shared_slots[i].size);
}

// The launch's layout for the arrays a previous launch placed.
static void place_shared(int layout) {
    for (unsigned int i = 0; i < shared_count; ++i) shared_place(shared_slots[i], layout);
}

template <class T, int ID>
static inline T* shared_array(const char* name) {
    static shared_slot* slot = nullptr;
    if (__builtin_expect(slot == nullptr, 0)) slot = shared_register(sizeof(T), name);
    return (T*)slot->ptr;
}
#endif  // HC_CHECK

// ---- fibers (only used by modules that have a barrier) --------------------

struct fiber_pool {
    unsigned int capacity = 0;
    size_t slot_bytes = 0;  // one guard page + the stack
    char* region = nullptr;
    ucontext_t* ctx = nullptr;
    unsigned char* done = nullptr;
#if HC_CHECK
    sigjmp_buf** landing = nullptr;  // each fiber's landing, on its own stack
#endif
    ucontext_t pristine;  // a getcontext() image that makecontext() starts from
    fiber_pool* next_free = nullptr;
};

struct block_run {
    ucontext_t sched;
    fiber_pool* pool;
    unsigned int cur;
    unsigned int count;         // __syncthreads_count: predicate total of this phase
    unsigned int participants;  // threads that reached this phase's barrier
    unsigned int count_result, participants_result;
    void (*body)(void*);
    void* body_arg;
    hc_launch* launch;
    int trapped;
#if HC_CHECK
    // synccheck: where this phase's first waiting thread waits, and the first
    // thread that waits elsewhere
    const char* site_file;
    int site_line, site_col;
    unsigned int site_thread;
    const char* other_file;
    int other_line, other_col;
    unsigned int other_thread;
#endif
};

static thread_local block_run* tls_run = nullptr;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static fiber_pool* free_pools = nullptr;

static size_t stack_bytes() {
    const char* env = getenv("IMGTOOL_HOSTCUDA_STACK_KB");
    long kb = env ? atol(env) : 64;
    if (kb < 16) kb = 16;
    return (size_t)kb * 1024;
}

static bool pool_reserve(fiber_pool* p, unsigned int n) {
    if (p->capacity >= n) return true;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t stack = (stack_bytes() + page - 1) / page * page;
    const size_t slot = stack + page;
    void* region = mmap(nullptr, slot * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) return false;
    for (unsigned int i = 0; i < n; ++i) {
        // A guard page under each stack turns an overflow into a fault, not corruption.
        mprotect((char*)region + i * slot, page, PROT_NONE);
    }
    ucontext_t* ctx = (ucontext_t*)calloc(n, sizeof(ucontext_t));
    unsigned char* done = (unsigned char*)calloc(n, 1);
#if HC_CHECK
    sigjmp_buf** landing = (sigjmp_buf**)calloc(n, sizeof(sigjmp_buf*));
#else
    void* landing = (void*)1;
#endif
    if (!ctx || !done || !landing) {
        free(ctx);
        free(done);
#if HC_CHECK
        free(landing);
#endif
        munmap(region, slot * n);
        return false;
    }
    if (p->region) munmap(p->region, p->slot_bytes * p->capacity);
    free(p->ctx);
    free(p->done);
#if HC_CHECK
    free(p->landing);
    p->landing = landing;
#endif
    if (p->capacity == 0 && getcontext(&p->pristine) != 0) return false;
    p->region = (char*)region;
    p->slot_bytes = slot;
    p->ctx = ctx;
    p->done = done;
    p->capacity = n;
    return true;
}

static fiber_pool* pool_acquire() {
    pthread_mutex_lock(&pool_lock);
    fiber_pool* p = free_pools;
    if (p) free_pools = p->next_free;
    pthread_mutex_unlock(&pool_lock);
    return p ? p : new fiber_pool();
}

static void pool_release(fiber_pool* p) {
    if (!p) return;
    pthread_mutex_lock(&pool_lock);
    p->next_free = free_pools;
    free_pools = p;
    pthread_mutex_unlock(&pool_lock);
}

static void fiber_main() {
    block_run* r = tls_run;
    const unsigned int me = r->cur;
#if HC_CHECK
    sigjmp_buf landing;
    r->pool->landing[me] = &landing;
    chk.landing = &landing;
    if (sigsetjmp(landing, 0) != 0) {
        chk.landing = nullptr;
        check_report_signal(r->launch);
        r->trapped = 1;
        r->pool->done[me] = 1;
        return;
    }
#endif
    try {
        r->body(r->body_arg);
    } catch (trap_error&) {
        fail(r->launch, "__trap()");
        r->trapped = 1;
    } catch (...) {
        fail(r->launch, "C++ exception");
        r->trapped = 1;
    }
#if HC_CHECK
    chk.landing = nullptr;
#endif
    r->pool->done[me] = 1;
    // returning resumes uc_link, the scheduler
}

static inline void set_thread_index(unsigned int i, unsigned int bx, unsigned int by) {
    threadIdx.x = i % bx;
    threadIdx.y = (i / bx) % by;
    threadIdx.z = i / (bx * by);
}

#if HC_CHECK
static void describe_thread(char* out, size_t cap, unsigned int i, unsigned int bx, unsigned int by) {
    snprintf(out, cap, "(%u,%u,%u)", i % bx, (i / bx) % by, i / (bx * by));
}

static void describe_site(char* out, size_t cap, const char* file, int line, int col) {
    if (col > 0) snprintf(out, cap, "%s:%d:%d", file, line, col);
    else snprintf(out, cap, "%s:%d", file, line);
}
#endif

// Runs one block's threads as fibers; returns false if the fibers could not be set up.
static bool run_block_fibers(hc_launch* L, fiber_pool* pool, void (*body)(void*), void* arg) {
    const unsigned int bx = L->block[0], by = L->block[1];
    const unsigned int n = bx * by * L->block[2];
    if (!pool_reserve(pool, n)) return false;
    block_run r;
    r.pool = pool;
    r.body = body;
    r.body_arg = arg;
    r.launch = L;
    r.trapped = 0;
    r.count = r.participants = r.count_result = r.participants_result = 0;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (unsigned int i = 0; i < n; ++i) {
        ucontext_t* c = &pool->ctx[i];
        memcpy(c, &pool->pristine, sizeof *c);
        c->uc_stack.ss_sp = pool->region + i * pool->slot_bytes + page;
        c->uc_stack.ss_size = pool->slot_bytes - page;
        c->uc_link = &r.sched;
        makecontext(c, fiber_main, 0);
        pool->done[i] = 0;
    }
    block_run* saved = tls_run;
    tls_run = &r;
#if HC_CHECK
    unsigned int order[1024];
    rng g{L->seed ^ (0x632BE59BD9B4E019ULL * (1 + blockIdx.x + 65536ULL * (blockIdx.y + 65536ULL * blockIdx.z)))};
#endif
    unsigned int alive = n;
    while (alive) {
        r.count = r.participants = 0;
#if HC_CHECK
        make_order(order, n, L->thread_order, g);
        r.site_file = r.other_file = nullptr;
        r.site_line = r.other_line = r.site_col = r.other_col = 0;
        unsigned int exited = 0, exited_thread = 0;
#endif
        for (unsigned int k = 0; k < n; ++k) {
#if HC_CHECK
            const unsigned int i = order[k];
#else
            const unsigned int i = k;
#endif
            if (pool->done[i]) continue;
            set_thread_index(i, bx, by);
            r.cur = i;
            swapcontext(&r.sched, &pool->ctx[i]);
            if (pool->done[i]) {
                --alive;
#if HC_CHECK
                if (!exited++) exited_thread = i;
#endif
            }
#if HC_CHECK
            if (r.trapped) {  // the launch has failed: leave the other threads where they are
                tls_run = saved;
                return true;
            }
#endif
        }
#if HC_CHECK
        // synccheck: every thread that has not returned waits at the same barrier
        if (r.participants && (exited || r.other_file)) {
            char a[32], b[32], site[200], other[200], what[480];
            describe_thread(a, sizeof a, r.site_thread, bx, by);
            describe_site(site, sizeof site, r.site_file, r.site_line, r.site_col);
            if (r.other_file) {
                describe_thread(b, sizeof b, r.other_thread, bx, by);
                describe_site(other, sizeof other, r.other_file, r.other_line, r.other_col);
                snprintf(what, sizeof what,
                         "barrier divergence: thread %s waits at the barrier of %s while thread %s waits at the "
                         "one of %s",
                         a, site, b, other);
            } else {
                describe_thread(b, sizeof b, exited_thread, bx, by);
                snprintf(what, sizeof what,
                         "barrier divergence: thread %s waits at the barrier of %s while thread %s (and %u more) "
                         "returned without reaching it",
                         a, site, b, exited - 1);
            }
            set_thread_index(r.site_thread, bx, by);
            fail_kind(L, HC_FAULT_BARRIER, what);
            tls_run = saved;
            return true;
        }
#endif
        // every live thread is now at the same barrier: publish the phase's votes
        r.count_result = r.count;
        r.participants_result = r.participants;
    }
    tls_run = saved;
    return true;
}

static unsigned int barrier(int predicate, unsigned int* participants, const char* file, int line, int col) {
    block_run* r = tls_run;
    if (!r) {
        // cannot happen: compiler.py builds every module that mentions a barrier with fibers
        abort();
    }
#if HC_CHECK
    if (!r->site_file) {
        r->site_file = file;
        r->site_line = line;
        r->site_col = col;
        r->site_thread = r->cur;
    } else if (!r->other_file && (line != r->site_line || col != r->site_col || strcmp(file, r->site_file) != 0)) {
        r->other_file = file;
        r->other_line = line;
        r->other_col = col;
        r->other_thread = r->cur;
    }
    chk.landing = nullptr;
#else
    (void)file;
    (void)line;
    (void)col;
#endif
    r->count += predicate != 0;
    r->participants += 1;
    swapcontext(&r->pool->ctx[r->cur], &r->sched);
    // Other threads of the block wrote shared memory meanwhile: forget cached values.
    __asm__ __volatile__("" ::: "memory");
#if HC_CHECK
    chk.landing = r->pool->landing[r->cur];
#endif
    if (participants) *participants = r->participants_result;
    return r->count_result;
}

// ---- the grid -------------------------------------------------------------

template <class F>
struct grid_job {
    hc_launch* L;
    F* body;
    unsigned long long next;
    unsigned long long total;
};

template <class F>
static void body_trampoline(void* job) {
    grid_job<F>* J = (grid_job<F>*)job;
    (*J->body)(J->L->args);
}

template <class F>
static void* grid_worker(void* arg) {
    grid_job<F>* J = (grid_job<F>*)arg;
    hc_launch* L = J->L;
    blockDim = dim3(L->block[0], L->block[1], L->block[2]);
    gridDim = dim3(L->grid[0], L->grid[1], L->grid[2]);
    const unsigned long long gx = L->grid[0], gxy = gx * L->grid[1];
    fiber_pool* pool = HC_USES_BARRIER ? pool_acquire() : nullptr;
    for (;;) {
        const unsigned long long b = __atomic_fetch_add(&J->next, 1ULL, __ATOMIC_RELAXED);
        if (b >= J->total || __atomic_load_n(&L->status, __ATOMIC_RELAXED)) break;
        blockIdx.x = (unsigned int)(b % gx);
        blockIdx.y = (unsigned int)((b / gx) % L->grid[1]);
        blockIdx.z = (unsigned int)(b / gxy);
        if (HC_USES_BARRIER) {
            if (!run_block_fibers(L, pool, body_trampoline<F>, J)) {
                fail(L, "out of memory for fiber stacks");
                break;
            }
        } else {
            try {
                for (unsigned int z = 0; z < L->block[2]; ++z) {
                    for (unsigned int y = 0; y < L->block[1]; ++y) {
                        for (unsigned int x = 0; x < L->block[0]; ++x) {
                            threadIdx.x = x;
                            threadIdx.y = y;
                            threadIdx.z = z;
                            (*J->body)(L->args);
                        }
                    }
                }
            } catch (trap_error&) {
                fail(L, "__trap()");
            } catch (...) {
                fail(L, "C++ exception");
            }
        }
    }
    pool_release(pool);
    return nullptr;
}

#if HC_CHECK
// One CUDA thread of a module without barriers, with a landing for its faults.
template <class F>
__attribute__((noinline)) static bool run_thread_checked(hc_launch* L, F* body) {
    sigjmp_buf landing;
    chk.landing = &landing;
    if (sigsetjmp(landing, 0) != 0) {
        chk.landing = nullptr;
        check_report_signal(L);
        return false;
    }
    try {
        (*body)(L->args);
    } catch (trap_error&) {
        fail(L, "__trap()");
    } catch (...) {
        fail(L, "C++ exception");
    }
    chk.landing = nullptr;
    return L->status == 0;
}

// The check build's launch: the calling host thread runs every block, in the
// record's block order; each block's threads in its thread order.
template <class F>
static int check_launch(hc_launch* L, F& body) {
    grid_job<F> J;
    J.L = L;
    J.body = &body;
    J.total = (unsigned long long)L->grid[0] * L->grid[1] * L->grid[2];
    blockDim = dim3(L->block[0], L->block[1], L->block[2]);
    gridDim = dim3(L->grid[0], L->grid[1], L->grid[2]);
    const unsigned long long gx = L->grid[0], gxy = gx * L->grid[1];
    const unsigned int bx = L->block[0], by = L->block[1];
    const unsigned int n = bx * by * L->block[2];
    // the block order: a permutation of the grid (an affine one when the grid is too big to list)
    unsigned int* blocks = nullptr;
    unsigned long long stride = 1, offset = 0;
    rng g{L->seed};
    if (L->block_order == HC_ORDER_RANDOM && J.total <= (1ULL << 22)) {
        blocks = (unsigned int*)malloc(sizeof(unsigned int) * J.total);
        if (!blocks) {
            fail(L, "out of memory for the block order");
            return L->status;
        }
        make_order(blocks, (unsigned int)J.total, HC_ORDER_RANDOM, g);
    } else if (L->block_order == HC_ORDER_RANDOM) {
        do stride = 1 + g.next() % (J.total - 1);
        while (gcd(stride, J.total) != 1);
        offset = g.next() % J.total;
    }
    fiber_pool* pool = HC_USES_BARRIER ? pool_acquire() : nullptr;
    unsigned int order[1024];
    check_begin(L);
    place_shared(L->shared_layout);
    for (unsigned long long k = 0; k < J.total && !L->status; ++k) {
        unsigned long long b = k;
        if (L->block_order == HC_ORDER_REVERSE) b = J.total - 1 - k;
        else if (blocks) b = blocks[k];
        else if (L->block_order == HC_ORDER_RANDOM) b = (k * stride + offset) % J.total;
        blockIdx.x = (unsigned int)(b % gx);
        blockIdx.y = (unsigned int)((b / gx) % L->grid[1]);
        blockIdx.z = (unsigned int)(b / gxy);
        poison_shared(L->shared_poison);
        if (HC_USES_BARRIER) {
            if (!run_block_fibers(L, pool, body_trampoline<F>, &J)) {
                fail(L, "out of memory for fiber stacks");
                break;
            }
            continue;
        }
        rng tg{L->seed ^ (0x632BE59BD9B4E019ULL * (1 + b))};
        make_order(order, n, L->thread_order, tg);
        for (unsigned int t = 0; t < n; ++t) {
            set_thread_index(order[t], bx, by);
            if (!run_thread_checked(L, &body)) break;
        }
    }
    check_end();
    pool_release(pool);
    free(blocks);
    return L->status;
}
#endif  // HC_CHECK

// Runs the whole grid on up to host_threads host threads (the caller is one of them).
template <class F>
static int launch(hc_launch* L, int host_threads, F body) {
    L->status = 0;
    L->message[0] = 0;
    L->fault_kind = HC_FAULT_NONE;
    L->fault_write = -1;
    L->fault_addr = 0;
#if HC_CHECK
    (void)host_threads;
    return check_launch(L, body);
#else
    grid_job<F> J;
    J.L = L;
    J.body = &body;
    J.next = 0;
    J.total = (unsigned long long)L->grid[0] * L->grid[1] * L->grid[2];
    unsigned long long workers = host_threads < 1 ? 1 : (unsigned long long)host_threads;
    if (workers > J.total) workers = J.total;
    // A small grid is not worth waking threads for.
    const unsigned long long threads_per_block = (unsigned long long)L->block[0] * L->block[1] * L->block[2];
    if (J.total * threads_per_block < 4096) workers = 1;
    pthread_t tids[64];
    if (workers > 64) workers = 64;
    unsigned long long started = 0;
    for (; started + 1 < workers; ++started) {
        if (pthread_create(&tids[started], nullptr, grid_worker<F>, &J) != 0) break;
    }
    grid_worker<F>(&J);
    for (unsigned long long i = 0; i < started; ++i) pthread_join(tids[i], nullptr);
    return L->status;
#endif
}

// ---- argument passing -----------------------------------------------------

template <class... P, size_t... I>
static inline void invoke_impl(void (*k)(P...), void* const* a, std::index_sequence<I...>) {
    k(*static_cast<typename std::remove_cv<P>::type*>(a[I])...);
}

template <class... P>
static inline void invoke(void (*k)(P...), void* const* a) {
    invoke_impl(k, a, std::index_sequence_for<P...>{});
}

template <class T>
static void describe(char* out, size_t cap, size_t& used) {
    const char kind = std::is_pointer<T>::value         ? 'p'
                      : std::is_floating_point<T>::value ? 'f'
                      : std::is_integral<T>::value       ? (std::is_signed<T>::value ? 'i' : 'u')
                                                         : 's';
    if (used < cap) used += (size_t)snprintf(out + used, cap - used, "%s%c%zu", used ? "," : "", kind, sizeof(T));
}

// Writes "p8,i4,f4" (one kind+size entry per kernel parameter) for compiler.py
// to check arguments against; returns the length it needs.
template <class... P>
static int signature(void (*)(P...), char* out, int cap) {
    size_t used = 0;
    if (cap > 0) out[0] = 0;
    int unused[] = {0, (describe<typename std::remove_cv<P>::type>(out, (size_t)cap, used), 0)...};
    (void)unused;
    return (int)used;
}

}  // namespace hc

// ---- builtins -------------------------------------------------------------

// Each barrier knows its call site (for the check build's synccheck report); the
// check build's source has hc_syncthreads*<column>() for __syncthreads*() (compiler.py).
#define HC_SITE const char* hc_file = __builtin_FILE(), int hc_line = __builtin_LINE()
static inline void __syncthreads(HC_SITE) { hc::barrier(1, nullptr, hc_file, hc_line, 0); }
static inline int __syncthreads_count(int p, HC_SITE) { return (int)hc::barrier(p, nullptr, hc_file, hc_line, 0); }
static inline int __syncthreads_and(int p, HC_SITE) {
    unsigned int n;
    return hc::barrier(p, &n, hc_file, hc_line, 0) == n;
}
static inline int __syncthreads_or(int p, HC_SITE) { return hc::barrier(p, nullptr, hc_file, hc_line, 0) != 0; }
#if HC_CHECK
template <int COL>
static inline void hc_syncthreads(HC_SITE) { hc::barrier(1, nullptr, hc_file, hc_line, COL); }
template <int COL>
static inline int hc_syncthreads_count(int p, HC_SITE) { return (int)hc::barrier(p, nullptr, hc_file, hc_line, COL); }
template <int COL>
static inline int hc_syncthreads_and(int p, HC_SITE) {
    unsigned int n;
    return hc::barrier(p, &n, hc_file, hc_line, COL) == n;
}
template <int COL>
static inline int hc_syncthreads_or(int p, HC_SITE) { return hc::barrier(p, nullptr, hc_file, hc_line, COL) != 0; }
#endif
#undef HC_SITE
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] static inline void __trap() { throw hc::trap_error(); }

template <class T>
static inline T __ldg(const T* p) { return *p; }

#define HC_MINMAX(T)                                          \
    static inline T min(T a, T b) { return b < a ? b : a; } \
    static inline T max(T a, T b) { return a < b ? b : a; }
HC_MINMAX(int)
HC_MINMAX(unsigned int)
HC_MINMAX(long)
HC_MINMAX(unsigned long)
HC_MINMAX(long long)
HC_MINMAX(unsigned long long)
#undef HC_MINMAX
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline unsigned int umin(unsigned int a, unsigned int b) { return b < a ? b : a; }
static inline unsigned int umax(unsigned int a, unsigned int b) { return a < b ? b : a; }

// Fast-math intrinsics: the host uses the accurate function (the GPU's is within a few ulp).
// (glibc declares functions with these names; macros keep ours.)
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(x, y) powf(x, y)
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }  // ties to even, as the GPU
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline unsigned int __float2uint_rn(float x) { return (unsigned int)nearbyintf(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline int __mul24(int a, int b) { return a * b; }
static inline unsigned int __umul24(unsigned int a, unsigned int b) { return a * b; }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }

// Atomics: blocks run in parallel on host threads, so these must be real atomics.
#define HC_ATOMIC_INT(T)                                                                              \
    static inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }     \
    static inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }     \
    static inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }   \
    static inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }     \
    static inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }       \
    static inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }     \
    static inline T atomicCAS(T* p, T cmp, T v) {                                                    \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);          \
        return cmp;                                                                                  \
    }                                                                                                \
    static inline T atomicMin(T* p, T v) {                                                           \
        T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                                \
        while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) { \
        }                                                                                            \
        return old;                                                                                  \
    }                                                                                                \
    static inline T atomicMax(T* p, T v) {                                                           \
        T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                                \
        while (v > old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) { \
        }                                                                                            \
        return old;                                                                                  \
    }
HC_ATOMIC_INT(int)
HC_ATOMIC_INT(unsigned int)
HC_ATOMIC_INT(unsigned long long)
#undef HC_ATOMIC_INT

static inline float atomicAdd(float* p, float v) {
    float old = *p;
    uint32_t expected, desired;
    for (;;) {
        memcpy(&expected, &old, 4);
        float next = old + v;
        memcpy(&desired, &next, 4);
        if (__atomic_compare_exchange_n((uint32_t*)p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return old;
        memcpy(&old, &expected, 4);
    }
}

#if HC_CHECK
// ---- the check build's -fsanitize=bounds,object-size handlers ---------------
//
// The compiler calls these (the _abort forms: -fno-sanitize-recover) where an
// array index, or an access through a pointer into an object of known size, is
// out of bounds.  No sanitizer runtime is linked: the launch ends as a fault does.
namespace hc {
namespace ubsan {
struct source_location {
    const char* file;
    unsigned int line;
    unsigned int column;
};
struct type_descriptor {
    unsigned short kind;
    unsigned short info;  // integers: bit 0 signed, the rest log2 of the width in bits
    char name[1];
};
struct out_of_bounds_data {
    source_location loc;
    const type_descriptor* array_type;
    const type_descriptor* index_type;
};
struct type_mismatch_data {
    source_location loc;
    const type_descriptor* type;
    unsigned char log_alignment;
    unsigned char type_check_kind;
};

static long long integer_value(const type_descriptor* t, void* value) {
    const unsigned int bits = 1u << (t->info >> 1);
    unsigned long long v = (unsigned long long)(uintptr_t)value;
    if (bits < 64) {
        v &= (1ULL << bits) - 1;
        if ((t->info & 1) && (v >> (bits - 1))) v |= ~0ULL << bits;
    }
    return (long long)v;
}

static const char* access_kind(unsigned char k) {
    static const char* const names[] = {"load of", "store to", "reference binding to", "member access within",
                                        "member call on", "constructor call on"};
    return k < sizeof names / sizeof names[0] ? names[k] : "access to";
}
}  // namespace ubsan
}  // namespace hc

extern "C" [[noreturn]] void __ubsan_handle_out_of_bounds_abort(hc::ubsan::out_of_bounds_data* d, void* index) {
    char what[400];
    snprintf(what, sizeof what, "index %lld out of bounds for type %s at %s:%u:%u",
             hc::ubsan::integer_value(d->index_type, index), d->array_type->name, d->loc.file, d->loc.line,
             d->loc.column);
    hc::check_abort(HC_FAULT_INDEX, what);
}

extern "C" [[noreturn]] void __ubsan_handle_type_mismatch_v1_abort(hc::ubsan::type_mismatch_data* d, void* pointer) {
    char what[400];
    snprintf(what, sizeof what,
             "%s address 0x%llx past the end of the array it points into (type %s) at %s:%u:%u",
             hc::ubsan::access_kind(d->type_check_kind), (unsigned long long)(uintptr_t)pointer, d->type->name,
             d->loc.file, d->loc.line, d->loc.column);
    hc::check_abort(HC_FAULT_OBJECT, what);
}
#endif  // HC_CHECK

#endif  // HOSTCUDA_SCAN
