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

#define HC_EXPORT extern "C" __attribute__((visibility("default")))

// ---- the language surface -------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
// A __shared__ variable lives as long as the block and is shared by its threads:
// all of a block's CUDA threads run on one host thread, so thread_local is that.
#define __shared__ thread_local
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
    char message[256];
};

namespace hc {

struct trap_error {};

static void fail(hc_launch* L, const char* what) {
    int expected = 0;
    if (__atomic_compare_exchange_n(&L->status, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        snprintf(L->message, sizeof L->message, "%s in block (%u,%u,%u) thread (%u,%u,%u)", what, blockIdx.x,
                 blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    }
}

// ---- fibers (only used by modules that have a barrier) --------------------

struct fiber_pool {
    unsigned int capacity = 0;
    size_t slot_bytes = 0;  // one guard page + the stack
    char* region = nullptr;
    ucontext_t* ctx = nullptr;
    unsigned char* done = nullptr;
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
    if (!ctx || !done) {
        free(ctx);
        free(done);
        munmap(region, slot * n);
        return false;
    }
    if (p->region) munmap(p->region, p->slot_bytes * p->capacity);
    free(p->ctx);
    free(p->done);
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
    try {
        r->body(r->body_arg);
    } catch (trap_error&) {
        fail(r->launch, "__trap()");
        r->trapped = 1;
    } catch (...) {
        fail(r->launch, "C++ exception");
        r->trapped = 1;
    }
    r->pool->done[me] = 1;
    // returning resumes uc_link, the scheduler
}

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
    unsigned int alive = n;
    while (alive) {
        r.count = r.participants = 0;
        for (unsigned int i = 0; i < n; ++i) {
            if (pool->done[i]) continue;
            threadIdx.x = i % bx;
            threadIdx.y = (i / bx) % by;
            threadIdx.z = i / (bx * by);
            r.cur = i;
            swapcontext(&r.sched, &pool->ctx[i]);
            if (pool->done[i]) --alive;
        }
        // every live thread is now at the same barrier: publish the phase's votes
        r.count_result = r.count;
        r.participants_result = r.participants;
    }
    tls_run = saved;
    return true;
}

static unsigned int barrier(int predicate, unsigned int* participants) {
    block_run* r = tls_run;
    if (!r) {
        // cannot happen: compiler.py builds every module that mentions a barrier with fibers
        abort();
    }
    r->count += predicate != 0;
    r->participants += 1;
    swapcontext(&r->pool->ctx[r->cur], &r->sched);
    // Other threads of the block wrote shared memory meanwhile: forget cached values.
    __asm__ __volatile__("" ::: "memory");
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

// Runs the whole grid on up to host_threads host threads (the caller is one of them).
template <class F>
static int launch(hc_launch* L, int host_threads, F body) {
    grid_job<F> J;
    J.L = L;
    J.body = &body;
    J.next = 0;
    J.total = (unsigned long long)L->grid[0] * L->grid[1] * L->grid[2];
    L->status = 0;
    L->message[0] = 0;
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

static inline void __syncthreads() { hc::barrier(1, nullptr); }
static inline int __syncthreads_count(int p) { return (int)hc::barrier(p, nullptr); }
static inline int __syncthreads_and(int p) {
    unsigned int n;
    return hc::barrier(p, &n) == n;
}
static inline int __syncthreads_or(int p) { return hc::barrier(p, nullptr) != 0; }
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

#endif  // HOSTCUDA_SCAN
